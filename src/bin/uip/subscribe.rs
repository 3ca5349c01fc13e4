//! `uip subscribe`: follows one channel and prints its events as NDJSON, one
//! per line, each once and in `seq` order; after a dropped connection it
//! reconnects and resumes with `since` = the last `seq` printed.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::time::{sleep, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::http;
use crate::{token, Failure, Target};

/// How often the client pings (the SPEC's clients ping every 25–30 s).
const PING_EVERY: Duration = Duration::from_secs(25);
/// Reconnect backoff: first wait and cap.
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// Failed connection attempts in a row before giving up.
const MAX_FAILURES: u32 = 10;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// The channel to follow.
    #[arg(long)]
    pub channel: String,
    /// Filters (JSON object), e.g. '{"severity":["severe"]}'.
    #[arg(long)]
    pub filters: Option<String>,
    /// Connect to /ws/{channel} instead of the multiplexed /ws.
    #[arg(long)]
    pub direct: bool,
    /// Start after this `seq` (replays the retained events after it).
    #[arg(long)]
    pub since: Option<u64>,
    /// Also print the snapshot's events on (re)subscribing.
    #[arg(long)]
    pub snapshot: bool,
    /// Exit after printing this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Exit after this many seconds.
    #[arg(long)]
    pub duration: Option<u64>,
}

/// Why one connection ended.
enum Ended {
    /// Enough events, or time is up.
    Done,
    /// Dropped: connect again and resume.
    Dropped(String),
}

/// What the follower has printed so far.
struct Progress {
    last: Option<u64>,
    printed: u64,
}

/// Error codes after which reconnecting cannot help.
fn is_terminal(code: &str) -> bool {
    matches!(
        code,
        "AUTH_FAILED"
            | "AUTH_EXPIRED"
            | "FORBIDDEN"
            | "CHANNEL_NOT_FOUND"
            | "SUBSCRIPTION_FAILED"
            | "MAX_SUBSCRIPTIONS"
            | "INVALID_MESSAGE"
    )
}

fn refusal(m: &Value) -> Failure {
    let code = m["error"]["code"].as_str().unwrap_or("ERROR");
    let text = format!(
        "{code}: {}",
        m["error"]["message"].as_str().unwrap_or("refused")
    );
    match code {
        "AUTH_FAILED" | "AUTH_EXPIRED" | "FORBIDDEN" => {
            Failure::Rejected(format!("the gateway refused the token ({text})"))
        }
        _ => Failure::Usage(format!("the gateway refused the subscription ({text})")),
    }
}

