//! Every authentication failure of SPEC gets its code and close code, in-band.

use base64::Engine;
use serde_json::json;
use uip_realtime::core::auth::{mint, TokenSpec};

use crate::common::*;

fn spec() -> TokenSpec {
    TokenSpec {
        sub: Some("u".into()),
        scope: Some("subscribe".into()),
        exp: Some(now_s() + 600),
        ..TokenSpec::default()
    }
}

/// Connects to `/ws/alerts?token=…` and returns the first message and the close.
async fn refused_with_token(token: &str) -> (serde_json::Value, Closed) {
    let gw = gateway();
    let mut c = Client::connect(gw, &format!("/ws/alerts?token={token}")).await;
    let first = c.next_json().await;
    (first, c.expect_prompt_close().await)
}

/// Sends `token` as the first `auth` message and returns the refusal and the close.
async fn refused_with_message(token: &str) -> (serde_json::Value, Closed) {
    let gw = gateway();
    let mut c = Client::connect(gw, "/ws/alerts").await;
    c.expect("rate_limit_info").await;
    c.send_json(json!({"type": "auth", "token": token})).await;
    let first = c.next_json().await;
    (first, c.expect_prompt_close().await)
}

fn assert_refused(got: (serde_json::Value, Closed), kind: &str, code: &str, close: u16) {
    let (msg, closed) = got;
    assert_eq!(msg["type"], kind, "{msg}");
    assert_eq!(msg["error"]["code"], code, "{msg}");
    assert!(msg["timestamp"].is_string(), "{msg}");
    assert_eq!(closed.code, close, "{closed:?}");
}

#[tokio::test]
async fn a_bad_signature_is_auth_failed_4001() {
    let t = mint(&spec(), b"not-the-secret");
    assert_refused(
        refused_with_token(&t).await,
        "auth.failed",
        "AUTH_FAILED",
        4001,
    );
    assert_refused(
        refused_with_message(&t).await,
        "auth.failed",
        "AUTH_FAILED",
        4001,
    );
}

#[tokio::test]
async fn alg_none_is_auth_failed_4001() {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let t = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(format!(
            r#"{{"sub":"evil","scope":"subscribe","exp":{}}}"#,
            now_s() + 600
        ))
    );
    assert_refused(
        refused_with_token(&t).await,
        "auth.failed",
        "AUTH_FAILED",
        4001,
    );
}

#[tokio::test]
async fn garbage_is_auth_failed_4001() {
    assert_refused(
        refused_with_token("garbage").await,
        "auth.failed",
        "AUTH_FAILED",
        4001,
    );
    assert_refused(
        refused_with_message("garbage").await,
        "auth.failed",
        "AUTH_FAILED",
        4001,
    );
}

#[tokio::test]
async fn an_expired_token_is_auth_expired_4001() {
    let t = token(TokenSpec {
        exp: Some(now_s() - 120),
        ..spec()
    });
    assert_refused(
        refused_with_token(&t).await,
        "auth.failed",
        "AUTH_EXPIRED",
        4001,
    );
    assert_refused(
        refused_with_message(&t).await,
        "auth.failed",
        "AUTH_EXPIRED",
        4001,
    );
}

#[tokio::test]
async fn a_future_nbf_is_auth_failed_4001() {
    let t = token(TokenSpec {
        nbf: Some(now_s() + 600),
        ..spec()
    });
    assert_refused(
        refused_with_token(&t).await,
        "auth.failed",
        "AUTH_FAILED",
        4001,
    );
}

#[tokio::test]
async fn a_token_without_subscribe_scope_is_forbidden_4003() {
    let t = token(TokenSpec {
        scope: Some("publish".into()),
        ..spec()
    });
    let gw = gateway();
    let mut c = Client::connect(gw, &format!("/ws/alerts?token={t}")).await;
    c.expect_error("error", "FORBIDDEN").await;
    assert_eq!(c.expect_prompt_close().await.code, 4003);
}

#[tokio::test]
async fn a_channel_outside_the_claim_is_forbidden_4003() {
    let t = token(TokenSpec {
        channels: Some(vec!["traffic.*".into(), "alerts".into()]),
        ..spec()
    });
    let gw = gateway();
    let mut c = Client::connect(gw, &format!("/ws/alerts?token={t}")).await;
    c.expect("auth.success").await;
    c.expect("rate_limit_info").await;
    c.expect("subscribed").await;
    c.close().await;
    let mut c = Client::connect(gw, &format!("/ws/traffic.flow?token={t}")).await;
    c.expect("auth.success").await;
    c.close().await;
    let mut c = Client::connect(gw, &format!("/ws/accidents?token={t}")).await;
    let err = c.expect_error("error", "FORBIDDEN").await;
    assert_eq!(err["error"]["details"]["channel"], "accidents");
    assert_eq!(c.expect_prompt_close().await.code, 4003);
}

#[tokio::test]
async fn a_multiplexed_socket_with_a_token_without_subscribe_scope_is_forbidden_4003() {
    let t = token(TokenSpec {
        scope: Some("publish".into()),
        ..spec()
    });
    let mut c = Client::connect(gateway(), &format!("/ws?token={t}")).await;
    c.expect_error("error", "FORBIDDEN").await;
    assert_eq!(c.expect_prompt_close().await.code, 4003);
}

#[tokio::test]
async fn a_bad_auth_message_on_a_multiplexed_socket_closes_at_once() {
    let mut c = Client::connect(gateway(), "/ws").await;
    c.expect("rate_limit_info").await;
    c.send_json(json!({"type": "auth", "token": "nonsense"}))
        .await;
    c.expect_error("auth.failed", "AUTH_FAILED").await;
    assert_eq!(c.expect_prompt_close().await.code, 4001);
}

