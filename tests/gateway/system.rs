//! System status (SPEC "Two-way", `002_…`): an operator's announcement
//! reaches every socket on every hub and room, and greets new sockets.

use std::sync::OnceLock;

use serde_json::json;

use crate::common::*;

/// A gateway of its own: the status is global, so no other test may see it.
/// Sockets spread at random over its two hubs.
fn status_gateway() -> &'static Gateway {
    static GW: OnceLock<Gateway> = OnceLock::new();
    GW.get_or_init(|| {
        Gateway::start(
            &state_dir("status"),
            &[("HUB_SHARDS", "2"), ("HUB_FILL", "0")],
        )
    })
}

#[tokio::test]
async fn a_status_reaches_every_socket_and_greets_sockets_that_connect_meanwhile() {
    let gw = status_gateway();
    let mut a = Client::multiplexed(gw, &sub_token()).await;
    let mut b = multiplexed_on_another_hub(gw, &sub_token(), &a).await;
    let (mut d, _) = Client::subscribed(gw, "accidents", &sub_token()).await;

    let maintenance =
        json!({"status": "maintenance", "message": "upgrade", "reconnect_after_s": 30});
    let (status, refused) = post(gw, "/v1/system/status", &maintenance, Some(&sub_token())).await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (403, &json!("FORBIDDEN"))
    );
    let (status, bad) = post(
        gw,
        "/v1/system/status",
        &json!({"status": "asleep"}),
        Some(&admin_token()),
    )
    .await;
    assert_eq!(
        (status, &bad["error"]["details"]["field"]),
        (400, &json!("status"))
    );

    let (status, answer) = post(gw, "/v1/system/status", &maintenance, Some(&admin_token())).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "maintenance");
    assert!(answer["delivered"].as_u64().unwrap() >= 3, "{answer}");
    for c in [&mut a, &mut b, &mut d] {
        let m = c.expect_reply("system").await;
        assert_eq!(m["event"], "status");
        assert_eq!(m["data"]["status"], "maintenance");
        assert_eq!(m["data"]["message"], "upgrade");
        assert_eq!(m["data"]["reconnect_after_s"], 30);
        assert!(m["data"]["timestamp"].is_i64(), "{m}");
    }

    for path in ["/ws", "/ws/alerts"] {
        let mut late = Client::connect(gw, &format!("{path}?token={}", sub_token())).await;
        late.expect("auth.success").await;
        let m = late.expect("system").await;
        assert_eq!(m["data"]["status"], "maintenance", "{path}: {m}");
        late.expect("rate_limit_info").await;
    }
    let (_, current) = get(gw, "/v1/system/status", Some(&sub_token())).await;
    assert_eq!(current["status"], "maintenance");
    assert_eq!(current["message"], "upgrade");
    assert!(current["since"].is_i64());

    let (status, _) = post(
        gw,
        "/v1/system/status",
        &json!({"status": "online"}),
        Some(&admin_token()),
    )
    .await;
    assert_eq!(status, 200);
    let m = a.expect_reply("system").await;
    assert_eq!(m["data"]["status"], "online");
    let mut fresh = Client::connect(gw, &format!("/ws?token={}", sub_token())).await;
    fresh.expect("auth.success").await;
    fresh.expect("rate_limit_info").await;
}
