//! `uip token`: mints HS256 tokens with the gateway's secret.

use std::time::{SystemTime, UNIX_EPOCH};

use uip_realtime::core::auth::{mint, TokenSpec};

use crate::Failure;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Who the token is for (`sub`).
    #[arg(long, default_value = "dev-user")]
    pub sub: String,
    /// Lifetime in seconds; negative mints an already expired token.
    #[arg(long, default_value_t = 24 * 3600, allow_hyphen_values = true)]
    pub ttl: i64,
    /// Channel patterns (`channels` claim), comma separated, e.g. `conversation:*,alerts`.
    #[arg(long)]
    pub channels: Option<String>,
    /// Scopes, space separated: subscribe, publish, admin.
    #[arg(long, default_value = "subscribe")]
    pub scope: String,
    /// The signing secret; else JWT_SECRET from the environment, else `.dev.vars`.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
}

/// The dev secret: JWT_SECRET of `.dev.vars` in the current directory.
fn dev_secret() -> Result<String, Failure> {
    let vars = std::fs::read_to_string(".dev.vars").map_err(|_| {
        Failure::Usage(
            "no --secret, no JWT_SECRET and no .dev.vars here (run `npm run dev` once)".into(),
        )
    })?;
    vars.lines()
        .filter_map(|l| l.trim().strip_prefix("JWT_SECRET="))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .next()
        .ok_or_else(|| Failure::Usage(".dev.vars has no JWT_SECRET".into()))
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Mints the token `args` describe.
pub fn run(args: &Args) -> Result<String, Failure> {
    let secret = match &args.secret {
        Some(s) if !s.is_empty() => s.clone(),
        _ => dev_secret()?,
    };
    let spec = TokenSpec {
        sub: Some(args.sub.clone()),
        scope: Some(args.scope.clone()),
        channels: args
            .channels
            .as_ref()
            .map(|c| c.split(',').map(|p| p.trim().to_owned()).collect()),
        exp: Some(now_s() + args.ttl),
        ..TokenSpec::default()
    };
    Ok(mint(&spec, secret.as_bytes()))
}

/// The token a command uses: the one given, else one minted from the dev
/// secret with `scope` for every channel.
pub fn or_minted(given: &Option<String>, scope: &str) -> Result<String, Failure> {
    match given {
        Some(t) => Ok(t.clone()),
        None => run(&Args {
            sub: "uip-cli".into(),
            ttl: 3600,
            channels: Some("*".into()),
            scope: scope.into(),
            secret: None,
        }),
    }
}
