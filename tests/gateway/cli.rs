//! The `uip` command as a user runs it: a subprocess against `wrangler dev`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::process::Command;

use crate::common::*;

/// Longest a CLI run may take.
const RUN_WAIT: Duration = Duration::from_secs(60);

/// A gateway of its own, so the seed channels hold only the simulator's events.
fn cli_gateway() -> &'static Gateway {
    static GW: OnceLock<Gateway> = OnceLock::new();
    GW.get_or_init(|| Gateway::start(&state_dir("cli"), &[]))
}

fn uip_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_uip"));
    cmd.args(args)
        .env_remove("UIP_URL")
        .env_remove("UIP_TOKEN")
        .env_remove("JWT_SECRET")
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs `uip` to completion.
async fn uip(args: &[&str]) -> Output {
    tokio::time::timeout(RUN_WAIT, uip_command(args).output())
        .await
        .unwrap_or_else(|_| panic!("uip {args:?} did not finish"))
        .expect("run uip")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ndjson_file(name: &str, lines: &[String]) -> String {
    let path = std::env::temp_dir().join(format!("{}.ndjson", unique(name)));
    std::fs::write(&path, lines.join("\n") + "\n").expect("write NDJSON");
    path.display().to_string()
}

async fn history(gw: &Gateway, channel: &str) -> Vec<Value> {
    let (status, body) = get(
        gw,
        &format!("/v1/channels/{channel}/history?since=0&limit=1000"),
        Some(&sub_token()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_minted_token_works_and_an_expired_one_is_refused() {
    let gw = cli_gateway();
    let minted = uip(&[
        "token",
        "--secret",
        SECRET,
        "--sub",
        "cli-user",
        "--channels",
        "*",
    ])
    .await;
    assert!(minted.status.success(), "{}", stderr(&minted));
    let token = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    let mut c = Client::connect(gw, &format!("/ws?token={token}")).await;
    let ok = c.expect("auth.success").await;
    assert_eq!(ok["data"]["sub"], "cli-user");

    let expired = uip(&["token", "--secret", SECRET, "--ttl", "-120"]).await;
    let expired = String::from_utf8(expired.stdout).unwrap().trim().to_owned();
    let url = gw.http();
    let refused = uip(&[
        "subscribe",
        "--url",
        &url,
        "--token",
        &expired,
        "--channel",
        "accidents",
        "--duration",
        "10",
    ])
    .await;
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("AUTH_EXPIRED"),
        "{}",
        stderr(&refused)
    );
}

#[tokio::test]
async fn a_thousand_published_ndjson_events_reach_a_subscriber_complete_and_in_order() {
    let gw = cli_gateway();
    let channel = unique("conversation:cli-");
    let url = gw.http();
    let token = talker_token("cli");
    let mut follower = uip_command(&[
        "subscribe",
        "--url",
        &url,
        "--token",
        &token,
        "--channel",
        &channel,
        "--count",
        "1000",
        "--duration",
        "55",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn uip subscribe");
    let mut notes = tokio::io::BufReader::new(follower.stderr.take().unwrap()).lines();
    tokio::time::timeout(WAIT, async {
        while let Some(line) = notes.next_line().await.unwrap() {
            if line.contains("subscribed to") {
                return;
            }
        }
        panic!("uip subscribe ended before subscribing");
    })
    .await
    .expect("uip subscribe subscribed");

    let lines: Vec<String> = (0..1000)
        .map(|n| json!({"channel": channel, "type": "chat_message", "data": {"n": n}}).to_string())
        .collect();
    let file = ndjson_file("thousand", &lines);
    let published = uip(&["publish", "--url", &url, "--token", &token, "--file", &file]).await;
    assert!(published.status.success(), "{}", stderr(&published));
    assert!(
        stderr(&published).contains("published 1000 events (0 duplicates) in 10 requests"),
        "{}",
        stderr(&published)
    );

    let mut out = String::new();
    tokio::time::timeout(RUN_WAIT, async {
        follower
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        follower.wait().await.unwrap()
    })
    .await
    .expect("uip subscribe exits after 1000 events");
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1000);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1, "{e}");
        assert_eq!(e["data"]["n"], i as u64, "{e}");
    }
}

/// A proxy to the gateway that loses the answer to the first request it
/// forwards (the gateway stored it) and answers 503 instead: the client must
/// retry without storing anything twice.
fn answer_losing_proxy(gateway_port: u16) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listener");
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().flatten().enumerate() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut head = Vec::new();
                let mut length = 0usize;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    let l = line.trim_end().to_owned();
                    line.clear();
                    if l.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = l.split_once(':') {
                        match k.to_ascii_lowercase().as_str() {
                            "content-length" => length = v.trim().parse().unwrap_or(0),
                            "connection" => continue,
                            _ => {}
                        }
                    }
                    head.push(l);
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                let mut upstream =
                    TcpStream::connect(("127.0.0.1", gateway_port)).expect("gateway");
                let request = format!("{}\r\nconnection: close\r\n\r\n", head.join("\r\n"));
                let _ = upstream.write_all(request.as_bytes());
                let _ = upstream.write_all(&body);
                let mut answer = Vec::new();
                let _ = upstream.read_to_end(&mut answer);
                let mut conn = conn;
                if n == 0 {
                    let _ = conn.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                    );
                } else {
                    let _ = conn.write_all(&answer);
                }
            });
        }
    });
    url
}

