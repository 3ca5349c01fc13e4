//! Two-way sockets (SPEC "Two-way"): client publish on both routes, commands
//! forwarded to a backend the test runs, and presence across hubs and rooms.

use serde_json::{json, Value};

use crate::common::*;

/// Whether a message is a chat event of `channel`.
fn is_chat(channel: &str) -> impl Fn(&Value) -> bool + '_ {
    move |m| m["type"] == "chat_message" && m["channel"] == channel
}

/// A socket in a chat: it publishes and keeps the `seq`s of the channel's
/// chat events it receives, also those that arrive while it awaits answers.
struct Chatter {
    client: Client,
    channel: String,
    seqs: Vec<u64>,
}

impl Chatter {
    fn new(client: Client, channel: &str) -> Self {
        Chatter {
            client,
            channel: channel.to_owned(),
            seqs: Vec::new(),
        }
    }

    /// The next message that `pick` accepts, noting chat events on the way.
    async fn reply(&mut self, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
        loop {
            let chat = is_chat(&self.channel);
            let m = self.client.expect_where(what, |m| pick(m) || chat(m)).await;
            if pick(&m) {
                return m;
            }
            self.seqs.push(m["seq"].as_u64().unwrap());
        }
    }

    /// Publishes a chat message and returns the `published` answer (or error).
    async fn say(&mut self, text: &str, id: &str) -> Value {
        self.client
            .send_json(
                json!({"type": "publish", "channel": self.channel, "event": "chat_message",
                              "data": {"text": text}, "id": id}),
            )
            .await;
        self.reply("published", |m| {
            m["type"] == "published" || m["type"] == "error"
        })
        .await
    }

    /// The chat `seq`s received, once `last` has arrived.
    async fn seqs_through(&mut self, last: u64) -> Vec<u64> {
        while self.seqs.last() != Some(&last) {
            let m = self
                .client
                .expect_where("a chat event", is_chat(&self.channel))
                .await;
            self.seqs.push(m["seq"].as_u64().unwrap());
        }
        self.seqs.clone()
    }
}

/// Publishes from a socket and returns the `published` answer or error.
async fn publish_from(c: &mut Client, channel: &str, text: &str, id: &str) -> Value {
    c.send_json(
        json!({"type": "publish", "channel": channel, "event": "chat_message",
                       "data": {"text": text}, "id": id}),
    )
    .await;
    c.expect_where("published", |m| {
        m["type"] == "published" || m["type"] == "error"
    })
    .await
}

/// Connects to `/ws/{channel}` with a token and reads the connect sequence;
/// the client's `connection_id` is set.
async fn direct(gw: &Gateway, channel: &str, token: &str) -> Client {
    let mut c = Client::connect(gw, &format!("/ws/{channel}?token={token}")).await;
    let ok = c.expect("auth.success").await;
    c.connection_id = ok["data"]["connection_id"].as_str().map(str::to_owned);
    c.expect("rate_limit_info").await;
    c.expect("subscribed").await;
    c.expect("snapshot").await;
    c
}

async fn next_presence(c: &mut Client, kind: &str, who: &Client) -> Value {
    let id = who.connection_id.clone().unwrap();
    c.expect_where(kind, |m| {
        m["type"] == kind && m["data"]["connection_id"] == id.as_str()
    })
    .await
}

async fn presence_request(c: &mut Client, channel: &str) -> Value {
    c.send_json(json!({"type": "presence", "channel": channel}))
        .await;
    c.expect_where("presence", |m| {
        m["type"] == "presence" || m["type"] == "error"
    })
    .await
}