#[tokio::test]
async fn without_a_channels_claim_namespaced_channels_are_forbidden() {
    let t = token(spec());
    let gw = gateway();
    let mut c = Client::connect(gw, &format!("/ws/conversation:c-1?token={t}")).await;
    c.expect_error("error", "FORBIDDEN").await;
    assert_eq!(c.expect_prompt_close().await.code, 4003);
}

#[tokio::test]
async fn an_unknown_channel_is_channel_not_found_4004() {
    let gw = gateway();
    let mut c = Client::connect(gw, &format!("/ws/nonsense?token={}", sub_token())).await;
    c.expect_error("error", "CHANNEL_NOT_FOUND").await;
    assert_eq!(c.expect_prompt_close().await.code, 4004);
}

#[tokio::test]
async fn no_auth_message_within_the_timeout_is_auth_failed_4000() {
    // The shared gateway runs with AUTH_TIMEOUT_S=2.
    let gw = gateway();
    let mut c = Client::connect(gw, "/ws/alerts").await;
    c.expect("rate_limit_info").await;
    c.expect_error("auth.failed", "AUTH_FAILED").await;
    assert_eq!(c.expect_close().await.code, 4000);
}

#[tokio::test]
async fn the_auth_message_then_subscribe_back_to_back_works() {
    let gw = gateway();
    let mut c = Client::connect(gw, "/ws/alerts").await;
    c.send_json(json!({"type": "auth", "token": sub_token()}))
        .await;
    c.send_json(
        json!({"type": "subscribe", "channel": "alerts", "filters": {"priority": ["high"]}}),
    )
    .await;
    c.expect("rate_limit_info").await;
    let ok = c.expect("auth.success").await;
    assert_eq!(ok["data"]["sub"], "tester");
    assert!(ok["data"]["exp"].is_i64());
    assert!(ok["data"]["connection_id"].is_string());
    c.expect("subscribed").await;
    c.expect("snapshot").await;
    let sub = c.expect("subscribed").await;
    assert_eq!(sub["data"]["filters"]["priority"], json!(["high"]));
}

#[tokio::test]
async fn subscribe_before_auth_is_auth_failed_and_the_socket_stays_open() {
    let gw = gateway();
    let mut c = Client::connect(gw, "/ws/alerts").await;
    c.expect("rate_limit_info").await;
    c.send_json(json!({"type": "subscribe", "channel": "alerts"}))
        .await;
    c.expect_error("error", "AUTH_FAILED").await;
    c.send_json(json!({"type": "auth", "token": sub_token()}))
        .await;
    c.expect("auth.success").await;
}

#[tokio::test]
async fn a_live_connection_is_closed_when_its_token_expires() {
    // The shared gateway's leeway is 2 s: this token dies about 6 s from now.
    let t = token(TokenSpec {
        exp: Some(now_s() + 4),
        ..spec()
    });
    let gw = gateway();
    let (mut c, _) = Client::subscribed(gw, "alerts", &t).await;
    let err = c.next_json().await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["error"]["code"], "AUTH_EXPIRED");
    assert_eq!(c.expect_close().await.code, 4001);
}

#[tokio::test]
async fn a_socket_that_authenticated_by_message_is_closed_promptly_when_its_token_expires() {
    let gw = gateway();
    let t = token(TokenSpec {
        exp: Some(now_s() + 4),
        ..spec()
    });
    let mut c = Client::connect(gw, "/ws/alerts").await;
    c.send_json(json!({"type": "auth", "token": t})).await;
    c.expect("rate_limit_info").await;
    c.expect("auth.success").await;
    c.expect_where("the expiry", |m| m["error"]["code"] == "AUTH_EXPIRED")
        .await;
    assert_eq!(c.expect_prompt_close().await.code, 4001);
}

#[tokio::test]
async fn a_refresh_moves_the_expiry() {
    let gw = gateway();
    let t = token(TokenSpec {
        exp: Some(now_s() + 4),
        ..spec()
    });
    let (mut c, _) = Client::subscribed(gw, "alerts", &t).await;
    c.send_json(
        json!({"type": "auth", "token": token(TokenSpec { exp: Some(now_s() + 600), ..spec() })}),
    )
    .await;
    let ok = c.expect("auth.success").await;
    assert!(ok["data"]["exp"].as_i64().unwrap() > now_s());
    // What is awaited here is time itself: the old deadline (exp + 2 s leeway)
    // must pass, and the alarm that would have closed the socket must have run.
    let old_deadline = std::time::UNIX_EPOCH + std::time::Duration::from_secs((now_s() + 8) as u64);
    let wait = old_deadline
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait).await;
    c.send_json(json!({"type": "ping", "x": 1})).await;
    c.expect("pong").await;
}

#[tokio::test]
async fn publishing_needs_a_bearer_token_with_scope_publish() {
    let gw = gateway();
    let body = r#"{"channel":"alerts","type":"alert","data":{"id":"x"}}"#;
    let (status, v) = publish_raw(gw, body, None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("AUTH_FAILED"))
    );
    let (status, v) = publish_raw(gw, body, Some(&sub_token())).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("FORBIDDEN"))
    );
    let (status, v) = publish_raw(gw, body, Some(&mint(&spec(), b"wrong"))).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("AUTH_FAILED"))
    );
    let limited = token(TokenSpec {
        scope: Some("publish".into()),
        channels: Some(vec!["traffic.flow".into()]),
        ..spec()
    });
    let (status, v) = publish_raw(gw, body, Some(&limited)).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("FORBIDDEN"))
    );
}