pub async fn run(args: &Args) -> Result<(), Failure> {
    let base = http::base(&args.target.url)?;
    let token = token::or_minted(&args.target.token, "subscribe")?;
    let filters: Value = match &args.filters {
        Some(f) => serde_json::from_str(f)
            .map_err(|e| Failure::Usage(format!("--filters is not JSON: {e}")))?,
        None => json!({}),
    };
    let until = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs(s));
    let mut progress = Progress {
        last: args.since,
        printed: 0,
    };
    let mut failures = 0;
    let mut backoff = BACKOFF_START;
    let mut ever_connected = false;
    loop {
        let path = if args.direct {
            let since = progress
                .last
                .map(|s| format!("&since={s}"))
                .unwrap_or_default();
            format!("/ws/{}?token={token}{since}", args.channel)
        } else {
            format!("/ws?token={token}")
        };
        let url = http::ws_url(&base, &path);
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((ws, _)) => {
                ever_connected = true;
                failures = 0;
                backoff = BACKOFF_START;
                match follow(ws, args, &filters, &mut progress, until).await? {
                    Ended::Done => return Ok(()),
                    Ended::Dropped(why) => eprintln!("uip: connection lost ({why}); resuming"),
                }
            }
            Err(e) if !ever_connected && failures == 0 => {
                return Err(Failure::Gateway(format!(
                    "cannot connect to {}: {e}",
                    http::ws_url(&base, if args.direct { "/ws/…" } else { "/ws" })
                )))
            }
            Err(e) => {
                failures += 1;
                if failures >= MAX_FAILURES {
                    return Err(Failure::Gateway(format!(
                        "gave up after {MAX_FAILURES} failed reconnects: {e}"
                    )));
                }
            }
        }
        if until.is_some_and(|u| Instant::now() >= u) {
            return Ok(());
        }
        sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_CAP);
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads one connection until it drops, printing new events.
async fn follow(
    mut ws: Socket,
    args: &Args,
    filters: &Value,
    progress: &mut Progress,
    until: Option<Instant>,
) -> Result<Ended, Failure> {
    if !args.direct {
        let subscribe = json!({"type": "subscribe", "channel": args.channel,
                               "filters": filters, "since": progress.last});
        if let Err(e) = ws.send(Message::text(subscribe.to_string())).await {
            return Ok(Ended::Dropped(e.to_string()));
        }
    } else if !filters.as_object().is_some_and(|f| f.is_empty()) {
        let subscribe = json!({"type": "subscribe", "channel": args.channel, "filters": filters});
        if let Err(e) = ws.send(Message::text(subscribe.to_string())).await {
            return Ok(Ended::Dropped(e.to_string()));
        }
    }
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    let deadline = until.unwrap_or_else(|| Instant::now() + Duration::from_secs(100 * 365 * 86400));
    loop {
        let frame = tokio::select! {
            f = ws.next() => f,
            _ = ping.tick() => {
                if ws.send(Message::text(r#"{"type":"ping"}"#)).await.is_err() {
                    return Ok(Ended::Dropped("ping failed".into()));
                }
                continue;
            }
            _ = tokio::time::sleep_until(deadline) => return Ok(Ended::Done),
        };
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(Some(c)))) => {
                let code = u16::from(c.code);
                return match code {
                    4001 | 4003 => Err(Failure::Rejected(format!(
                        "the gateway closed the socket ({code} {})",
                        c.reason
                    ))),
                    4004 => Err(Failure::Usage(format!(
                        "the gateway closed the socket ({code} {})",
                        c.reason
                    ))),
                    _ => Ok(Ended::Dropped(format!("closed {code} {}", c.reason))),
                };
            }
            Some(Ok(Message::Close(None))) | None => return Ok(Ended::Dropped("closed".into())),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Ok(Ended::Dropped(e.to_string())),
        };
        let Ok(m) = serde_json::from_str::<Value>(&text) else {
            eprintln!("uip: skipped a frame that is not JSON");
            continue;
        };
        match m["type"].as_str().unwrap_or("") {
            "auth.failed" => return Err(refusal(&m)),
            "error" if m["error"]["code"].as_str().is_some_and(is_terminal) => {
                return Err(refusal(&m))
            }
            "error" => eprintln!("uip: {}", m["error"]),
            "subscribed" => eprintln!(
                "uip: subscribed to {} at seq {}{}",
                m["data"]["channel"].as_str().unwrap_or(""),
                m["data"]["seq"],
                match m["data"]["recovered"].as_bool() {
                    Some(true) => " (resumed)",
                    Some(false) => " (could not resume: the gap is gone from history)",
                    None => "",
                }
            ),
            "snapshot" if args.snapshot => {
                for e in m["data"]["events"].as_array().into_iter().flatten() {
                    println!("{e}");
                }
            }
            "batch" => {
                for e in m["events"].as_array().into_iter().flatten() {
                    if print_event(e, &args.channel, progress, args.count) {
                        return Ok(Ended::Done);
                    }
                }
            }
            _ => {
                if print_event(&m, &args.channel, progress, args.count) {
                    return Ok(Ended::Done);
                }
            }
        }
    }
}

/// Prints a channel event past the last `seq`; `true` once `count` is reached.
fn print_event(m: &Value, channel: &str, progress: &mut Progress, count: Option<u64>) -> bool {
    let Some(seq) = m["seq"].as_u64() else {
        return false;
    };
    if m["channel"] != channel || progress.last.is_some_and(|l| seq <= l) {
        return false;
    }
    println!("{m}");
    progress.last = Some(seq);
    progress.printed += 1;
    count.is_some_and(|c| progress.printed >= c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_print_once_in_seq_order() {
        let mut p = Progress {
            last: Some(2),
            printed: 0,
        };
        let ev = |seq: u64| json!({"type": "x", "channel": "c", "seq": seq});
        assert!(!print_event(&ev(2), "c", &mut p, Some(2)), "already had 2");
        assert!(!print_event(&ev(3), "c", &mut p, Some(2)));
        assert!(!print_event(&json!({"type": "pong"}), "c", &mut p, Some(2)));
        assert!(!print_event(&ev(9), "other", &mut p, Some(2)));
        assert!(print_event(&ev(4), "c", &mut p, Some(2)), "two printed");
        assert_eq!(p.last, Some(4));
    }
}
