//! Events reach every matching subscriber, with filters and snapshots.

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn two_subscribers_both_receive_a_published_event_with_channel_seq_and_timestamp() {
    let gw = gateway();
    let channel = format!("conversation:{}", unique("two"));
    let (mut a, _) = Client::subscribed(gw, &channel, &sub_token()).await;
    let (mut b, _) = Client::subscribed(gw, &channel, &sub_token()).await;

    let (status, body) = publish(
        gw,
        &json!({"channel": channel, "type": "chat_message", "data": {"content": "hi"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["seq"], 1);
    assert_eq!(body["results"][0]["delivered"], 2);

    for c in [&mut a, &mut b] {
        let ev = c.expect("chat_message").await;
        assert_eq!(ev["channel"], channel.as_str());
        assert_eq!(ev["seq"], 1);
        assert_eq!(ev["data"]["content"], "hi");
        let ts = ev["timestamp"].as_str().expect("timestamp");
        assert!(chrono_like(ts), "RFC 3339 UTC timestamp, got {ts}");
    }
}

fn chrono_like(ts: &str) -> bool {
    ts.len() >= 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T'
}

#[tokio::test]
async fn a_filter_drops_events_it_does_not_match() {
    let gw = gateway();
    // A severity no other test publishes, so only this test's events pass.
    let severity = unique("critical-");
    let (mut c, _) = Client::subscribed(gw, "accidents", &sub_token()).await;
    c.send_json(
        json!({"type": "subscribe", "channel": "accidents", "filters": {"severity": [severity]}}),
    )
    .await;
    let sub = c.expect_reply("subscribed").await;
    assert_eq!(sub["data"]["filters"], json!({"severity": [severity]}));
    c.expect_reply("snapshot").await;

    let minor = unique("ACC_minor_");
    let critical = unique("ACC_crit_");
    publish_ok(
        gw,
        "accidents",
        "accidents.new",
        json!({"id": minor, "severity": "minor"}),
    )
    .await;
    publish_ok(
        gw,
        "accidents",
        "accidents.new",
        json!({"id": critical, "severity": severity}),
    )
    .await;

    // Events arrive in order, so the first one this socket sees must be the critical one.
    let ev = c.expect("accidents.new").await;
    assert_eq!(ev["data"]["id"], critical.as_str());
}

#[tokio::test]
async fn a_resolved_accident_still_reaches_a_severity_subscriber_through_the_merged_view() {
    let gw = gateway();
    let severity = unique("severe-");
    let (mut c, _) = Client::subscribed(gw, "accidents", &sub_token()).await;
    c.send_json(
        json!({"type": "subscribe", "channel": "accidents", "filters": {"severity": [severity]}}),
    )
    .await;
    c.expect_reply("subscribed").await;
    c.expect_reply("snapshot").await;
    let id = unique("ACC_merge_");
    publish_ok(
        gw,
        "accidents",
        "accidents.new",
        json!({"id": id, "severity": severity}),
    )
    .await;
    publish_ok(
        gw,
        "accidents",
        "accidents.resolved",
        json!({"id": id, "resolution": "cleared"}),
    )
    .await;
    assert_eq!(c.expect("accidents.new").await["data"]["id"], id.as_str());
    assert_eq!(
        c.expect("accidents.resolved").await["data"]["id"],
        id.as_str()
    );
}

#[tokio::test]
async fn a_late_subscriber_gets_the_latest_event_per_key() {
    let gw = gateway();
    let cam1 = unique("CAM_A_");
    let cam2 = unique("CAM_B_");
    publish_ok(
        gw,
        "traffic.flow",
        "traffic.flow",
        json!({"camera_id": cam1, "intensity": 1}),
    )
    .await;
    publish_ok(
        gw,
        "traffic.flow",
        "traffic.flow",
        json!({"camera_id": cam2, "intensity": 2}),
    )
    .await;
    let last = publish_ok(
        gw,
        "traffic.flow",
        "traffic.flow",
        json!({"camera_id": cam1, "intensity": 3}),
    )
    .await;

    let (_c, snap) = Client::subscribed(gw, "traffic.flow", &sub_token()).await;
    let events = snap["data"]["events"].as_array().expect("events");
    let mine: Vec<_> = events
        .iter()
        .filter(|e| {
            e["data"]["camera_id"] == cam1.as_str() || e["data"]["camera_id"] == cam2.as_str()
        })
        .collect();
    assert_eq!(mine.len(), 2, "one entry per camera: {mine:?}");
    assert_eq!(
        mine[0]["data"]["camera_id"],
        cam2.as_str(),
        "entries are in seq order"
    );
    assert_eq!(mine[1]["data"]["intensity"], 3);
    assert_eq!(mine[1]["seq"], last);
    assert!(snap["data"]["seq"].as_u64().unwrap() >= last);
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "snapshot in seq order: {seqs:?}"
    );
}

#[tokio::test]
async fn a_resolved_accident_leaves_the_snapshot() {
    let gw = gateway();
    let id = unique("ACC_gone_");
    publish_ok(
        gw,
        "accidents",
        "accidents.new",
        json!({"id": id, "severity": "moderate"}),
    )
    .await;
    publish_ok(gw, "accidents", "accidents.resolved", json!({"id": id})).await;
    let (status, snap) = get(gw, "/v1/channels/accidents/snapshot", Some(&sub_token())).await;
    assert_eq!(status, 200);
    let present = snap["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["data"]["id"] == id.as_str());
    assert!(!present, "resolved accident still in {snap}");
}

#[tokio::test]
async fn the_snapshot_respects_filters() {
    let gw = gateway();
    let zone = unique("ZONE_");
    publish_ok(
        gw,
        "congestion",
        "congestion.update",
        json!({"zone_id": zone, "level": "high"}),
    )
    .await;
    publish_ok(
        gw,
        "congestion",
        "congestion.update",
        json!({"zone_id": unique("OTHER_"), "level": "high"}),
    )
    .await;
    let (mut c, _) = Client::subscribed(gw, "congestion", &sub_token()).await;
    c.send_json(
        json!({"type": "subscribe", "channel": "congestion", "filters": {"zones": [zone]}}),
    )
    .await;
    c.expect("subscribed").await;
    let snap = c.expect("snapshot").await;
    let events = snap["data"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{snap}");
    assert_eq!(events[0]["data"]["zone_id"], zone.as_str());
}

#[tokio::test]
async fn unsubscribe_stops_delivery_on_a_direct_socket() {
    let gw = gateway();
    let channel = format!("conversation:{}", unique("unsub"));
    let (mut quiet, _) = Client::subscribed(gw, &channel, &sub_token()).await;
    let (mut loud, _) = Client::subscribed(gw, &channel, &sub_token()).await;
    quiet
        .send_json(json!({"type": "unsubscribe", "channel": channel}))
        .await;
    assert_eq!(
        quiet.expect("unsubscribed").await["data"]["channel"],
        channel.as_str()
    );

    let (_, body) = publish(
        gw,
        &json!({"channel": channel, "type": "notification", "data": {}}),
    )
    .await;
    assert_eq!(body["results"][0]["delivered"], 1);
    loud.expect("notification").await;
    quiet.send_json(json!({"type": "ping", "n": 1})).await;
    quiet.expect("pong").await;
}

#[tokio::test]
async fn a_weather_alert_stays_in_the_snapshot_until_its_end_time() {
    let gw = gateway();
    let live = unique("storm_");
    let over = unique("fog_");
    publish_ok(
        gw,
        "weather",
        "weather.alert",
        json!({"alert_type": live, "end_time": "2999-01-01T00:00:00Z"}),
    )
    .await;
    publish_ok(
        gw,
        "weather",
        "weather.alert",
        json!({"alert_type": over, "end_time": "2000-01-01T00:00:00Z"}),
    )
    .await;
    let (_, snap) = get(gw, "/v1/channels/weather/snapshot", Some(&sub_token())).await;
    let types: Vec<&str> = snap["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["data"]["alert_type"].as_str())
        .collect();
    assert!(types.contains(&live.as_str()), "{snap}");
    assert!(
        !types.contains(&over.as_str()),
        "an ended alert is gone: {snap}"
    );
}

#[tokio::test]
async fn an_alert_stays_until_resolved() {
    let gw = gateway();
    let id = unique("ALERT_");
    publish_ok(gw, "alerts", "alert", json!({"id": id, "priority": "high"})).await;
    let has = |snap: &serde_json::Value| {
        snap["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["data"]["id"] == id.as_str())
    };
    let (_, snap) = get(gw, "/v1/channels/alerts/snapshot", Some(&sub_token())).await;
    assert!(has(&snap));
    publish_ok(
        gw,
        "alerts",
        "alert",
        json!({"id": id, "status": "resolved"}),
    )
    .await;
    let (_, snap) = get(gw, "/v1/channels/alerts/snapshot", Some(&sub_token())).await;
    assert!(!has(&snap), "{snap}");
}