fn member_ids(members: &Value) -> Vec<String> {
    let mut ids: Vec<String> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["connection_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn ids_of(clients: &[&Client]) -> Vec<String> {
    let mut ids: Vec<String> = clients
        .iter()
        .map(|c| c.connection_id.clone().unwrap())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_chat_between_a_hub_socket_and_a_direct_socket_is_ordered_stored_and_idempotent() {
    let (_, gw) = two_way_gateway();
    let channel = unique("conversation:chat-");
    let mut alice = Client::multiplexed(gw, &talker_token("alice")).await;
    alice.subscribe(&channel, json!({})).await;
    let mut alice = Chatter::new(alice, &channel);
    let mut bob = Chatter::new(direct(gw, &channel, &talker_token("bob")).await, &channel);

    let first = alice.say("hi bob", "m1").await;
    assert_eq!(first["data"]["seq"], 1, "{first}");
    assert_eq!(first["data"]["id"], "m1");
    let second = bob.say("hi alice", "m2").await;
    assert_eq!(second["data"]["seq"], 2, "{second}");
    let retry = alice.say("hi bob", "m1").await;
    assert_eq!(
        (&retry["data"]["seq"], &retry["data"]["duplicate"]),
        (&json!(1), &json!(true)),
        "a retry with the same id answers the first seq: {retry}"
    );
    let third = bob.say("bye", "m3").await;
    assert_eq!(third["data"]["seq"], 3);

    assert_eq!(alice.seqs_through(3).await, [1, 2, 3]);
    assert_eq!(bob.seqs_through(3).await, [1, 2, 3]);
    let (status, history) = get(
        gw,
        &format!("/v1/channels/{channel}/history?since=0"),
        Some(&sub_token()),
    )
    .await;
    assert_eq!(status, 200, "{history}");
    let texts: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["hi bob", "hi alice", "bye"]);
}

#[tokio::test]
async fn a_socket_without_publish_scope_is_forbidden_and_keeps_working() {
    let (_, gw) = two_way_gateway();
    let channel = unique("conversation:readonly-");
    let mut hub = Client::multiplexed(gw, &sub_token()).await;
    let mut room = direct(gw, &channel, &sub_token()).await;
    for c in [&mut hub, &mut room] {
        let refused = publish_from(c, &channel, "may I?", "x1").await;
        assert_eq!(refused["error"]["code"], "FORBIDDEN", "{refused}");
        c.send_text(r#"{ "type": "ping" }"#).await;
        c.expect_reply("pong").await;
    }
    let (_, history) = get(
        gw,
        &format!("/v1/channels/{channel}/history?since=0"),
        Some(&sub_token()),
    )
    .await;
    assert_eq!(history["events"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn a_socket_publish_with_bad_fields_names_what_is_wrong() {
    let (_, gw) = two_way_gateway();
    let channel = unique("conversation:bad-");
    let mut c = Client::multiplexed(gw, &talker_token("mallory")).await;
    for (message, code, field) in [
        (
            json!({"type": "publish", "channel": channel, "data": {}}),
            "INVALID_MESSAGE",
            Some("event"),
        ),
        (
            json!({"type": "publish", "channel": channel, "event": "chat_message", "data": 5}),
            "INVALID_MESSAGE",
            Some("data"),
        ),
        (
            json!({"type": "publish", "channel": channel, "event": "chat_message", "data": {}, "colour": 1}),
            "INVALID_MESSAGE",
            Some("colour"),
        ),
        (
            json!({"type": "publish", "channel": "accidents", "event": "accidents.new", "data": {}}),
            "INVALID_MESSAGE",
            Some("data.id"),
        ),
        (
            json!({"type": "publish", "channel": "accidents", "event": "dance", "data": {"id": "A"}}),
            "INVALID_MESSAGE",
            Some("event"),
        ),
        (
            json!({"type": "publish", "channel": "nowhere", "event": "x", "data": {}}),
            "CHANNEL_NOT_FOUND",
            None,
        ),
    ] {
        c.send_json(message.clone()).await;
        let e = c.expect_error("error", code).await;
        if let Some(field) = field {
            assert_eq!(e["error"]["details"]["field"], field, "{message} → {e}");
        }
    }
    let ok = publish_from(&mut c, &channel, "still here", "ok1").await;
    assert_eq!(ok["data"]["seq"], 1, "{ok}");
}

#[tokio::test]
async fn a_command_reaches_the_backend_and_its_answer_comes_back_on_both_routes() {
    let (backend, gw) = two_way_gateway();
    let camera = unique("cam_");
    let mut hub = Client::multiplexed(gw, &talker_token("operator")).await;
    let mut room = direct(gw, &unique("conversation:cmd-"), &talker_token("operator")).await;
    for (c, id) in [(&mut hub, "c1"), (&mut room, "c2")] {
        c.send_json(
            json!({"type": "stream_control", "action": "start", "camera_id": camera, "id": id}),
        )
        .await;
        let result = c.expect_reply("stream_control.result").await;
        assert_eq!(result["id"], id, "{result}");
        assert_eq!(result["data"]["ok"], true);
        assert_eq!(result["data"]["echo"]["camera_id"], camera.as_str());
        assert!(result["timestamp"].is_string());
    }
    let seen = backend.seen.lock().unwrap().clone();
    let (auth, body) = seen
        .iter()
        .find(|(_, b)| b["message"]["camera_id"] == camera.as_str() && b["message"]["id"] == "c1")
        .expect("the backend got the hub socket's command");
    assert_eq!(
        auth.as_deref(),
        Some(format!("Bearer {COMMAND_SECRET}").as_str())
    );
    assert_eq!(body["command"], "stream_control");
    assert_eq!(body["sub"], "operator");
    assert_eq!(
        body["connection_id"],
        hub.connection_id.clone().unwrap().as_str()
    );
    assert_eq!(body["channels"], json!(["*"]));
    assert_eq!(body["message"]["action"], "start");
}

#[tokio::test]
async fn backend_failures_are_command_failed_with_the_status_or_reason() {
    let (_, gw) = two_way_gateway();
    let mut c = Client::multiplexed(gw, &talker_token("operator")).await;
    for (action, key, value) in [
        ("fail", "status", json!(500)),
        ("garbage", "reason", json!("invalid_response")),
        ("drop", "reason", json!("unreachable")),
        ("hang", "reason", json!("timeout")),
    ] {
        c.send_json(json!({"type": "stream_control", "action": action, "id": action}))
            .await;
        let e = c.expect_error("error", "COMMAND_FAILED").await;
        let details = &e["error"]["details"];
        assert_eq!(details["command"], "stream_control", "{e}");
        assert_eq!(details["id"], action, "{e}");
        assert_eq!(details[key], value, "{action}: {e}");
    }
}

#[tokio::test]
async fn a_slow_command_holds_up_no_other_message_of_its_socket() {
    let (_, gw) = two_way_gateway();
    let mut c = Client::multiplexed(gw, &talker_token("operator")).await;
    c.send_json(json!({"type": "stream_control", "action": "hang", "id": "slow"}))
        .await;
    c.send_text(r#"{ "type": "ping" }"#).await;
    let first = c
        .expect_where("a reply", |m| m["type"] == "pong" || m["type"] == "error")
        .await;
    assert_eq!(
        first["type"], "pong",
        "the ping waited for the command: {first}"
    );
    let failed = c.expect_error("error", "COMMAND_FAILED").await;
    assert_eq!(failed["error"]["details"]["reason"], "timeout");
}

#[tokio::test]
async fn a_command_without_a_backend_is_not_configured() {
    let gw = gateway();
    let mut c = Client::multiplexed(gw, &sub_token()).await;
    c.send_json(json!({"type": "stream_control", "action": "start", "camera_id": "cam_1"}))
        .await;
    let e = c.expect_error("error", "COMMAND_FAILED").await;
    assert_eq!(e["error"]["details"]["reason"], "not_configured", "{e}");
}

#[tokio::test]
async fn a_command_before_authentication_is_refused() {
    let (backend, gw) = two_way_gateway();
    let camera = unique("cam_");
    let mut c = Client::connect(gw, "/ws").await;
    c.expect("rate_limit_info").await;
    c.send_json(json!({"type": "stream_control", "action": "start", "camera_id": camera}))
        .await;
    c.expect_error("error", "AUTH_FAILED").await;
    c.send_json(json!({"type": "dance"})).await;
    let e = c.expect_error("error", "INVALID_MESSAGE").await;
    assert_eq!(e["error"]["details"]["type"], "dance");
    let forwarded = backend
        .seen
        .lock()
        .unwrap()
        .iter()
        .any(|(_, b)| b["message"]["camera_id"] == camera.as_str());
    assert!(!forwarded, "an unauthenticated command reached the backend");
}

#[tokio::test]
async fn presence_joins_and_leaves_across_two_hubs_and_a_direct_socket() {
    let (_, gw) = two_way_gateway();
    let channel = unique("conversation:presence-");
    let mut alice = Client::multiplexed(gw, &talker_token("alice")).await;
    alice.subscribe(&channel, json!({})).await;
    let mut bob = multiplexed_on_another_hub(gw, &talker_token("bob"), &alice).await;
    bob.subscribe(&channel, json!({})).await;
    let joined = next_presence(&mut alice, "presence.join", &bob).await;
    assert_eq!(joined["channel"], channel.as_str());
    assert_eq!(joined["data"]["sub"], "bob");
    assert!(joined.get("seq").is_none(), "presence frames carry no seq");

    let listed = presence_request(&mut bob, &channel).await;
    assert_eq!(
        member_ids(&listed["data"]["members"]),
        ids_of(&[&alice, &bob]),
        "{listed}"
    );
    assert!(listed["data"]["members"][0]["joined_at"].is_string());

    let carol = direct(gw, &channel, &talker_token("carol")).await;
    next_presence(&mut alice, "presence.join", &carol).await;
    next_presence(&mut bob, "presence.join", &carol).await;
    let (status, http) = get(
        gw,
        &format!("/v1/channels/{channel}/presence"),
        Some(&sub_token()),
    )
    .await;
    assert_eq!(status, 200, "{http}");
    assert_eq!(
        member_ids(&http["members"]),
        ids_of(&[&alice, &bob, &carol])
    );

    let carol_id = carol.connection_id.clone().unwrap();
    carol.kill();
    for c in [&mut alice, &mut bob] {
        let left = c
            .expect_where("carol's leave", |m| {
                m["type"] == "presence.leave" && m["data"]["connection_id"] == carol_id.as_str()
            })
            .await;
        assert_eq!(left["data"]["sub"], "carol");
    }
    bob.send_json(json!({"type": "unsubscribe", "channel": channel}))
        .await;
    bob.expect_reply("unsubscribed").await;
    next_presence(&mut alice, "presence.leave", &bob).await;
    let listed = presence_request(&mut alice, &channel).await;
    assert_eq!(member_ids(&listed["data"]["members"]), ids_of(&[&alice]));
}

#[tokio::test]
async fn presence_outside_the_claim_or_on_a_channel_without_presence_is_refused() {
    let (_, gw) = two_way_gateway();
    let narrow = token(uip_realtime::core::auth::TokenSpec {
        sub: Some("narrow".into()),
        scope: Some("subscribe".into()),
        channels: Some(vec!["accidents".into()]),
        exp: Some(now_s() + 3600),
        ..Default::default()
    });
    let channel = unique("conversation:secret-");
    let mut c = Client::multiplexed(gw, &narrow).await;
    let e = presence_request(&mut c, &channel).await;
    assert_eq!(e["error"]["code"], "FORBIDDEN", "{e}");
    let e = presence_request(&mut c, "accidents").await;
    assert_eq!(e["error"]["code"], "INVALID_MESSAGE", "{e}");
    assert_eq!(e["error"]["details"]["field"], "channel");
    let (status, _) = get(
        gw,
        &format!("/v1/channels/{channel}/presence"),
        Some(&narrow),
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = get(gw, "/v1/channels/accidents/presence", Some(&narrow)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("INVALID_MESSAGE"))
    );
    c.send_text(r#"{ "type": "ping" }"#).await;
    c.expect_reply("pong").await;
}

#[tokio::test]
async fn presence_never_lists_a_socket_gone_with_a_restart() {
    let dir = state_dir("presence-restart");
    let presence = [("PRESENCE_NAMESPACES", "conversation")];
    let gw = Gateway::start(&dir, &presence);
    let channel = unique("conversation:restart-");
    let mut hubbed = Client::multiplexed(&gw, &talker_token("alice")).await;
    hubbed.subscribe(&channel, json!({})).await;
    let room = direct(&gw, &channel, &talker_token("bob")).await;
    next_presence(&mut hubbed, "presence.join", &room).await;
    let path = format!("/v1/channels/{channel}/presence");
    let (_, before) = get(&gw, &path, Some(&sub_token())).await;
    assert_eq!(member_ids(&before["members"]), ids_of(&[&hubbed, &room]));
    gw.stop();
    drop((hubbed, room));

    let gw = Gateway::start(&dir, &presence);
    let (status, after) = get(&gw, &path, Some(&sub_token())).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["members"], json!([]), "{after}");
    let mut again = Client::multiplexed(&gw, &talker_token("carol")).await;
    again.subscribe(&channel, json!({})).await;
    let listed = presence_request(&mut again, &channel).await;
    assert_eq!(member_ids(&listed["data"]["members"]), ids_of(&[&again]));
}

#[tokio::test]
async fn stats_list_a_namespaced_channel_that_has_only_direct_sockets() {
    let (_, gw) = two_way_gateway();
    let channel = unique("conversation:direct-only-");
    let c = direct(gw, &channel, &sub_token()).await;
    let (status, stats) = get(gw, "/v1/stats", Some(&sub_token())).await;
    assert_eq!(status, 200);
    assert_eq!(stats["channels"][&channel]["subscribers"], 1, "{stats}");
    c.close().await;
}
