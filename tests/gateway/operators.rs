//! What operators read: `/metrics` in Prometheus text, and structured log
//! lines that never hold a token.

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

/// A gateway of its own whose log file holds the Worker's log lines.
fn logged_gateway() -> &'static Gateway {
    static GW: OnceLock<Gateway> = OnceLock::new();
    GW.get_or_init(|| Gateway::start_logging(&state_dir("logged"), &[], "log"))
}

#[tokio::test]
async fn metrics_parse_and_their_counters_move_with_a_publish() {
    let gw = logged_gateway();
    let (status, _) = get(gw, "/metrics", None).await;
    assert_eq!(status, 401);
    let (status, _) = get(gw, "/metrics", Some(&sub_token())).await;
    assert_eq!(status, 403, "metrics need scope admin");

    let channel = unique("conversation:metrics-");
    let (mut c, _) = Client::subscribed(gw, &channel, &sub_token()).await;
    let before = scrape(gw).await;
    assert!(
        at(&before, "uip_connections{route=\"direct\"}") >= 1.0,
        "{before:?}"
    );
    for n in 0..3 {
        publish_ok(gw, &channel, "chat_message", json!({"n": n})).await;
        c.expect("chat_message").await;
    }
    let mut refused = Client::connect(gw, "/ws?token=not-a-token").await;
    refused.expect("auth.failed").await;
    let after = scrape(gw).await;
    let series = format!("uip_channel_events_total{{channel=\"{channel}\"}}");
    assert_eq!(at(&after, &series), 3.0, "{after:?}");
    assert_eq!(
        at(
            &after,
            &format!("uip_channel_subscribers{{channel=\"{channel}\"}}")
        ),
        1.0
    );
    for (counter, by) in [
        ("uip_events_published_total", 3.0),
        ("uip_publish_requests_total", 3.0),
        ("uip_deliveries_total", 3.0),
        ("uip_publish_duration_seconds_count", 3.0),
        ("uip_refusals_total{code=\"AUTH_FAILED\"}", 1.0),
    ] {
        assert!(
            at(&after, counter) - at(&before, counter) >= by,
            "{counter}: {} → {}",
            at(&before, counter),
            at(&after, counter)
        );
    }
    assert!(at(&after, "uip_connections_opened_total{route=\"direct\"}") >= 1.0);
    assert_eq!(
        at(
            &after,
            &format!("uip_channel_deliveries_total{{channel=\"{channel}\"}}")
        ),
        3.0
    );
    let (_, stats) = get(gw, "/v1/stats", Some(&sub_token())).await;
    assert_eq!(
        stats["channels"][&channel],
        json!({"subscribers": 1, "seq": 3, "delivered": 3}),
        "{stats}"
    );
}

#[tokio::test]
async fn the_logs_have_a_json_line_per_open_publish_and_refusal_and_never_a_token() {
    let gw = logged_gateway();
    let channel = unique("conversation:logs-");
    let listener = talker_token("log-listener");
    let publisher = pub_token();
    let expired = token(uip_realtime::core::auth::TokenSpec {
        sub: Some("late".into()),
        exp: Some(now_s() - 3600),
        ..Default::default()
    });
    let mut hub = Client::multiplexed(gw, &listener).await;
    hub.subscribe(&channel, json!({})).await;
    let (_direct, _) = Client::subscribed(gw, &channel, &listener).await;
    let mut by_message = Client::connect(gw, "/ws").await;
    by_message.expect("rate_limit_info").await;
    by_message
        .send_json(json!({"type": "auth", "token": expired}))
        .await;
    by_message.expect("auth.failed").await;
    let (status, _) = publish_raw(
        gw,
        &json!({"channel": channel, "type": "chat_message", "data": {}}).to_string(),
        Some(&publisher),
    )
    .await;
    assert_eq!(status, 200);
    hub.expect("chat_message").await;

    let lines = tokio::time::timeout(WAIT, async {
        loop {
            let log = gw.log();
            let events: Vec<Value> = log
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
                .filter(|v| v.get("event").is_some())
                .collect();
            let published = events
                .iter()
                .any(|e| e["event"] == "publish" && e["channel"] == channel.as_str());
            let refused = events
                .iter()
                .any(|e| e["event"] == "refusal" && e["code"] == "AUTH_EXPIRED");
            if published && refused {
                return (log, events);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the publish and the refusal were logged");
    let (log, events) = lines;
    let publish = events
        .iter()
        .find(|e| e["event"] == "publish" && e["channel"] == channel.as_str())
        .unwrap();
    assert_eq!(
        (
            &publish["count"],
            &publish["first_seq"],
            &publish["last_seq"]
        ),
        (&json!(1), &json!(1), &json!(1)),
        "{publish}"
    );
    for route in ["hub", "direct"] {
        assert!(
            events
                .iter()
                .any(|e| e["event"] == "connection.open" && e["route"] == route),
            "no open of a {route} socket"
        );
    }
    for t in [&listener, &publisher, &expired] {
        assert!(!log.contains(t.as_str()), "a token is in the log");
    }
    assert!(!log.contains(SECRET), "the secret is in the log");
}
