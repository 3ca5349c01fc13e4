//! The `001_…` UIP backend dialect, end to end: what its React hook sees.

use serde_json::{json, Map, Value};
use uip_realtime::core::auth::TokenSpec;

use crate::common::*;

/// The hook of `001_…`: SNAPSHOT replaces the state, UPDATE replaces one topic,
/// ALERT is handled aside.
#[derive(Default)]
struct Hook {
    data: Map<String, Value>,
    alerts: Vec<Value>,
}

impl Hook {
    fn apply(&mut self, m: &Value) {
        match m["type"].as_str() {
            Some("SNAPSHOT") => self.data = m["data"].as_object().cloned().unwrap_or_default(),
            Some("UPDATE") => {
                self.data
                    .insert(m["topic"].as_str().unwrap().to_owned(), m["data"].clone());
            }
            Some("ALERT") => self.alerts.push(m.clone()),
            _ => {}
        }
    }
}

fn in_list(list: &Value, key: &str, value: &str) -> bool {
    list.as_array()
        .is_some_and(|l| l.iter().any(|e| e[key] == value))
}

#[tokio::test]
async fn a_dialect_socket_gets_connection_and_a_snapshot_of_every_allowed_topic_without_asking() {
    let gw = gateway();
    let cam = unique("CAM_D_");
    publish_ok(
        gw,
        "cameras.status",
        "cameras.status",
        json!({"camera_id": cam, "status": "active"}),
    )
    .await;
    let mut c = Client::connect(gw, &format!("/ws?dialect=001&token={}", sub_token())).await;
    c.expect("auth.success").await;
    c.expect("rate_limit_info").await;
    let conn = c.expect("connection").await;
    assert!(
        conn["heartbeatInterval"].is_u64()
            && conn["message"].is_string()
            && conn["timestamp"].is_string()
    );
    let snap = c.expect("SNAPSHOT").await;
    let topics: Vec<&str> = snap["data"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for t in [
        "cameras",
        "weather",
        "airQuality",
        "accidents",
        "congestion",
        "patterns",
    ] {
        assert!(topics.contains(&t), "{t} missing from {topics:?}");
    }
    assert!(
        in_list(&snap["data"]["cameras"], "camera_id", &cam),
        "the list is the snapshot's data: {snap}"
    );
}

#[tokio::test]
async fn the_hook_state_follows_updates_and_alerts() {
    let gw = gateway();
    let t = token(TokenSpec {
        scope: Some("subscribe".into()),
        channels: Some(vec!["accidents".into(), "congestion".into()]),
        exp: Some(now_s() + 600),
        ..Default::default()
    });
    let mut c = Client::connect(gw, &format!("/ws?dialect=001&token={t}")).await;
    c.expect("auth.success").await;
    c.expect("rate_limit_info").await;
    c.expect("connection").await;
    let mut hook = Hook::default();
    let snap = c.expect("SNAPSHOT").await;
    assert_eq!(
        snap["data"].as_object().unwrap().len(),
        2,
        "only the topics the token allows: {snap}"
    );
    hook.apply(&snap);

    let id = unique("ACC_D_");
    publish_ok(
        gw,
        "accidents",
        "accidents.new",
        json!({"id": id, "severity": "severe"}),
    )
    .await;
    // An ALERT first, then the UPDATE with the whole list; other tests may
    // publish accidents too, so read until this accident's UPDATE.
    loop {
        let m = c.next_json().await;
        hook.apply(&m);
        if m["type"] == "UPDATE" && in_list(&m["data"], "id", &id) {
            break;
        }
    }
    assert!(hook
        .alerts
        .iter()
        .any(|a| a["topic"] == "accidents" && a["data"]["id"] == id.as_str()));
    assert!(in_list(&hook.data["accidents"], "id", &id));

    publish_ok(gw, "accidents", "accidents.resolved", json!({"id": id})).await;
    loop {
        let m = c.next_json().await;
        hook.apply(&m);
        if m["type"] == "UPDATE" && m["topic"] == "accidents" && !in_list(&m["data"], "id", &id) {
            break;
        }
    }
    assert!(
        !in_list(&hook.data["accidents"], "id", &id),
        "resolved accidents leave the list"
    );
}

#[tokio::test]
async fn the_subscribe_action_starts_the_dialect_and_answers_a_snapshot_of_subscribed_topics() {
    let gw = gateway();
    let mut c = Client::multiplexed(gw, &sub_token()).await;
    c.send_json(json!({"action": "subscribe", "topics": ["weather", "bogus"]}))
        .await;
    c.expect("connection").await;
    let e = c.expect_error("error", "CHANNEL_NOT_FOUND").await;
    assert_eq!(e["error"]["details"]["topic"], "bogus");
    let snap = c.expect("SNAPSHOT").await;
    assert_eq!(
        snap["data"].as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["weather"]
    );
    c.send_json(json!({"action": "subscribe", "topics": ["patterns"]}))
        .await;
    let snap = c.expect("SNAPSHOT").await;
    let mut keys: Vec<&String> = snap["data"].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, vec!["patterns", "weather"]);
    c.send_json(json!({"action": "ping"})).await;
    let pong = c.expect("PONG").await;
    assert!(pong["timestamp"].is_string());
}

#[tokio::test]
async fn a_forbidden_topic_is_an_error_and_the_rest_apply() {
    let gw = gateway();
    let t = token(TokenSpec {
        scope: Some("subscribe".into()),
        channels: Some(vec!["weather".into()]),
        exp: Some(now_s() + 600),
        ..Default::default()
    });
    let mut c = Client::multiplexed(gw, &t).await;
    c.send_json(json!({"action": "subscribe", "topics": ["accidents", "weather"]}))
        .await;
    c.expect("connection").await;
    c.expect_error("error", "FORBIDDEN").await;
    let snap = c.expect("SNAPSHOT").await;
    assert!(snap["data"].get("weather").is_some() && snap["data"].get("accidents").is_none());
}

#[tokio::test]
async fn unsubscribed_topics_get_no_updates() {
    let gw = gateway();
    let mut c = Client::multiplexed(gw, &sub_token()).await;
    c.send_json(json!({"action": "subscribe", "topics": ["patterns", "airQuality"]}))
        .await;
    c.expect("connection").await;
    c.expect("SNAPSHOT").await;
    c.send_json(json!({"action": "unsubscribe", "topics": ["patterns"]}))
        .await;
    let zone = unique("PZ_");
    publish_ok(
        gw,
        "traffic.patterns",
        "traffic.patterns",
        json!({"zone_id": zone}),
    )
    .await;
    publish_ok(
        gw,
        "air-quality",
        "air-quality.update",
        json!({"location": unique("L_"), "aqi": 1}),
    )
    .await;
    let m = c.expect("UPDATE").await;
    assert_eq!(
        m["topic"], "airQuality",
        "no UPDATE for the unsubscribed topic came first: {m}"
    );
}

#[tokio::test]
async fn dialect_topics_do_not_count_against_max_subscriptions() {
    let gw = gateway();
    let mut c = Client::multiplexed(gw, &sub_token()).await;
    c.send_json(json!({"action": "subscribe", "topics": ["all"]}))
        .await;
    c.expect("connection").await;
    c.expect("SNAPSHOT").await;
    let base = unique("dmax");
    for i in 0..10 {
        c.subscribe(&format!("conversation:{base}-{i}"), json!(null))
            .await;
    }
}
