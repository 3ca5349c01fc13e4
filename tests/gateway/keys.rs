//! Production tokens: RS256 and ES256 verified with keys from
//! `JWT_PUBLIC_KEYS` (PEM) and a JWKS served by a local HTTP server, beside
//! HS256, and every refusal SPEC names for them.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use uip_realtime::core::auth::{mint_signed, Signer, TokenSpec};

use crate::common::*;

fn spec() -> TokenSpec {
    TokenSpec {
        sub: Some("idp-user".into()),
        scope: Some("subscribe".into()),
        exp: Some(now_s() + 600),
        ..TokenSpec::default()
    }
}

fn es256(key: &p256::ecdsa::SigningKey, kid: &str) -> String {
    mint_signed(&spec(), Signer::Es256(key), Some(kid))
}

/// Connects to `/ws/alerts?token=…` on `gw`; the first frame.
async fn first_frame(gw: &Gateway, token: &str) -> Value {
    let mut c = Client::connect(gw, &format!("/ws/alerts?token={token}")).await;
    c.next_json().await
}

async fn assert_accepted(gw: &Gateway, token: &str) {
    let m = first_frame(gw, token).await;
    assert_eq!(m["type"], "auth.success", "{m}");
    assert_eq!(m["data"]["sub"], "idp-user");
}

/// Asserts the token is refused with `AUTH_FAILED`; returns the message.
async fn assert_refused(gw: &Gateway, token: &str) -> String {
    let mut c = Client::connect(gw, &format!("/ws/alerts?token={token}")).await;
    let m = c.expect_error("auth.failed", "AUTH_FAILED").await;
    assert_eq!(c.expect_prompt_close().await.code, 4001);
    m["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn an_rs256_token_verifies_with_a_pem_key() {
    let t = mint_signed(&spec(), Signer::Rs256(&test_keys().pem_rsa), None);
    assert_accepted(keys_gateway(), &t).await;
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_with_jwks_keys_picked_by_kid() {
    let gw = keys_gateway();
    let k = test_keys();
    assert_accepted(
        gw,
        &mint_signed(&spec(), Signer::Rs256(&k.jwks_rsa), Some("rsa-j")),
    )
    .await;
    assert_accepted(gw, &es256(&k.ec_a, "ec-a")).await;
}

#[tokio::test]
async fn an_es256_token_verifies_as_an_auth_message_too() {
    let gw = keys_gateway();
    let mut c = Client::connect(gw, "/ws").await;
    c.expect("rate_limit_info").await;
    c.send_json(json!({"type": "auth", "token": es256(&test_keys().ec_a, "ec-a")}))
        .await;
    c.expect("auth.success").await;
}

#[tokio::test]
async fn hs256_keeps_working_beside_public_keys() {
    let t = token(spec());
    let m = first_frame(keys_gateway(), &t).await;
    assert_eq!(m["type"], "auth.success", "{m}");
}

#[tokio::test]
async fn alg_none_is_refused() {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let t = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","kid":"ec-a"}"#),
        b64.encode(format!(r#"{{"sub":"x","exp":{}}}"#, now_s() + 60))
    );
    assert!(assert_refused(keys_gateway(), &t).await.contains("none"));
}

#[tokio::test]
async fn an_hs256_token_naming_an_rsa_kid_is_refused() {
    let t = mint_signed(&spec(), Signer::Hs256(SECRET.as_bytes()), Some("rsa-j"));
    let msg = assert_refused(keys_gateway(), &t).await;
    assert!(msg.contains("rsa-j"), "{msg}");
}

#[tokio::test]
async fn a_wrong_key_for_the_kid_is_refused() {
    let t = es256(&test_keys().ec_b, "ec-a");
    let msg = assert_refused(keys_gateway(), &t).await;
    assert!(msg.contains("signature"), "{msg}");
}

#[tokio::test]
async fn an_unknown_kid_is_refused() {
    let t = es256(&test_keys().ec_a, "nobody");
    let msg = assert_refused(keys_gateway(), &t).await;
    assert!(msg.contains("nobody"), "{msg}");
}

#[tokio::test]
async fn a_producer_may_publish_with_an_rs256_token() {
    let gw = keys_gateway();
    let producer = TokenSpec {
        scope: Some("publish".into()),
        ..spec()
    };
    let t = mint_signed(&producer, Signer::Rs256(&test_keys().pem_rsa), None);
    let body =
        json!({"channel": format!("conversation:{}", unique("rs")), "type": "n", "data": {}});
    let (status, answer) = publish_to(&gw.http(), &body.to_string(), Some(&t))
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
}

/// The JWKS changes under a running gateway: dropped keys stop working, and
/// a JWKS that is down, slow or garbage leaves cached keys in force while
/// tokens with other keys are refused naming the problem, within 2 s.
#[tokio::test]
async fn a_changing_jwks_is_followed_and_its_failures_are_named() {
    let (server, gw) = rotating_keys_gateway();
    let k = test_keys();
    let refresh = Duration::from_millis(1100);
    assert_accepted(gw, &es256(&k.ec_a, "ec-a")).await;

    // Rotation: ec-a dropped, ec-b added.
    server.answer(JwksAnswer::Body(jwks_doc(vec![jwk(
        k.ec_b.verifying_key().into(),
        "ec-b",
    )])));
    tokio::time::sleep(refresh).await;
    assert_accepted(gw, &es256(&k.ec_b, "ec-b")).await;
    let msg = assert_refused(gw, &es256(&k.ec_a, "ec-a")).await;
    assert!(msg.contains("ec-a"), "a dropped key: {msg}");

    for (answer, named) in [
        (JwksAnswer::Body("<html>oops</html>".into()), "not JSON"),
        (JwksAnswer::Down, "HTTP 500"),
        (JwksAnswer::Slow(Duration::from_secs(6)), "within 2 s"),
    ] {
        server.answer(answer);
        tokio::time::sleep(refresh).await;
        let started = Instant::now();
        let msg = assert_refused(gw, &es256(&k.ec_a, &unique("kid-"))).await;
        assert!(msg.contains(named), "expected '{named}' in: {msg}");
        assert!(
            started.elapsed() < Duration::from_millis(3500),
            "the refusal waited {:?} on the JWKS",
            started.elapsed()
        );
        assert_accepted(gw, &es256(&k.ec_b, "ec-b")).await;
    }
}
