//! Multiplexed `/ws` sockets held by hub shards.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;
use uip_realtime::core::auth::TokenSpec;

use crate::common::*;

fn conversation(prefix: &str) -> String {
    format!("conversation:{}", unique(prefix))
}

#[tokio::test]
async fn one_socket_receives_several_channels_each_through_its_filters() {
    let gw = gateway();
    let chat = conversation("multi");
    let zone = unique("Z_");
    let mut c = Client::multiplexed(gw, &sub_token()).await;
    c.subscribe(&chat, json!(null)).await;
    c.subscribe("congestion", json!({"zones": [zone]})).await;

    publish_ok(
        gw,
        "congestion",
        "congestion.update",
        json!({"zone_id": unique("OTHER_"), "level": "low"}),
    )
    .await;
    publish_ok(
        gw,
        "congestion",
        "congestion.update",
        json!({"zone_id": zone, "level": "high"}),
    )
    .await;
    publish_ok(gw, &chat, "chat_message", json!({"content": "hi"})).await;

    let first = c.next_json().await;
    assert_eq!(
        (first["channel"].as_str(), first["data"]["zone_id"].as_str()),
        (Some("congestion"), Some(zone.as_str()))
    );
    let second = c.next_json().await;
    assert_eq!(
        (second["channel"].as_str(), second["type"].as_str()),
        (Some(chat.as_str()), Some("chat_message"))
    );
}

#[tokio::test]
async fn the_auth_message_and_subscribes_may_be_sent_back_to_back() {
    let gw = gateway();
    let chat = conversation("b2b");
    let mut c = Client::connect(gw, "/ws").await;
    c.send_json(json!({"type": "auth", "token": sub_token()}))
        .await;
    c.send_json(json!({"type": "subscribe", "channel": chat}))
        .await;
    c.send_json(
        json!({"type": "subscribe", "channel": "alerts", "filters": {"priority": ["high"]}}),
    )
    .await;
    c.expect("rate_limit_info").await;
    c.expect("auth.success").await;
    assert_eq!(
        c.expect("subscribed").await["data"]["channel"],
        chat.as_str()
    );
    c.expect("snapshot").await;
    assert_eq!(
        c.expect_reply("subscribed").await["data"]["channel"],
        "alerts"
    );
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let gw = gateway();
    let (a, b) = (conversation("u1"), conversation("u2"));
    let mut c = Client::multiplexed(gw, &sub_token()).await;
    c.subscribe(&a, json!(null)).await;
    c.subscribe(&b, json!(null)).await;
    c.send_json(json!({"type": "unsubscribe", "channel": a}))
        .await;
    assert_eq!(
        c.expect("unsubscribed").await["data"]["channel"],
        a.as_str()
    );
    let (_, body) = publish(gw, &json!({"channel": a, "type": "x", "data": {}})).await;
    assert_eq!(body["results"][0]["delivered"], 0);
    publish_ok(gw, &b, "marker", json!({})).await;
    assert_eq!(
        c.next_json().await["type"],
        "marker",
        "nothing from the unsubscribed channel came first"
    );
}

#[tokio::test]
async fn unsubscribing_from_a_channel_never_subscribed_is_answered() {
    let gw = gateway();
    let mut c = Client::multiplexed(gw, &sub_token()).await;
    c.send_json(json!({"type": "unsubscribe", "channel": "weather"}))
        .await;
    assert_eq!(c.expect("unsubscribed").await["data"]["channel"], "weather");
}

#[tokio::test]
async fn subscribing_twice_replaces_filters_without_a_second_copy() {
    let gw = gateway();
    let chat = conversation("twice");
    let mut c = Client::multiplexed(gw, &sub_token()).await;
    c.subscribe(&chat, json!(null)).await;
    c.subscribe(&chat, json!({})).await;
    let (_, body) = publish(gw, &json!({"channel": chat, "type": "one", "data": {}})).await;
    assert_eq!(body["results"][0]["delivered"], 1);
    c.expect("one").await;
    publish_ok(gw, &chat, "two", json!({})).await;
    c.expect("two").await;
}

