//! Pings, bad frames and HTTP routing errors.

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn the_exact_ping_gets_the_exact_pong() {
    let gw = gateway();
    let quiet = format!("conversation:{}", unique("ping"));
    let (mut c, _) = Client::subscribed(gw, &quiet, &sub_token()).await;
    c.send_text(r#"{"type":"ping"}"#).await;
    match c.next_frame(WAIT).await {
        Some(tokio_tungstenite::tungstenite::Message::Text(t)) => {
            assert_eq!(t.as_str(), r#"{"type":"pong"}"#)
        }
        other => panic!("expected the auto-response, got {other:?}"),
    }
}

#[tokio::test]
async fn a_ping_written_differently_gets_a_pong_with_timestamp() {
    let gw = gateway();
    let (mut c, _) = Client::subscribed(gw, "weather", &sub_token()).await;
    c.send_text(r#"{ "type": "ping" }"#).await;
    let pong = c.expect_reply("pong").await;
    assert!(pong["timestamp"].is_string());
    assert_eq!(pong["data"], json!({}));
}

#[tokio::test]
async fn invalid_json_is_invalid_message_and_the_connection_stays_usable() {
    let gw = gateway();
    let (mut c, _) = Client::subscribed(gw, "weather", &sub_token()).await;
    c.send_text("{not json").await;
    c.expect_error("error", "INVALID_MESSAGE").await;
    c.send_text(r#"{"type":"ping","again":true}"#).await;
    c.expect_reply("pong").await;
}

#[tokio::test]
async fn an_unknown_message_type_is_invalid_message_and_the_connection_stays_usable() {
    let gw = gateway();
    let (mut c, _) = Client::subscribed(gw, "weather", &sub_token()).await;
    c.send_json(json!({"type": "dance"})).await;
    let e = c.expect_error("error", "INVALID_MESSAGE").await;
    assert_eq!(e["error"]["details"]["field"], "type");
    c.send_json(
        json!({"type": "subscribe", "channel": "weather", "filters": {"alerts_only": true}}),
    )
    .await;
    c.expect_reply("subscribed").await;
}

#[tokio::test]
async fn bad_fields_and_filters_are_invalid_message_naming_the_field() {
    let gw = gateway();
    let (mut c, _) = Client::subscribed(gw, "weather", &sub_token()).await;
    let cases = [
        (json!({"type": "subscribe"}), "channel"),
        (json!({"type": "subscribe", "channel": 3}), "channel"),
        (
            json!({"type": "subscribe", "channel": "weather", "extra": 1}),
            "extra",
        ),
        (
            json!({"type": "subscribe", "channel": "weather", "filters": {"colour": ["red"]}}),
            "filters.colour",
        ),
        (
            json!({"type": "subscribe", "channel": "weather", "filters": {"zones": "Z1"}}),
            "filters.zones",
        ),
        (
            json!({"type": "subscribe", "channel": "weather", "since": -1}),
            "since",
        ),
        (json!({"type": "auth"}), "token"),
    ];
    for (msg, field) in cases {
        c.send_json(msg.clone()).await;
        let e = c.expect_error("error", "INVALID_MESSAGE").await;
        assert_eq!(e["error"]["details"]["field"], field, "for {msg}: {e}");
    }
    c.send_text(r#"{"type":"ping","still":"here"}"#).await;
    c.expect_reply("pong").await;
}

#[tokio::test]
async fn subscribing_a_direct_socket_to_another_channel_is_subscription_failed() {
    let gw = gateway();
    let (mut c, _) = Client::subscribed(gw, "weather", &sub_token()).await;
    c.send_json(json!({"type": "subscribe", "channel": "accidents"}))
        .await;
    c.expect_error("error", "SUBSCRIPTION_FAILED").await;
}

#[tokio::test]
async fn a_bad_frame_does_not_disturb_other_clients() {
    let gw = gateway();
    let channel = format!("conversation:{}", unique("calm"));
    let (mut bad, _) = Client::subscribed(gw, &channel, &sub_token()).await;
    let (mut good, _) = Client::subscribed(gw, &channel, &sub_token()).await;
    bad.send_text("\u{0}\u{1}garbage").await;
    bad.expect_error("error", "INVALID_MESSAGE").await;
    let (_, body) = publish(
        gw,
        &json!({"channel": channel, "type": "status_update", "data": {"s": 1}}),
    )
    .await;
    assert_eq!(body["results"][0]["delivered"], 2);
    good.expect("status_update").await;
    bad.expect("status_update").await;
}

#[tokio::test]
async fn http_routing_errors_carry_the_error_object() {
    let gw = gateway();
    let (status, v) = get(gw, "/nowhere", None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("NOT_FOUND"))
    );
    let (status, v) = get(gw, "/v1/publish", None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (405, Some("METHOD_NOT_ALLOWED"))
    );
    let (status, v) = get(gw, "/ws/accidents", None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (426, Some("UPGRADE_REQUIRED"))
    );
    let (status, v) = get(gw, "/healthz", None).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")));
}

#[tokio::test]
async fn the_snapshot_endpoint_needs_a_token_and_follows_its_channels_claim() {
    let gw = gateway();
    let (status, _) = get(gw, "/v1/channels/alerts/snapshot", None).await;
    assert_eq!(status, 401);
    let (status, v) = get(gw, "/v1/channels/alerts/snapshot", Some(&sub_token())).await;
    assert_eq!(status, 200);
    assert_eq!(v["channel"], "alerts");
    assert!(v["events"].is_array());
    let (status, v) = get(gw, "/v1/channels/nope/snapshot", Some(&sub_token())).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("CHANNEL_NOT_FOUND"))
    );
    let narrow = token(uip_realtime::core::auth::TokenSpec {
        channels: Some(vec!["weather".into()]),
        exp: Some(now_s() + 60),
        ..Default::default()
    });
    let (status, _) = get(gw, "/v1/channels/alerts/snapshot", Some(&narrow)).await;
    assert_eq!(status, 403);
}
