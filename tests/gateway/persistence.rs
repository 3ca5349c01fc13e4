//! The snapshot and the sequence survive a restart of `wrangler dev`.

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn the_snapshot_and_seq_survive_a_restart() {
    let dir = state_dir("restart");
    let gw = Gateway::start(&dir, &[]);
    publish_ok(
        &gw,
        "cameras.status",
        "cameras.status",
        json!({"camera_id": "CAM_9", "status": "active"}),
    )
    .await;
    let before = publish_ok(
        &gw,
        "cameras.status",
        "cameras.status",
        json!({"camera_id": "CAM_9", "status": "offline"}),
    )
    .await;
    gw.stop();

    let gw = Gateway::start(&dir, &[]);
    let (status, snap) = get(
        &gw,
        "/v1/channels/cameras.status/snapshot",
        Some(&sub_token()),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(snap["seq"], before);
    let events = snap["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{snap}");
    assert_eq!(events[0]["data"]["status"], "offline");
    let after = publish_ok(
        &gw,
        "cameras.status",
        "cameras.status",
        json!({"camera_id": "CAM_1", "status": "active"}),
    )
    .await;
    assert_eq!(after, before + 1, "seq continues where it stopped");
}
