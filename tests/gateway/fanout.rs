//! Fan-out loses nothing: many sockets, events back to back.

use futures_util::future::join_all;
use serde_json::json;

use crate::common::*;

const SOCKETS: usize = 500;
const EVENTS: u64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_sockets_each_receive_fifty_events_in_seq_order() {
    let gw = gateway();
    let channel = format!("conversation:{}", unique("fan"));
    let token = sub_token();
    let mut clients = Vec::with_capacity(SOCKETS);
    for _ in 0..(SOCKETS / 50) {
        let batch = (0..50).map(|_| Client::subscribed(gw, &channel, &token));
        clients.extend(join_all(batch).await.into_iter().map(|(c, _)| c));
    }

    for n in 0..EVENTS {
        let (status, body) = publish(
            gw,
            &json!({"channel": channel, "type": "tick", "data": {"n": n}}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["results"][0]["delivered"], SOCKETS as u64, "{body}");
    }

    let received = join_all(clients.into_iter().map(|mut c| async move {
        let mut seqs = Vec::with_capacity(EVENTS as usize);
        while seqs.len() < EVENTS as usize {
            let m = c.expect("tick").await;
            seqs.push(m["seq"].as_u64().unwrap());
        }
        seqs
    }))
    .await;
    let expected: Vec<u64> = (1..=EVENTS).collect();
    for (i, seqs) in received.iter().enumerate() {
        assert_eq!(seqs, &expected, "socket {i}");
    }
}
