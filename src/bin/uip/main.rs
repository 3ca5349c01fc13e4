//! `uip`: the gateway's command line for producers and operators. Mint
//! tokens, publish events (retried with the same ids, so never twice), follow
//! a channel as NDJSON, simulate the traffic platform's feeds, and read stats.

mod http;
mod publish;
mod simulate;
mod stats;
mod subscribe;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A failure the user can act on: one line, and the exit code it maps to.
#[derive(Debug)]
pub enum Failure {
    /// Bad arguments or input (exit 2).
    Usage(String),
    /// The gateway refused the token (exit 3).
    Rejected(String),
    /// The gateway could not be reached or answered badly (exit 1).
    Gateway(String),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Gateway(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Rejected(_) => 3,
        }
    }

    fn message(&self) -> &str {
        match self {
            Failure::Usage(m) | Failure::Rejected(m) | Failure::Gateway(m) => m,
        }
    }
}

/// Where the gateway is and which token to use.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The gateway's base URL (http or https; sockets use ws/wss).
    #[arg(long, env = "UIP_URL", default_value = "http://127.0.0.1:8787")]
    pub url: String,
    /// A token; without one, a token is minted from `.dev.vars` for the
    /// command (`uip token --help`).
    #[arg(long, env = "UIP_TOKEN")]
    pub token: Option<String>,
}

#[derive(Parser)]
#[command(
    name = "uip",
    version,
    about = "Command line for the uip-realtime gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mint an HS256 token (from `.dev.vars`' JWT_SECRET or --secret).
    Token(token::Args),
    /// Publish one event, or NDJSON events from a file or stdin, in batches.
    Publish(publish::Args),
    /// Follow a channel and print its events as NDJSON, resuming after drops.
    Subscribe(subscribe::Args),
    /// Publish a realistic stream for the traffic channels.
    Simulate(simulate::Args),
    /// Print `/v1/stats` as a table.
    Stats(stats::Args),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Token(args) => token::run(&args).map(|t| println!("{t}")),
        Command::Publish(args) => publish::run(&args).await,
        Command::Subscribe(args) => subscribe::run(&args).await,
        Command::Simulate(args) => simulate::run(&args).await,
        Command::Stats(args) => stats::run(&args).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("uip: {}", f.message());
            ExitCode::from(f.exit_code())
        }
    }
}