#[tokio::test]
async fn a_retried_publish_is_stored_once() {
    let gw = cli_gateway();
    let channel = unique("conversation:retry-");
    let lines: Vec<String> = (0..5)
        .map(|n| json!({"channel": channel, "type": "chat_message", "data": {"n": n}}).to_string())
        .collect();
    let file = ndjson_file("retry", &lines);
    let proxy = answer_losing_proxy(gw.port);
    let out = uip(&[
        "publish",
        "--url",
        &proxy,
        "--token",
        &pub_token(),
        "--file",
        &file,
    ])
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("published 5 events (5 duplicates) in 1 requests, 1 retries"),
        "{}",
        stderr(&out)
    );
    let stored = history(gw, &channel).await;
    assert_eq!(stored.len(), 5, "{stored:?}");
}

/// The `data` keys of each event type in the `000_…` examples.
fn example_keys(kind: &str) -> Option<BTreeSet<&'static str>> {
    let keys: &[&str] = match kind {
        "traffic.flow" => &[
            "camera_id",
            "location",
            "intensity",
            "average_speed",
            "vehicle_types",
            "occupancy",
            "congestion_level",
        ],
        "accidents.new" => &[
            "id",
            "location",
            "severity",
            "confidence",
            "camera_id",
            "vehicles_involved",
        ],
        "accidents.update" => &["id", "status", "emergency_services"],
        "accidents.resolved" => &["id", "resolution", "duration"],
        "congestion.update" => &[
            "zone_id",
            "level",
            "severity",
            "affected_roads",
            "estimated_delay",
            "alternative_routes",
        ],
        "weather.update" => &["location", "temperature", "conditions", "precipitation"],
        "weather.alert" => &[
            "alert_type",
            "severity",
            "description",
            "affected_zones",
            "start_time",
            "end_time",
        ],
        "air-quality.update" => &[
            "location",
            "aqi",
            "category",
            "dominant_pollutant",
            "pollutants",
        ],
        "cameras.status" => &["camera_id", "status", "last_frame", "health"],
        "alert" => &[
            "id",
            "priority",
            "category",
            "title",
            "message",
            "location",
            "action_required",
        ],
        _ => return None,
    };
    Some(keys.iter().copied().collect())
}

#[tokio::test]
async fn ten_seconds_of_simulation_feed_every_seed_channel_with_the_example_shapes() {
    let gw = cli_gateway();
    let url = gw.http();
    let out = uip(&[
        "simulate",
        "--url",
        &url,
        "--token",
        &pub_token(),
        "--rate",
        "20",
        "--duration",
        "10",
        "--seed",
        "7",
    ])
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("simulated 200 events"),
        "{}",
        stderr(&out)
    );
    for channel in [
        "traffic.flow",
        "accidents",
        "congestion",
        "weather",
        "air-quality",
        "cameras.status",
        "alerts",
    ] {
        let events = history(gw, channel).await;
        assert!(!events.is_empty(), "no {channel} events");
        for e in events {
            let kind = e["type"].as_str().unwrap();
            let expected = example_keys(kind).unwrap_or_else(|| panic!("unexpected type {kind}"));
            let got: BTreeSet<&str> = e["data"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(got, expected, "{kind}: {e}");
            if let Some(loc) = e["data"].get("location") {
                let lat = loc["lat"].as_f64().unwrap();
                assert!(
                    (10.6..11.0).contains(&lat),
                    "around Ho Chi Minh City: {loc}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_malformed_line_is_reported_with_its_number_and_nothing_is_published() {
    let gw = cli_gateway();
    let channel = unique("conversation:malformed-");
    let good = json!({"channel": channel, "type": "chat_message", "data": {}}).to_string();
    let file = ndjson_file(
        "malformed",
        &[good.clone(), "{\"channel\": oops".into(), good],
    );
    let url = gw.http();
    let out = uip(&[
        "publish",
        "--url",
        &url,
        "--token",
        &pub_token(),
        "--file",
        &file,
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("line 2:"), "{}", stderr(&out));
    assert!(history(gw, &channel).await.is_empty());
}

#[tokio::test]
async fn bad_urls_refused_connections_and_rejected_tokens_are_one_line_errors() {
    let gw = cli_gateway();
    let url = gw.http();
    for (args, code, says) in [
        (
            vec!["stats", "--url", "http://127.0.0.1:1", "--token", "t"],
            1,
            "cannot reach",
        ),
        (
            vec!["stats", "--url", "nonsense", "--token", "t"],
            2,
            "bad --url",
        ),
        (
            vec!["stats", "--url", &url, "--token", "not-a-token"],
            3,
            "refused the token",
        ),
        (
            vec![
                "publish",
                "--url",
                &url,
                "--token",
                "not-a-token",
                "--channel",
                "alerts",
                "--type",
                "alert",
            ],
            3,
            "refused the token",
        ),
    ] {
        let out = uip(&args).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(
            err.trim()
                .lines()
                .filter(|l| l.starts_with("uip: ") && !l.contains("published"))
                .count(),
            1,
            "{err}"
        );
    }
}

#[tokio::test]
async fn stats_print_a_table_of_channels() {
    let gw = cli_gateway();
    let url = gw.http();
    let out = uip(&["stats", "--url", &url, "--token", &sub_token()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("connections "), "{table}");
    assert!(lines.next().unwrap().starts_with("channel"), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("accidents ")),
        "{table}"
    );
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["token", "publish", "subscribe", "simulate", "stats"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_uip"))
            .args([sub, "--help"])
            .output()
            .expect("run uip");
        assert!(out.status.success(), "uip {sub} --help");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage: uip"),
            "{sub}"
        );
    }
}
