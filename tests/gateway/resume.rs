//! Nothing lost: history, resume with `since`, idempotent publishing, restarts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

fn conversation(prefix: &str) -> String {
    format!("conversation:{}", unique(prefix))
}

/// Connects with `?since=` and returns the client and its `subscribed` message.
async fn resume(gw: &Gateway, channel: &str, since: u64) -> (Client, Value) {
    let mut c = Client::connect(
        gw,
        &format!("/ws/{channel}?token={}&since={since}", sub_token()),
    )
    .await;
    c.expect("auth.success").await;
    c.expect("rate_limit_info").await;
    let sub = c.expect("subscribed").await;
    (c, sub)
}

/// Reads channel events until one with `seq` == `last`, returning every seq seen.
async fn seqs_until(c: &mut Client, last: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.last() != Some(&last) {
        let m = c.next_json().await;
        seqs.push(
            m["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("not an event: {m}")),
        );
    }
    seqs
}

#[tokio::test]
async fn a_subscriber_that_missed_fifty_events_resumes_with_each_exactly_once() {
    let gw = gateway();
    let channel = conversation("resume");
    let (mut c, _) = Client::subscribed(gw, &channel, &sub_token()).await;
    publish_ok(gw, &channel, "chat_message", json!({"n": 0})).await;
    let seen = c.expect("chat_message").await["seq"].as_u64().unwrap();
    c.close().await;

    let mut last = 0;
    for n in 1..=50 {
        last = publish_ok(gw, &channel, "chat_message", json!({"n": n})).await;
    }
    let (mut c, sub) = resume(gw, &channel, seen).await;
    assert_eq!(sub["data"]["recovered"], true, "{sub}");
    assert_eq!(sub["data"]["seq"], last);
    assert_eq!(
        seqs_until(&mut c, last).await,
        (seen + 1..=last).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_resume_while_a_publisher_keeps_publishing_has_no_gap_or_duplicate_at_the_seam() {
    let gw = gateway();
    let channel = conversation("seam");
    for n in 0..20 {
        publish_ok(gw, &channel, "tick", json!({"n": n})).await;
    }
    let publisher = {
        let channel = channel.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for n in 20..80 {
                last = publish_ok(gateway(), &channel, "tick", json!({"n": n})).await;
            }
            last
        })
    };
    let (mut c, sub) = resume(gw, &channel, 5).await;
    assert_eq!(sub["data"]["recovered"], true);
    let last = publisher.await.unwrap();
    assert_eq!(
        seqs_until(&mut c, last).await,
        (6..=last).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_since_older_than_the_window_gets_recovered_false_and_the_snapshot() {
    // The shared gateway keeps 100 events of history.
    let gw = gateway();
    let channel = "air-quality";
    let station = unique("ST_");
    let mut last = 0;
    for n in 0..105 {
        last = publish_ok(
            gw,
            channel,
            "air-quality.update",
            json!({"location": station, "aqi": n}),
        )
        .await;
    }
    let (mut c, sub) = resume(gw, channel, last - 103).await;
    assert_eq!(sub["data"]["recovered"], false, "{sub}");
    let snap = c.expect_reply("snapshot").await;
    let mine: Vec<&Value> = snap["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"]["location"] == station.as_str())
        .collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["data"]["aqi"], 104);
}

#[tokio::test]
async fn a_since_ahead_of_the_head_gets_recovered_false_and_the_snapshot() {
    let gw = gateway();
    let channel = conversation("ahead");
    publish_ok(gw, &channel, "x", json!({})).await;
    let (mut c, sub) = resume(gw, &channel, 999).await;
    assert_eq!(sub["data"]["recovered"], false);
    assert_eq!(c.expect("snapshot").await["data"]["events"], json!([]));
}

#[tokio::test]
async fn a_bad_since_on_the_url_is_invalid_message_and_the_socket_subscribes_without_it() {
    let gw = gateway();
    let channel = conversation("badsince");
    let mut c = Client::connect(gw, &format!("/ws/{channel}?token={}&since=-4", sub_token())).await;
    let e = c.expect_error("error", "INVALID_MESSAGE").await;
    assert_eq!(e["error"]["details"]["field"], "since");
    c.expect("auth.success").await;
    c.expect("rate_limit_info").await;
    assert!(c.expect("subscribed").await["data"]
        .get("recovered")
        .is_none());
    c.expect("snapshot").await;
}

#[tokio::test]
async fn the_same_id_published_twice_is_stored_and_delivered_once() {
    let gw = gateway();
    let channel = conversation("idem");
    let (mut c, _) = Client::subscribed(gw, &channel, &sub_token()).await;
    let event =
        json!({"channel": channel, "type": "notification", "data": {"n": 1}, "id": "evt-1"});
    let (_, first) = publish(gw, &event).await;
    let (status, again) = publish(gw, &event).await;
    assert_eq!(status, 200);
    let (r1, r2) = (&first["results"][0], &again["results"][0]);
    assert_eq!(r2["seq"], r1["seq"]);
    assert_eq!(r2["delivered"], 0);
    assert_eq!(r2["duplicate"], true);
    assert!(r1.get("duplicate").is_none());
    publish_ok(gw, &channel, "marker", json!({})).await;
    assert_eq!(c.expect("notification").await["id"], "evt-1");
    c.expect("marker").await;
    let (_, h) = get(
        gw,
        &format!("/v1/channels/{channel}/history"),
        Some(&sub_token()),
    )
    .await;
    assert_eq!(h["events"].as_array().unwrap().len(), 2, "stored once: {h}");
}

#[tokio::test]
async fn concurrent_publishes_of_one_id_are_stored_once_and_each_copy_is_answered_its_seq() {
    let gw = gateway();
    let channel = conversation("gathered");
    // A hub subscriber keeps each publish in progress until its hub answers,
    // so the room is busy and gathers the concurrent requests into one write.
    let mut c = Client::connect(gw, &format!("/ws?token={}", sub_token())).await;
    c.expect("auth.success").await;
    c.expect("rate_limit_info").await;
    c.subscribe(&channel, json!(null)).await;
    let publishes = (0..16).map(|n| {
        let event = json!({"channel": channel, "type": "n", "data": {"n": n % 8}, "id": format!("id-{}", n % 8)});
        async move { publish(gateway(), &event).await }
    });
    let answers = futures_util::future::join_all(publishes).await;
    let mut seq_of_id: BTreeMap<String, Vec<(u64, bool)>> = BTreeMap::new();
    for (n, (status, body)) in answers.iter().enumerate() {
        assert_eq!(status, &200, "{body}");
        let r = &body["results"][0];
        let copy = (r["seq"].as_u64().unwrap(), r["duplicate"] == true);
        seq_of_id
            .entry(format!("id-{}", n % 8))
            .or_default()
            .push(copy);
    }
    for (id, copies) in &seq_of_id {
        assert_eq!(copies[0].0, copies[1].0, "{id}: both copies answer one seq");
        assert_eq!(
            copies.iter().filter(|(_, dup)| *dup).count(),
            1,
            "{id}: exactly one copy is the duplicate: {copies:?}"
        );
    }
    let mut stored: Vec<u64> = seq_of_id.values().map(|c| c[0].0).collect();
    stored.sort_unstable();
    assert_eq!(stored, (1..=8).collect::<Vec<u64>>());
    assert_eq!(
        seqs_until(&mut c, 8).await,
        stored,
        "each stored once, in order"
    );
}

#[tokio::test]
async fn duplicate_ids_inside_one_batch_are_stored_once() {
    let gw = gateway();
    let channel = conversation("batchdup");
    let e = json!({"channel": channel, "type": "n", "data": {}, "id": "same"});
    let (status, v) = publish(gw, &json!({"events": [e, e]})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["results"][0]["seq"], 1);
    assert_eq!(
        v["results"][1],
        json!({"channel": channel, "seq": 1, "delivered": 0, "duplicate": true})
    );
}

#[tokio::test]
async fn history_pages_through_retained_events() {
    let gw = gateway();
    let channel = conversation("pages");
    for n in 0..25 {
        publish_ok(gw, &channel, "n", json!({"n": n})).await;
    }
    let t = sub_token();
    let mut since = 0;
    let mut seen = Vec::new();
    loop {
        let (status, page) = get(
            gw,
            &format!("/v1/channels/{channel}/history?since={since}&limit=10"),
            Some(&t),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(
            (page["channel"].as_str(), page["head"].as_u64()),
            (Some(channel.as_str()), Some(25))
        );
        assert_eq!(page["recovered"], true);
        let events = page["events"].as_array().unwrap();
        if events.is_empty() {
            break;
        }
        assert!(events.len() <= 10);
        seen.extend(events.iter().map(|e| e["seq"].as_u64().unwrap()));
        since = *seen.last().unwrap();
    }
    assert_eq!(seen, (1..=25).collect::<Vec<_>>());
}

#[tokio::test]
async fn bad_history_queries_are_400_naming_the_field() {
    let gw = gateway();
    let t = sub_token();
    for (query, field) in [
        ("since=-1", "since"),
        ("since=abc", "since"),
        ("since=123456789012345678901234567890", "since"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
    ] {
        let (status, v) = get(
            gw,
            &format!("/v1/channels/alerts/history?{query}"),
            Some(&t),
        )
        .await;
        assert_eq!(status, 400, "{query}: {v}");
        assert_eq!(v["error"]["details"]["field"], field, "{query}");
    }
    let (status, v) = get(gw, "/v1/channels/alerts/history?since=999999", Some(&t)).await;
    assert_eq!(
        (status, v["recovered"].as_bool()),
        (200, Some(false)),
        "ahead of head: {v}"
    );
}

/// Publishes events 0..total with ids, retrying each until acknowledged (the
/// gateway may be down in between); returns acknowledged seq per event.
async fn publish_through_restart(
    base: Arc<Mutex<String>>,
    channel: String,
    total: u64,
) -> Vec<u64> {
    let token = pub_token();
    let mut acked = Vec::new();
    for n in 0..total {
        let body = json!({"channel": channel, "type": "tick", "data": {"n": n}, "id": format!("tick-{n}")}).to_string();
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let url = base.lock().unwrap().clone();
            // While the gateway is down its port may be taken by another
            // test's server: only an answer with a seq is an acknowledgement.
            if let Ok((200, v)) = publish_to(&url, &body, Some(&token)).await {
                if let Some(seq) = v["results"][0]["seq"].as_u64() {
                    acked.push(seq);
                    break;
                }
            }
            assert!(Instant::now() < deadline, "event {n} never acknowledged");
            // A retry pause while the gateway restarts, not a wait for an event.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_stream_loses_nothing_acknowledged() {
    const TOTAL: u64 = 60;
    let dir = state_dir("midstream");
    let gw = Gateway::start(&dir, &[]);
    let channel = conversation("restart");
    let base = Arc::new(Mutex::new(gw.http()));
    let mut received: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    let mut clients = Vec::new();
    for i in 0..2 {
        clients.push(Client::subscribed(&gw, &channel, &sub_token()).await.0);
        received.insert(i, Vec::new());
    }
    let publisher = tokio::spawn(publish_through_restart(
        base.clone(),
        channel.clone(),
        TOTAL,
    ));

    // Let part of the stream through, then stop the gateway under the publisher.
    for (i, c) in clients.iter_mut().enumerate() {
        while received[&i].len() < 15 {
            let m = c.next_json().await;
            received
                .get_mut(&i)
                .unwrap()
                .push(m["seq"].as_u64().unwrap());
        }
    }
    gw.stop();
    for (i, c) in clients.iter_mut().enumerate() {
        while let Some(m) = c.try_next_json(WAIT).await {
            if let Some(seq) = m["seq"].as_u64() {
                received.get_mut(&i).unwrap().push(seq);
            }
        }
    }
    let gw = Gateway::start(&dir, &[]);
    *base.lock().unwrap() = gw.http();
    let acked = publisher.await.unwrap();
    let last = *acked.iter().max().unwrap();

    for (i, seqs) in received.iter_mut() {
        let since = *seqs.last().unwrap();
        let (mut c, sub) = resume(&gw, &channel, since).await;
        assert_eq!(sub["data"]["recovered"], true, "{sub}");
        if since < last {
            seqs.extend(seqs_until(&mut c, last).await);
        }
        let mut expected = acked.clone();
        expected.sort_unstable();
        assert_eq!(
            seqs, &expected,
            "subscriber {i}: every acknowledged seq exactly once, in order"
        );
    }
    assert_eq!(
        acked,
        (1..=TOTAL).collect::<Vec<_>>(),
        "seq continues across the restart"
    );
}
