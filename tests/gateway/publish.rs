//! Publish validation: a bad body gets its error and delivers nothing.

use serde_json::json;

use crate::common::*;

/// A subscriber on a fresh conversation channel, for checking what was delivered.
async fn watcher() -> (Client, String) {
    let channel = format!("conversation:{}", unique("pub"));
    let (c, _) = Client::subscribed(gateway(), &channel, &sub_token()).await;
    (c, channel)
}

/// Publishes a marker and asserts it is the next thing the watcher sees, which
/// proves nothing before it was delivered.
async fn assert_nothing_delivered_before_marker(c: &mut Client, channel: &str) {
    let (status, _) = publish(
        gateway(),
        &json!({"channel": channel, "type": "marker", "data": {}}),
    )
    .await;
    assert_eq!(status, 200);
    let m = c.next_json().await;
    assert_eq!(
        m["type"], "marker",
        "something was delivered before the marker: {m}"
    );
}

#[tokio::test]
async fn a_malformed_body_is_400_and_delivers_nothing() {
    let gw = gateway();
    let (mut c, channel) = watcher().await;
    for body in ["not json", "[]", "{}", r#"{"channel":1}"#] {
        let (status, v) = publish_raw(gw, body, Some(&pub_token())).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["code"], "INVALID_MESSAGE");
    }
    assert_nothing_delivered_before_marker(&mut c, &channel).await;
}

#[tokio::test]
async fn an_unknown_channel_is_404() {
    let gw = gateway();
    let (status, v) = publish(gw, &json!({"channel": "nowhere", "type": "x", "data": {}})).await;
    assert_eq!(status, 404);
    assert_eq!(v["error"]["code"], "CHANNEL_NOT_FOUND");
    assert_eq!(v["error"]["details"]["channel"], "nowhere");
}

#[tokio::test]
async fn a_missing_key_or_wrong_type_names_the_field() {
    let gw = gateway();
    let (status, v) = publish(
        gw,
        &json!({"channel": "traffic.flow", "type": "traffic.flow", "data": {"intensity": 3}}),
    )
    .await;
    assert_eq!(
        (status, v["error"]["details"]["field"].as_str()),
        (400, Some("data.camera_id"))
    );
    let (status, v) = publish(
        gw,
        &json!({"channel": "accidents", "type": "weather.alert", "data": {"id": "A"}}),
    )
    .await;
    assert_eq!(
        (status, v["error"]["details"]["field"].as_str()),
        (400, Some("type"))
    );
}

#[tokio::test]
async fn a_batch_with_one_bad_event_delivers_none_of_it() {
    let gw = gateway();
    let (mut c, channel) = watcher().await;
    let body = json!({"events": [
        {"channel": channel, "type": "chat_message", "data": {"n": 1}},
        {"channel": channel, "type": "chat_message", "data": "not an object"},
    ]});
    let (status, v) = publish(gw, &body).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["details"]["index"], 1);
    assert_eq!(v["error"]["details"]["field"], "data");
    assert_nothing_delivered_before_marker(&mut c, &channel).await;
}

#[tokio::test]
async fn a_batch_is_ordered_and_answered_in_order() {
    let gw = gateway();
    let (mut c, channel) = watcher().await;
    let other = format!("conversation:{}", unique("other"));
    let body = json!({"events": [
        {"channel": channel, "type": "chat_message", "data": {"n": 1}},
        {"channel": other, "type": "chat_message", "data": {"n": 2}},
        {"channel": channel, "type": "chat_message", "data": {"n": 3}, "id": "evt-3"},
    ]});
    let (status, v) = publish(gw, &body).await;
    assert_eq!(status, 200, "{v}");
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(
        (r[0]["channel"].as_str(), r[0]["seq"].as_u64()),
        (Some(channel.as_str()), Some(1))
    );
    assert_eq!(
        (r[1]["channel"].as_str(), r[1]["seq"].as_u64()),
        (Some(other.as_str()), Some(1))
    );
    assert_eq!(
        (r[2]["channel"].as_str(), r[2]["seq"].as_u64()),
        (Some(channel.as_str()), Some(2))
    );
    assert_eq!(c.expect("chat_message").await["data"]["n"], 1);
    let third = c.expect("chat_message").await;
    assert_eq!(
        (third["data"]["n"].as_u64(), third["id"].as_str()),
        (Some(3), Some("evt-3"))
    );
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_413() {
    let gw = gateway();
    let big = format!(
        r#"{{"channel":"alerts","type":"alert","data":{{"id":"x","pad":"{}"}}}}"#,
        "a".repeat(1 << 20)
    );
    let (status, v) = publish_raw(gw, &big, Some(&pub_token())).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (413, Some("MESSAGE_TOO_LARGE"))
    );
}

