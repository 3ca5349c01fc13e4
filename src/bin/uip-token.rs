//! Mints an HS256 token for local development and scripts.
//!
//! `uip-token [--sub S] [--scope "subscribe publish"] [--channels a,b:*] [--ttl SECONDS]`
//! signs with `JWT_SECRET` from the environment, else from `.dev.vars`.

use std::time::{SystemTime, UNIX_EPOCH};

use uip_realtime::core::auth::{mint, TokenSpec};

fn secret() -> Result<String, String> {
    if let Ok(s) = std::env::var("JWT_SECRET") {
        if !s.is_empty() {
            return Ok(s);
        }
    }
    let vars = std::fs::read_to_string(".dev.vars").map_err(|_| {
        "JWT_SECRET is not set and .dev.vars is missing (run `npm run dev` once)".to_owned()
    })?;
    vars.lines()
        .filter_map(|l| l.trim().strip_prefix("JWT_SECRET="))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .next()
        .ok_or_else(|| ".dev.vars has no JWT_SECRET".to_owned())
}

fn run() -> Result<String, String> {
    let mut spec = TokenSpec {
        sub: Some("dev-user".into()),
        ..TokenSpec::default()
    };
    let mut ttl: i64 = 24 * 3600;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--sub" => spec.sub = Some(value()?),
            "--scope" => spec.scope = Some(value()?),
            "--channels" => spec.channels = Some(value()?.split(',').map(str::to_owned).collect()),
            "--ttl" => {
                ttl = value()?
                    .parse()
                    .map_err(|_| "--ttl takes seconds".to_owned())?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs() as i64;
    spec.exp = Some(now + ttl);
    Ok(mint(&spec, secret()?.as_bytes()))
}

fn main() {
    match run() {
        Ok(token) => println!("{token}"),
        Err(e) => {
            eprintln!("uip-token: {e}");
            std::process::exit(2);
        }
    }
}