#[tokio::test]
async fn the_eleventh_subscription_is_max_subscriptions_and_the_socket_stays_usable() {
    let gw = gateway();
    let mut c = Client::multiplexed(gw, &sub_token()).await;
    let base = unique("max");
    for i in 0..10 {
        c.subscribe(&format!("conversation:{base}-{i}"), json!(null))
            .await;
    }
    c.send_json(json!({"type": "subscribe", "channel": format!("conversation:{base}-10")}))
        .await;
    let e = c.expect_error("error", "MAX_SUBSCRIPTIONS").await;
    assert_eq!(e["error"]["details"]["max_subscriptions"], 10);
    c.send_json(json!({"type": "unsubscribe", "channel": format!("conversation:{base}-0")}))
        .await;
    c.expect("unsubscribed").await;
    c.subscribe(&format!("conversation:{base}-10"), json!(null))
        .await;
}

#[tokio::test]
async fn a_channel_outside_the_claim_is_forbidden_and_the_socket_stays_open() {
    let gw = gateway();
    let t = token(TokenSpec {
        scope: Some("subscribe".into()),
        channels: Some(vec!["traffic.*".into()]),
        exp: Some(now_s() + 600),
        ..Default::default()
    });
    let mut c = Client::multiplexed(gw, &t).await;
    c.send_json(json!({"type": "subscribe", "channel": "accidents"}))
        .await;
    let e = c.expect_error("error", "FORBIDDEN").await;
    assert_eq!(e["error"]["details"]["channel"], "accidents");
    c.send_json(json!({"type": "subscribe", "channel": "nowhere"}))
        .await;
    c.expect_error("error", "CHANNEL_NOT_FOUND").await;
    c.subscribe("traffic.flow", json!(null)).await;
}

#[tokio::test]
async fn bad_subscribe_fields_are_invalid_message_naming_the_field() {
    let gw = gateway();
    let mut c = Client::multiplexed(gw, &sub_token()).await;
    for (msg, field) in [
        (
            json!({"type": "subscribe", "channel": "accidents", "filters": {"colour": ["red"]}}),
            "filters.colour",
        ),
        (
            json!({"type": "subscribe", "channel": "accidents", "filters": {"severity": 3}}),
            "filters.severity",
        ),
        (
            json!({"type": "subscribe", "channel": "conversation:x", "filters": {"zones": ["Z"]}}),
            "filters",
        ),
        (
            json!({"type": "subscribe", "channel": "accidents", "since": "3"}),
            "since",
        ),
        (json!({"type": "unsubscribe"}), "channel"),
        (json!({"type": "unsubscribe", "channel": "a", "x": 1}), "x"),
    ] {
        c.send_json(msg.clone()).await;
        let e = c.expect_error("error", "INVALID_MESSAGE").await;
        assert_eq!(e["error"]["details"]["field"], field, "{msg}: {e}");
    }
}