#[tokio::test]
async fn the_producer_timestamp_is_kept() {
    let gw = gateway();
    let (mut c, channel) = watcher().await;
    let body = json!({"channel": channel, "type": "notification", "data": {}, "timestamp": "2025-11-29T10:30:00Z"});
    assert_eq!(publish(gw, &body).await.0, 200);
    assert_eq!(
        c.expect("notification").await["timestamp"],
        "2025-11-29T10:30:00Z"
    );
}

/// Publishes three events in one request to a fresh channel.
async fn publish_three(channel: &str) {
    let events: Vec<_> = (1..=3)
        .map(|n| json!({"channel": channel, "type": "n", "data": {"n": n}}))
        .collect();
    let (status, v) = publish(gateway(), &json!({ "events": events })).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["delivered"] == 2),
        "{v}"
    );
}

fn assert_batch_of_three(frame: &serde_json::Value) {
    assert_eq!(frame["type"], "batch", "{frame}");
    assert!(frame["timestamp"].is_string());
    let seqs: Vec<u64> = frame["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
}

#[tokio::test]
async fn batch_clients_get_a_publish_batch_as_one_frame_and_others_one_frame_per_event() {
    let gw = gateway();
    let channel = format!("conversation:{}", unique("batch"));
    let t = sub_token();
    let mut batched = Client::connect(gw, &format!("/ws/{channel}?token={t}&batch=1")).await;
    for kind in ["auth.success", "rate_limit_info", "subscribed", "snapshot"] {
        batched.expect(kind).await;
    }
    let (mut plain, _) = Client::subscribed(gw, &channel, &t).await;
    publish_three(&channel).await;
    assert_batch_of_three(&batched.next_json().await);
    for n in 1..=3 {
        assert_eq!(plain.expect("n").await["seq"], n);
    }
}

#[tokio::test]
async fn batch_clients_through_a_hub_get_one_frame_too() {
    let gw = gateway();
    let channel = format!("conversation:{}", unique("hubbatch"));
    let t = sub_token();
    let mut batched = Client::connect(gw, &format!("/ws?token={t}&batch=1")).await;
    batched.expect("auth.success").await;
    batched.expect("rate_limit_info").await;
    batched.subscribe(&channel, json!(null)).await;
    let mut plain = Client::multiplexed(gw, &t).await;
    plain.subscribe(&channel, json!(null)).await;
    publish_three(&channel).await;
    assert_batch_of_three(&batched.next_json().await);
    for n in 1..=3 {
        assert_eq!(plain.expect("n").await["seq"], n);
    }
}

/// Reads batch frames (or single events) until `last`; the `seq`s in order.
async fn batched_seqs_until(c: &mut Client, last: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.last().is_none_or(|s| *s < last) {
        let m = c.next_json().await;
        let events = match m["type"].as_str() {
            Some("batch") => m["events"].as_array().cloned().unwrap_or_default(),
            _ => vec![m],
        };
        seqs.extend(events.iter().filter_map(|e| e["seq"].as_u64()));
    }
    seqs
}

#[tokio::test]
async fn batch_clients_get_every_event_of_concurrent_publishes_once_in_order() {
    let gw = gateway();
    let channel = format!("conversation:{}", unique("concurrent"));
    let t = sub_token();
    let mut direct = Client::connect(gw, &format!("/ws/{channel}?token={t}&batch=1")).await;
    for kind in ["auth.success", "rate_limit_info", "subscribed", "snapshot"] {
        direct.expect(kind).await;
    }
    let mut hubbed = Client::connect(gw, &format!("/ws?token={t}&batch=1")).await;
    hubbed.expect("auth.success").await;
    hubbed.expect("rate_limit_info").await;
    hubbed.subscribe(&channel, json!(null)).await;
    let publishes = (0..24).map(|n| {
        let channel = channel.clone();
        async move { publish_ok(gateway(), &channel, "n", json!({"n": n})).await }
    });
    let mut acked = futures_util::future::join_all(publishes).await;
    acked.sort_unstable();
    assert_eq!(acked, (1..=24).collect::<Vec<u64>>());
    assert_eq!(batched_seqs_until(&mut direct, 24).await, acked);
    assert_eq!(batched_seqs_until(&mut hubbed, 24).await, acked);
}
