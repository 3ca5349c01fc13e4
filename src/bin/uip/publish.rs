//! `uip publish`: one event from arguments, or newline-delimited JSON events
//! from a file or stdin, sent in batches of up to 100. Every event without an
//! `id` gets one before the first try, so a retried batch is never stored twice.

use std::io::Read;
use std::time::Instant;

use rand::Rng;
use serde_json::{json, Map, Value};

use crate::http;
use crate::{token, Failure, Target};

/// Most events in one request (the gateway's limit).
pub const MAX_BATCH: usize = 100;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// NDJSON file of events (`{"channel","type","data","id"?,"timestamp"?}` a
    /// line); `-` reads stdin. Without it, one event from --channel/--type/--data.
    #[arg(long, short)]
    pub file: Option<String>,
    /// The channel of the one event.
    #[arg(long, requires = "kind")]
    pub channel: Option<String>,
    /// The event type of the one event.
    #[arg(long = "type", id = "kind")]
    pub kind: Option<String>,
    /// The event data (JSON) of the one event.
    #[arg(long, default_value = "{}")]
    pub data: String,
    /// The event id of the one event.
    #[arg(long)]
    pub id: Option<String>,
    /// Events per request, 1 to 100.
    #[arg(long, default_value_t = MAX_BATCH)]
    pub batch: usize,
}

/// One event to publish and the input line it came from.
pub struct Line {
    pub number: usize,
    pub event: Map<String, Value>,
}

/// Parses NDJSON: every non-blank line a JSON object. Fails on the first
/// malformed line, naming it, before anything is sent.
pub fn parse_lines(text: &str) -> Result<Vec<Line>, Failure> {
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let number = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(event)) => lines.push(Line { number, event }),
            Ok(_) => {
                return Err(Failure::Usage(format!(
                    "line {number}: an event must be a JSON object; nothing was published"
                )))
            }
            Err(e) => {
                return Err(Failure::Usage(format!(
                    "line {number}: not JSON ({e}); nothing was published"
                )))
            }
        }
    }
    Ok(lines)
}

/// Gives every event without an `id` one, unique to this run.
pub fn assign_ids(lines: &mut [Line]) {
    let run: u64 = rand::thread_rng().gen();
    for line in lines {
        line.event
            .entry("id")
            .or_insert_with(|| Value::from(format!("uip-{run:016x}-{}", line.number)));
    }
}

/// What a run of publishes came to.
#[derive(Debug, Default)]
pub struct Summary {
    pub events: usize,
    pub duplicates: usize,
    pub requests: usize,
    pub retries: u32,
}

/// Publishes `lines` in batches of `batch`; a refused batch fails naming the
/// line of the event the gateway pointed at.
pub async fn send_all(
    base: &str,
    token: &str,
    lines: &[Line],
    batch: usize,
    summary: &mut Summary,
) -> Result<(), Failure> {
    for chunk in lines.chunks(batch.clamp(1, MAX_BATCH)) {
        let events: Vec<&Map<String, Value>> = chunk.iter().map(|l| &l.event).collect();
        let body = json!({ "events": events });
        let done = http::publish(base, token, &body)
            .await
            .map_err(|f| match f {
                Failure::Usage(m) => Failure::Usage(locate(&m, chunk)),
                other => other,
            })?;
        summary.requests += 1;
        summary.retries += done.retries;
        summary.events += done.results.len();
        summary.duplicates += done
            .results
            .iter()
            .filter(|r| r["duplicate"] == true)
            .count();
    }
    Ok(())
}

/// Names the input line of a batch error's `details.index`.
fn locate(message: &str, chunk: &[Line]) -> String {
    let index = message
        .split("\"index\":")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<usize>().ok());
    match index.and_then(|i| chunk.get(i)) {
        Some(line) => format!("line {}: {message}", line.number),
        None => message.to_owned(),
    }
}

pub async fn run(args: &Args) -> Result<(), Failure> {
    let base = http::base(&args.target.url)?;
    let token = token::or_minted(&args.target.token, "publish")?;
    let mut lines = match (&args.file, &args.channel, &args.kind) {
        (Some(path), None, None) => {
            let text = if path == "-" {
                let mut t = String::new();
                std::io::stdin()
                    .read_to_string(&mut t)
                    .map_err(|e| Failure::Usage(format!("cannot read stdin: {e}")))?;
                t
            } else {
                std::fs::read_to_string(path)
                    .map_err(|e| Failure::Usage(format!("cannot read {path}: {e}")))?
            };
            parse_lines(&text)?
        }
        (None, Some(channel), Some(kind)) => {
            let data: Value = serde_json::from_str(&args.data)
                .map_err(|e| Failure::Usage(format!("--data is not JSON: {e}")))?;
            let mut event = Map::new();
            event.insert("channel".into(), channel.clone().into());
            event.insert("type".into(), kind.clone().into());
            event.insert("data".into(), data);
            if let Some(id) = &args.id {
                event.insert("id".into(), id.clone().into());
            }
            vec![Line { number: 1, event }]
        }
        _ => {
            return Err(Failure::Usage(
                "give --file (or -f - for stdin), or --channel and --type with --data".into(),
            ))
        }
    };
    assign_ids(&mut lines);
    let started = Instant::now();
    let mut summary = Summary::default();
    let outcome = send_all(&base, &token, &lines, args.batch, &mut summary).await;
    eprintln!(
        "uip: published {} events ({} duplicates) in {} requests, {} retries, {:.1} s",
        summary.events,
        summary.duplicates,
        summary.requests,
        summary.retries,
        started.elapsed().as_secs_f64()
    );
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_line_is_named_and_stops_everything() {
        let text = "{\"channel\":\"a\"}\n\n{broken\n";
        match parse_lines(text) {
            Err(Failure::Usage(m)) => assert!(m.starts_with("line 3:"), "{m}"),
            _ => panic!("line 3 is malformed"),
        }
        match parse_lines("[1]") {
            Err(Failure::Usage(m)) => assert!(m.starts_with("line 1:"), "{m}"),
            _ => panic!("an array is no event"),
        }
    }

    #[test]
    fn ids_are_kept_or_given_once() {
        let mut lines = parse_lines("{\"id\":\"mine\"}\n{}\n{}").unwrap();
        assign_ids(&mut lines);
        assert_eq!(lines[0].event["id"], "mine");
        assert_ne!(lines[1].event["id"], lines[2].event["id"]);
        let before = lines[1].event["id"].clone();
        assign_ids(&mut lines);
        assert_eq!(lines[1].event["id"], before, "a retry keeps its ids");
    }

    #[test]
    fn a_batch_error_names_the_line_of_its_index() {
        let lines = parse_lines("{}\n\n{}\n{}").unwrap();
        let m = locate(
            r#"the gateway answered 400 INVALID_MESSAGE: bad {"index":1}"#,
            &lines,
        );
        assert!(m.starts_with("line 3:"), "{m}");
    }
}