#[tokio::test]
async fn the_burst_limit_closes_the_offender_with_4008_and_its_neighbours_keep_receiving() {
    let gw = gateway();
    let chat = conversation("burst");
    let mut neighbour = Client::multiplexed(gw, &sub_token()).await;
    neighbour.subscribe(&chat, json!(null)).await;
    let mut offender = Client::multiplexed(gw, &sub_token()).await;
    offender.subscribe(&chat, json!(null)).await;
    // One subscribe already counted; 50 more frames break the 50-per-5-s burst.
    for _ in 0..50 {
        offender.send_text(r#"{"type":"ping","n":1}"#).await;
    }
    loop {
        let m = offender.next_json().await;
        if m["type"] == "error" {
            assert_eq!(m["error"]["code"], "RATE_LIMIT_EXCEEDED");
            break;
        }
        assert_eq!(m["type"], "pong", "{m}");
    }
    assert_eq!(offender.expect_close().await.code, 4008);
    publish_ok(gw, &chat, "after", json!({})).await;
    neighbour.expect("after").await;
}

#[tokio::test]
async fn the_exact_ping_is_not_rate_limited() {
    let gw = gateway();
    let mut c = Client::multiplexed(gw, &sub_token()).await;
    for _ in 0..80 {
        c.send_text(r#"{"type":"ping"}"#).await;
    }
    for _ in 0..80 {
        assert_eq!(c.next_json().await, json!({"type": "pong"}));
    }
}

#[tokio::test]
async fn the_minute_limit_closes_with_4008() {
    // This gateway allows 100 frames a minute and bursts of 1000.
    let gw = limits_gateway();
    let mut c = Client::multiplexed(gw, &sub_token()).await;
    for _ in 0..101 {
        c.send_text(r#"{"type":"ping","n":1}"#).await;
    }
    for _ in 0..100 {
        c.expect("pong").await;
    }
    c.expect_error("error", "RATE_LIMIT_EXCEEDED").await;
    assert_eq!(c.expect_close().await.code, 4008);
}

#[tokio::test]
async fn a_frame_over_one_mebibyte_is_message_too_large_and_closes_1009() {
    let gw = gateway();
    let mut c = Client::multiplexed(gw, &sub_token()).await;
    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "a".repeat(1 << 20));
    c.send_text(&big).await;
    c.expect_error("error", "MESSAGE_TOO_LARGE").await;
    assert_eq!(c.expect_prompt_close().await.code, 1009);
}

#[tokio::test]
async fn an_expiring_token_closes_a_live_multiplexed_socket_and_a_refresh_keeps_another() {
    let gw = gateway();
    let spec = |exp| TokenSpec {
        scope: Some("subscribe".into()),
        exp: Some(exp),
        ..Default::default()
    };
    // The shared gateway's leeway is 2 s: these tokens die about 6 s from now.
    let mut doomed = Client::multiplexed(gw, &token(spec(now_s() + 4))).await;
    let mut kept = Client::multiplexed(gw, &token(spec(now_s() + 4))).await;
    kept.send_json(json!({"type": "auth", "token": token(spec(now_s() + 600))}))
        .await;
    kept.expect("auth.success").await;
    doomed.expect_error("error", "AUTH_EXPIRED").await;
    assert_eq!(doomed.expect_close().await.code, 4001);
    kept.send_json(json!({"type": "ping", "x": 1})).await;
    kept.expect("pong").await;
}

#[tokio::test]
async fn a_refresh_with_a_bad_token_is_auth_failed_4001() {
    let gw = gateway();
    let mut c = Client::multiplexed(gw, &sub_token()).await;
    c.send_json(json!({"type": "auth", "token": "nonsense"}))
        .await;
    c.expect_error("auth.failed", "AUTH_FAILED").await;
    assert_eq!(c.expect_close().await.code, 4001);
}

#[tokio::test]
async fn resume_through_a_hub_replays_exactly_what_was_missed() {
    let gw = gateway();
    let chat = conversation("hubresume");
    let mut c = Client::multiplexed(gw, &sub_token()).await;
    c.subscribe(&chat, json!(null)).await;
    publish_ok(gw, &chat, "n", json!({"n": 0})).await;
    let seen = c.expect("n").await["seq"].as_u64().unwrap();
    c.close().await;
    let mut last = 0;
    for n in 1..=50 {
        last = publish_ok(gw, &chat, "n", json!({"n": n})).await;
    }
    let publisher = {
        let chat = chat.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for n in 51..=80 {
                last = publish_ok(gateway(), &chat, "n", json!({"n": n})).await;
            }
            last
        })
    };
    let mut c = Client::multiplexed(gw, &sub_token()).await;
    c.send_json(json!({"type": "subscribe", "channel": chat, "since": seen}))
        .await;
    let sub = c.expect("subscribed").await;
    assert_eq!(sub["data"]["recovered"], true, "{sub}");
    assert!(sub["data"]["seq"].as_u64().unwrap() >= last);
    let last = publisher.await.unwrap();
    let mut seqs = Vec::new();
    while seqs.last() != Some(&last) {
        seqs.push(c.expect("n").await["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs, (seen + 1..=last).collect::<Vec<_>>());
}

#[tokio::test]
async fn an_old_since_through_a_hub_gets_recovered_false_and_the_snapshot() {
    let gw = gateway();
    let mut c = Client::multiplexed(gw, &sub_token()).await;
    c.send_json(json!({"type": "subscribe", "channel": "traffic.patterns", "since": 999_999}))
        .await;
    assert_eq!(c.expect("subscribed").await["data"]["recovered"], false);
    c.expect("snapshot").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sockets_over_several_hubs_each_get_every_event_once() {
    const SOCKETS: usize = 1000;
    const EVENTS: u64 = 20;
    let gw = gateway();
    let chat = conversation("thousand");
    let t = sub_token();
    let mut clients = Vec::with_capacity(SOCKETS);
    for _ in 0..(SOCKETS / 50) {
        let batch = (0..50).map(|_| async {
            let mut c = Client::multiplexed(gw, &t).await;
            c.subscribe(&chat, json!(null)).await;
            c
        });
        clients.extend(join_all(batch).await);
    }
    for n in 0..EVENTS {
        let (status, body) = publish(
            gw,
            &json!({"channel": chat, "type": "tick", "data": {"n": n}}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["results"][0]["delivered"], SOCKETS as u64, "{body}");
    }
    let (_, stats) = get(gw, "/v1/stats", Some(&t)).await;
    assert_eq!(
        stats["channels"][&chat]["subscribers"], SOCKETS as u64,
        "{stats}"
    );
    assert_eq!(stats["channels"][&chat]["seq"], EVENTS);
    let hubs: std::collections::BTreeSet<&str> = clients.iter().filter_map(Client::hub).collect();
    assert!(hubs.len() >= 2, "sockets landed on {hubs:?}");
    assert!(stats["connections"].as_u64().unwrap() >= SOCKETS as u64);
    let received = join_all(clients.into_iter().map(|mut c| async move {
        let mut seqs = Vec::with_capacity(EVENTS as usize);
        while seqs.len() < EVENTS as usize {
            seqs.push(c.expect("tick").await["seq"].as_u64().unwrap());
        }
        seqs
    }))
    .await;
    let expected: Vec<u64> = (1..=EVENTS).collect();
    for (i, seqs) in received.iter().enumerate() {
        assert_eq!(seqs, &expected, "socket {i}");
    }
}

#[tokio::test]
async fn a_burst_of_subscribers_on_a_hub_shares_one_attach_and_each_gets_the_next_event_once() {
    const SOCKETS: usize = 12;
    let gw = gateway();
    let chat = conversation("burst");
    let t = sub_token();
    let clients = join_all((0..SOCKETS).map(|_| Client::multiplexed(gw, &t))).await;
    let hubs: std::collections::BTreeSet<String> = clients
        .iter()
        .filter_map(Client::hub)
        .map(str::to_owned)
        .collect();
    let reused = "uip_hub_attaches_total{outcome=\"reused\"}";
    let before = at(&scrape(gw).await, reused);
    let mut clients = join_all(clients.into_iter().map(|mut c| {
        let chat = chat.clone();
        async move {
            c.subscribe(&chat, json!(null)).await;
            c
        }
    }))
    .await;
    // All but a hub's first subscriber reuse its answer (half of them at
    // least, for subscribes that reach a loaded test gateway's hub past the
    // reuse window); other tests' reuses can only add to the count.
    let grown = at(&scrape(gw).await, reused) - before;
    assert!(
        grown >= (SOCKETS - 2 * hubs.len()) as f64,
        "{grown} reused attaches for {SOCKETS} sockets on {} hubs",
        hubs.len()
    );
    publish_ok(gw, &chat, "chat_message", json!({"n": 1})).await;
    for c in &mut clients {
        assert_eq!(c.expect("chat_message").await["seq"], 1);
    }
    for c in &mut clients {
        let (frames, _) = c.frames_for(Duration::from_millis(300)).await;
        assert!(frames.is_empty(), "a second copy: {frames:?}");
    }
}

#[tokio::test]
async fn stats_count_hub_and_direct_subscribers_of_a_channel() {
    let gw = gateway();
    let chat = conversation("stats");
    let t = sub_token();
    let mut hubbed = Vec::new();
    for _ in 0..3 {
        let mut c = Client::multiplexed(gw, &t).await;
        c.subscribe(&chat, json!(null)).await;
        hubbed.push(c);
    }
    let (_direct, _) = Client::subscribed(gw, &chat, &t).await;
    publish_ok(gw, &chat, "x", json!({})).await;
    let (status, stats) = get(gw, "/v1/stats", Some(&t)).await;
    assert_eq!(status, 200);
    assert_eq!(
        stats["channels"][&chat],
        json!({"subscribers": 4, "seq": 1, "delivered": 4}),
        "{stats}"
    );
    assert_eq!(stats["hubs"], 4);
    let (status, _) = get(gw, "/v1/stats", None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_hub_woken_from_hibernation_delivers_the_next_event_once_and_keeps_its_counts() {
    let gw = quiet_gateway();
    let chat = conversation("asleep");
    let mut c = Client::multiplexed(gw, &sub_token()).await;
    c.subscribe(&chat, json!(null)).await;
    publish_ok(gw, &chat, "chat_message", json!({"n": 1})).await;
    assert_eq!(c.expect("chat_message").await["seq"], 1);
    let hub_starts = "uip_object_starts_total{object=\"hub\"}";
    let before = at(&scrape(gw).await, hub_starts);
    // Nothing reaches the hub for longer than the 10 s after which workerd
    // hibernates an idle object (its cursor is saved within 4 s).
    let (frames, closed) = c.frames_for(Duration::from_secs(16)).await;
    assert_eq!((frames.len(), closed), (0, None));
    publish_ok(gw, &chat, "chat_message", json!({"n": 2})).await;
    assert_eq!(c.expect("chat_message").await["seq"], 2);
    let (frames, _) = c.frames_for(Duration::from_secs(2)).await;
    assert!(frames.is_empty(), "repeated after the wake: {frames:?}");
    assert!(
        at(&scrape(gw).await, hub_starts) > before,
        "the hub never hibernated, so this showed nothing"
    );
    let (_, stats) = get(gw, "/v1/stats", Some(&sub_token())).await;
    assert_eq!(stats["channels"][&chat]["delivered"], 2, "{stats}");
}

/// A gateway of its own with three hub shards that take two sockets each
/// before the next: placement depends on every socket, so no other test may
/// connect here.
fn filling_gateway() -> &'static Gateway {
    static GW: std::sync::OnceLock<Gateway> = std::sync::OnceLock::new();
    GW.get_or_init(|| {
        Gateway::start(
            &state_dir("filling"),
            &[("HUB_SHARDS", "3"), ("HUB_FILL", "2")],
        )
    })
}

#[tokio::test]
async fn sockets_fill_one_hub_shard_before_the_next_and_then_spread() {
    let gw = filling_gateway();
    let t = sub_token();
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(Client::multiplexed(gw, &t).await);
    }
    let hubs: Vec<&str> = clients.iter().filter_map(Client::hub).collect();
    assert_eq!(hubs, ["hub-0", "hub-0", "hub-1", "hub-1", "hub-2", "hub-2"]);
    // Every shard holds its share now: the next ones spread at random (all
    // twelve on one shard would happen about once in 180,000 runs).
    let mut more = Vec::new();
    for _ in 0..12 {
        more.push(Client::multiplexed(gw, &t).await);
    }
    let spread: std::collections::BTreeSet<&str> = more.iter().filter_map(Client::hub).collect();
    assert!(spread.len() >= 2, "twelve sockets all landed on {spread:?}");
}
