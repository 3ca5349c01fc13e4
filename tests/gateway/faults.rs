//! Deliveries between the gateway's own objects fail, and nothing that was
//! acknowledged is lost: the gateway here drops every third push from a room
//! to a hub, and hubs repair the gaps from the room's history.

use std::collections::BTreeSet;

use serde_json::json;

use crate::common::*;

/// Reads channel events until `last` and returns their `seq`s in arrival order.
async fn seqs_until(c: &mut Client, last: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    loop {
        let m = c
            .expect_where("a channel event", |m| m["type"] == "n")
            .await;
        let seq = m["seq"].as_u64().expect("seq");
        seen.push(seq);
        if seq >= last {
            return seen;
        }
    }
}

#[tokio::test]
async fn every_socket_gets_every_acknowledged_event_once_in_order_while_pushes_fail() {
    let gw = faulty_gateway();
    let chat = format!("conversation:{}", unique("faults"));
    let mut hub_clients = Vec::new();
    for _ in 0..12 {
        let mut c = Client::multiplexed(gw, &sub_token()).await;
        c.subscribe(&chat, json!(null)).await;
        hub_clients.push(c);
    }
    let hubs: std::collections::BTreeSet<&str> =
        hub_clients.iter().filter_map(Client::hub).collect();
    assert!(hubs.len() >= 2, "sockets landed on {hubs:?}");
    let (direct, _) = Client::subscribed(gw, &chat, &sub_token()).await;
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let chat = chat.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for n in 0..20 {
                    let id = format!("p{p}-{n}");
                    let body = json!({"channel": chat, "type": "n", "id": id, "data": {"n": n}});
                    let (status, answer) = publish(faulty_gateway(), &body).await;
                    assert_eq!(status, 200, "{answer}");
                    acked.push(answer["results"][0]["seq"].as_u64().unwrap());
                }
                acked
            })
        })
        .collect();
    let mut acked = BTreeSet::new();
    for p in publishers {
        acked.extend(p.await.unwrap());
    }
    let expected: Vec<u64> = acked.iter().copied().collect();
    assert_eq!(expected, (1..=80).collect::<Vec<u64>>());
    let mut clients = hub_clients;
    clients.push(direct);
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(seqs_until(c, 80).await, expected, "socket {i}");
    }
}

#[tokio::test]
async fn a_lost_last_push_still_arrives_without_another_publish() {
    let gw = faulty_gateway();
    let chat = format!("conversation:{}", unique("lastpush"));
    let mut c = Client::multiplexed(gw, &sub_token()).await;
    c.subscribe(&chat, json!(null)).await;
    // Three publishes make sure one push in three is dropped, whichever the
    // room's count starts at; nothing is published after them.
    for n in 0..3 {
        publish_ok(gw, &chat, "n", json!({"n": n})).await;
    }
    assert_eq!(seqs_until(&mut c, 3).await, vec![1, 2, 3]);
}
