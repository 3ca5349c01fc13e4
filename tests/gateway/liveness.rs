//! SPEC "Liveness": silence alone never closes a socket, silent sockets get
//! keep-alive frames every `KEEPALIVE_S`, and only a client that heartbeats
//! and stops is closed (1001). The gateway here runs the defaults shortened
//! 15-fold (45 s → 3 s, 90 s → 6 s); each test holds its sockets past three
//! keep-alive intervals.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// A keep-alive may come this late (15 s of 45).
const LATE: Duration = Duration::from_millis(KEEPALIVE_S * 1000 / 3);
/// How long the sockets are held: past three keep-alive intervals.
const HOLD: Duration = Duration::from_millis(KEEPALIVE_S * 3000 + 1500);

fn is_keepalive(m: &Value) -> bool {
    (m["type"] == "pong" && m.get("timestamp").is_some()) || m["type"] == "PONG"
}

/// Asserts keep-alives came from `start` on, one per interval, none late.
fn assert_kept_alive(start: Instant, frames: &[(Instant, Value)]) {
    let times: Vec<Instant> = frames
        .iter()
        .filter(|(_, m)| is_keepalive(m))
        .map(|(t, _)| *t)
        .collect();
    assert!(
        times.len() >= 3,
        "expected at least 3 keep-alives in {HOLD:?}, got {}",
        times.len()
    );
    let interval = Duration::from_secs(KEEPALIVE_S);
    let mut previous = start;
    for t in times {
        let gap = t - previous;
        assert!(
            gap <= interval + LATE,
            "a keep-alive came {gap:?} after the last frame"
        );
        assert!(
            gap + Duration::from_millis(300) >= interval,
            "keep-alives came {gap:?} apart, more often than every {interval:?}"
        );
        previous = t;
    }
}

async fn publish_accident(gw: &Gateway) -> String {
    let id = unique("ACC_LIVE_");
    publish_ok(
        gw,
        "accidents",
        "accidents.new",
        json!({"id": id, "severity": "minor"}),
    )
    .await;
    id
}

#[tokio::test]
async fn a_dialect_socket_that_never_sends_gets_keepalives_and_later_events() {
    let gw = liveness_gateway();
    let start = Instant::now();
    let mut c = Client::connect(gw, &format!("/ws?dialect=001&token={}", sub_token())).await;
    let (frames, closed) = c.frames_for(HOLD).await;
    assert_eq!(closed, None, "a silent dialect socket stays open");
    assert!(frames.iter().any(|(_, m)| m["type"] == "SNAPSHOT"));
    assert!(frames
        .iter()
        .filter(|(_, m)| is_keepalive(m))
        .all(|(_, m)| m["type"] == "PONG"));
    assert_kept_alive(start, &frames);
    let id = publish_accident(gw).await;
    c.expect_where("the ALERT", |m| {
        m["type"] == "ALERT" && m["data"]["id"] == id
    })
    .await;
}

#[tokio::test]
async fn a_socket_that_sends_only_auth_gets_keepalives_and_later_events() {
    let gw = liveness_gateway();
    let mut c = Client::connect(gw, "/ws/accidents").await;
    c.expect("rate_limit_info").await;
    c.send_json(json!({"type": "auth", "token": sub_token()}))
        .await;
    let start = Instant::now();
    let (frames, closed) = c.frames_for(HOLD).await;
    assert_eq!(closed, None, "a socket that only authenticated stays open");
    assert!(frames.iter().any(|(_, m)| m["type"] == "auth.success"));
    assert_kept_alive(start, &frames);
    let id = publish_accident(gw).await;
    c.expect_where("the event", |m| m["data"]["id"] == id).await;
}

#[tokio::test]
async fn a_socket_that_pings_within_the_interval_stays_open_without_keepalives() {
    let gw = liveness_gateway();
    let chat = format!("conversation:{}", unique("live"));
    let mut c = Client::multiplexed(gw, &sub_token()).await;
    c.subscribe(&chat, json!(null)).await;
    // The seeds ping every 30 s of a 45 s interval: 2 s here.
    let every = Duration::from_millis(KEEPALIVE_S * 2000 / 3);
    let until = Instant::now() + HOLD;
    while Instant::now() < until {
        c.send_text(r#"{"type":"ping"}"#).await;
        let (frames, closed) = c.frames_for(every).await;
        assert_eq!(closed, None);
        for (_, m) in &frames {
            assert_eq!(m, &json!({"type": "pong"}), "only auto-answered pongs");
        }
    }
    publish_ok(gw, &chat, "chat_message", json!({"text": "still here"})).await;
    c.expect_where("the event", |m| m["type"] == "chat_message")
        .await;
}

#[tokio::test]
async fn a_socket_that_pinged_once_and_stopped_is_closed_after_the_heartbeat_timeout() {
    let gw = liveness_gateway();
    let mut c = Client::multiplexed(gw, &sub_token()).await;
    c.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(c.next_json().await, json!({"type": "pong"}));
    let pinged = Instant::now();
    let (_, closed) = c
        .frames_for(Duration::from_secs(HEARTBEAT_TIMEOUT_S) + LATE + LATE)
        .await;
    let after = pinged.elapsed();
    let closed = closed.expect("closed for its stopped heartbeat");
    assert_eq!(closed.code, 1001);
    c.expect_over_after(&closed).await;
    assert!(
        after + Duration::from_millis(300) >= Duration::from_secs(HEARTBEAT_TIMEOUT_S),
        "closed after {after:?}, before the heartbeat timeout"
    );
}

#[tokio::test]
async fn a_socket_closed_for_its_stopped_heartbeat_leaves_presence_though_it_never_answers() {
    let gw = liveness_gateway();
    let chat = format!("conversation:{}", unique("gone"));
    let mut watcher = Client::multiplexed(gw, &sub_token()).await;
    watcher.subscribe(&chat, json!(null)).await;
    let mut silent = Client::multiplexed(gw, &sub_token()).await;
    silent.subscribe(&chat, json!(null)).await;
    let id = silent.connection_id.clone().unwrap();
    watcher
        .expect_where("the join", |m| {
            m["type"] == "presence.join" && m["data"]["connection_id"] == id.as_str()
        })
        .await;
    // One ping, then nothing is read: like a dead client, it never answers
    // the server's close frame.
    silent.send_text(r#"{"type":"ping"}"#).await;
    watcher
        .expect_where("the leave", |m| {
            m["type"] == "presence.leave" && m["data"]["connection_id"] == id.as_str()
        })
        .await;
    drop(silent);
}
