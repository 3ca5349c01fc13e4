//! `uip-bench`: one benchmark run, printed as a JSON line.
//!
//! `uip-bench --base http://127.0.0.1:8787 --route multiplexed|direct --channel C
//!  --sockets N --events M [--rate R] [--publish-batch B] [--client-batch]
//!  [--token T] [--publish-token P] [--server-pids 1,2] [--phase-timeout-s S]`

use std::time::Duration;

use uip_bench::{run, Route, RunConfig};

fn parse() -> Result<RunConfig, String> {
    let mut cfg = RunConfig {
        base: "http://127.0.0.1:8787".into(),
        route: Route::Multiplexed,
        channel: "conversation:bench".into(),
        sockets: 100,
        events: 100,
        rate: 0,
        publish_batch: 1,
        client_batch: false,
        token: String::new(),
        publish_token: String::new(),
        server_pids: Vec::new(),
        phase_timeout: Duration::from_secs(60),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--client-batch" {
            cfg.client_batch = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag} takes a number"))
        };
        match flag.as_str() {
            "--base" => cfg.base = value,
            "--route" => {
                cfg.route = match value.as_str() {
                    "multiplexed" => Route::Multiplexed,
                    "direct" => Route::Direct,
                    _ => return Err("--route is multiplexed or direct".into()),
                }
            }
            "--channel" => cfg.channel = value,
            "--sockets" => cfg.sockets = num(&value)? as usize,
            "--events" => cfg.events = num(&value)?,
            "--rate" => cfg.rate = num(&value)?,
            "--publish-batch" => cfg.publish_batch = num(&value)? as usize,
            "--token" => cfg.token = value,
            "--publish-token" => cfg.publish_token = value,
            "--server-pids" => {
                cfg.server_pids = value
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| p.parse().unwrap_or(0))
                    .collect()
            }
            "--phase-timeout-s" => cfg.phase_timeout = Duration::from_secs(num(&value)?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(cfg)
}

#[tokio::main]
async fn main() {
    let cfg = match parse() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("uip-bench: {e}");
            std::process::exit(2);
        }
    };
    match run(cfg).await {
        Ok(report) => println!("{}", serde_json::to_string(&report).unwrap_or_default()),
        Err(e) => {
            eprintln!("uip-bench: {e}");
            std::process::exit(1);
        }
    }
}
