//! A room's publish: each event of a request, in order, is checked against
//! the ids already seen (a repeat answers the first `seq`), given the next
//! `seq` and its timestamp, merged over the previous event of its snapshot key
//! (what filters read), and stored. Storage sits behind [`EventLog`], so the
//! rule is tested here and the Durable Object only carries it out.

use serde_json::Value;

use super::auth::Claims;
use super::channel::Channel;
use super::config::Config;
use super::error::{to_json, ApiError, ErrorCode};
use super::internal::Delivered;
use super::protocol::{ChannelEvent, PublishEvent, PublishResult, Published, ServerMessage};
use super::snapshot::{self, SnapshotOp};
use super::time::rfc3339_ms;

/// The `FORBIDDEN` of a token without scope `publish`.
pub fn needs_publish_scope() -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        "publishing needs a token with scope 'publish'",
    )
}

/// Whether `claims` may publish to `channel`: scope `publish` and the
/// channel within the `channels` claim. The rule of every publish.
pub fn authorize(claims: &Claims, channel: &Channel) -> Result<(), ApiError> {
    if !claims.scopes.publish {
        return Err(needs_publish_scope());
    }
    if !claims.allows(channel, true) {
        return Err(ApiError::forbidden_channel(channel.name()));
    }
    Ok(())
}

/// A socket's `publish`, checked as an HTTP publish is: scope first, then the
/// event against its channel, then the `channels` claim.
pub fn check_sent(
    claims: &Claims,
    event: &PublishEvent,
    config: &Config,
) -> Result<Channel, ApiError> {
    if !claims.scopes.publish {
        return Err(needs_publish_scope());
    }
    let channel = event.validate_sent(config)?;
    authorize(claims, &channel)?;
    Ok(channel)
}

/// The `published` answer to a socket's publish.
pub fn published_frame(result: &PublishResult, id: Option<&str>, ts: &str) -> String {
    ServerMessage::Published {
        timestamp: ts,
        data: Published {
            channel: &result.channel,
            seq: result.seq,
            id,
            duplicate: result.duplicate,
        },
    }
    .to_json()
}

/// One accepted event, as it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended<'a> {
    pub seq: u64,
    pub id: Option<&'a str>,
    pub kind: &'a str,
    /// The frame every subscriber gets.
    pub body: &'a str,
    /// The data merged over the key's previous event.
    pub merged: &'a str,
    pub op: &'a SnapshotOp,
    pub received_ms: i64,
}

/// What the publish algorithm needs from a room's storage.
pub trait EventLog {
    type Error;
    /// The last assigned `seq` (0 before the first event).
    fn head(&self) -> Result<u64, Self::Error>;
    /// The `seq` of an event stored with `id`, while it is remembered.
    fn seq_of_id(&self, id: &str) -> Result<Option<u64>, Self::Error>;
    /// The merged data last stored for a snapshot key.
    fn merged_of(&self, key: &str) -> Result<Option<String>, Self::Error>;
    /// Stores an event at `head + 1`, its id and its snapshot effect, together.
    fn append(&self, event: &Appended<'_>) -> Result<(), Self::Error>;
}

/// A newly stored event, with its place in the request's results and the
/// merged data its filters read.
#[derive(Debug, Clone, PartialEq)]
pub struct Fresh {
    pub slot: usize,
    pub event: Delivered,
    pub merged: Value,
}

/// The answer for each event in request order (`delivered` still 0), and the
/// events that were new.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub results: Vec<PublishResult>,
    pub fresh: Vec<Fresh>,
}

/// Orders and stores `events` of one channel, received at `now_ms`.
pub fn append_all<S: EventLog>(
    store: &S,
    channel: &Channel,
    events: Vec<PublishEvent>,
    now_ms: i64,
) -> Result<Outcome, S::Error> {
    let mut results = Vec::with_capacity(events.len());
    let mut fresh = Vec::with_capacity(events.len());
    for ev in events {
        let known = match ev.id.as_deref() {
            Some(id) => store.seq_of_id(id)?,
            None => None,
        };
        if let Some(seq) = known {
            results.push(PublishResult {
                channel: channel.name().to_owned(),
                seq,
                delivered: 0,
                duplicate: true,
            });
            continue;
        }
        let seq = store.head()? + 1;
        let event = ChannelEvent {
            kind: ev.kind,
            channel: channel.name().to_owned(),
            seq,
            timestamp: ev.timestamp.unwrap_or_else(|| rfc3339_ms(now_ms)),
            data: ev.data,
            id: ev.id,
        };
        let body = to_json(&event);
        let op = snapshot::op_for(channel.kind(), &event.kind, &event.data);
        let previous = match &op {
            SnapshotOp::Upsert { key, .. } | SnapshotOp::Remove { key } => store
                .merged_of(key)?
                .and_then(|m| serde_json::from_str::<Value>(&m).ok()),
            SnapshotOp::Skip => None,
        };
        let merged = snapshot::merge(previous.as_ref(), &event.data);
        let merged_json = to_json(&merged);
        store.append(&Appended {
            seq,
            id: event.id.as_deref(),
            kind: &event.kind,
            body: &body,
            merged: &merged_json,
            op: &op,
            received_ms: now_ms,
        })?;
        fresh.push(Fresh {
            slot: results.len(),
            event: Delivered {
                seq,
                kind: event.kind,
                body,
                merged: merged_json,
            },
            merged,
        });
        results.push(PublishResult {
            channel: channel.name().to_owned(),
            seq,
            delivered: 0,
            duplicate: false,
        });
    }
    Ok(Outcome { results, fresh })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;
    use crate::core::auth::Scopes;

    /// Storage in memory, failing on demand.
    #[derive(Default)]
    struct Memory {
        head: RefCell<u64>,
        ids: RefCell<HashMap<String, u64>>,
        merged: RefCell<HashMap<String, String>>,
        bodies: RefCell<Vec<String>>,
        fail_at: Option<u64>,
    }

    impl EventLog for Memory {
        type Error = String;
        fn head(&self) -> Result<u64, String> {
            Ok(*self.head.borrow())
        }
        fn seq_of_id(&self, id: &str) -> Result<Option<u64>, String> {
            Ok(self.ids.borrow().get(id).copied())
        }
        fn merged_of(&self, key: &str) -> Result<Option<String>, String> {
            Ok(self.merged.borrow().get(key).cloned())
        }
        fn append(&self, e: &Appended<'_>) -> Result<(), String> {
            if self.fail_at == Some(e.seq) {
                return Err("disk full".into());
            }
            assert_eq!(e.seq, *self.head.borrow() + 1, "appends are contiguous");
            if let Some(id) = e.id {
                self.ids.borrow_mut().insert(id.to_owned(), e.seq);
            }
            match e.op {
                SnapshotOp::Upsert { key, .. } => {
                    self.merged
                        .borrow_mut()
                        .insert(key.clone(), e.merged.to_owned());
                }
                SnapshotOp::Remove { key } => {
                    self.merged.borrow_mut().remove(key);
                }
                SnapshotOp::Skip => {}
            }
            self.bodies.borrow_mut().push(e.body.to_owned());
            *self.head.borrow_mut() = e.seq;
            Ok(())
        }
    }

    fn accidents() -> Channel {
        Channel::parse("accidents", &Config::default()).unwrap()
    }

    fn ev(kind: &str, data: Value, id: Option<&str>) -> PublishEvent {
        PublishEvent {
            channel: "accidents".into(),
            kind: kind.into(),
            data,
            timestamp: None,
            id: id.map(str::to_owned),
        }
    }

    #[test]
    fn events_get_consecutive_seqs_in_request_order() {
        let store = Memory::default();
        let out = append_all(
            &store,
            &accidents(),
            vec![
                ev("accidents.new", json!({"id": "A"}), None),
                ev("accidents.new", json!({"id": "B"}), None),
            ],
            0,
        )
        .unwrap();
        let seqs: Vec<u64> = out.results.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 2]);
        assert_eq!(out.fresh.len(), 2);
        assert_eq!(out.fresh[1].slot, 1);
    }

    #[test]
    fn a_repeated_id_answers_the_first_seq_and_stores_nothing() {
        let store = Memory::default();
        let a = || ev("accidents.new", json!({"id": "A"}), Some("e-1"));
        append_all(&store, &accidents(), vec![a()], 0).unwrap();
        let out = append_all(&store, &accidents(), vec![a()], 0).unwrap();
        assert_eq!(out.results[0].seq, 1);
        assert!(out.results[0].duplicate);
        assert!(out.fresh.is_empty());
        assert_eq!(*store.head.borrow(), 1);
    }

    #[test]
    fn a_duplicate_id_within_one_batch_is_stored_once() {
        let store = Memory::default();
        let a = || ev("accidents.new", json!({"id": "A"}), Some("e-1"));
        let out = append_all(&store, &accidents(), vec![a(), a()], 0).unwrap();
        assert_eq!(
            (out.results[0].duplicate, out.results[1].duplicate),
            (false, true)
        );
        assert_eq!(out.results[1].seq, 1);
        assert_eq!(out.fresh.len(), 1);
    }

    #[test]
    fn without_a_timestamp_the_event_gets_the_receive_time() {
        let store = Memory::default();
        let out = append_all(
            &store,
            &accidents(),
            vec![ev("accidents.new", json!({"id": "A"}), None)],
            1_700_000_000_123,
        )
        .unwrap();
        let body: Value = serde_json::from_str(&out.fresh[0].event.body).unwrap();
        assert_eq!(body["timestamp"], "2023-11-14T22:13:20.123Z");
        assert_eq!(body["seq"], 1);
    }

    #[test]
    fn merged_data_keeps_fields_a_later_event_of_the_key_omits() {
        let store = Memory::default();
        append_all(
            &store,
            &accidents(),
            vec![ev(
                "accidents.new",
                json!({"id": "A", "severity": "severe"}),
                None,
            )],
            0,
        )
        .unwrap();
        let out = append_all(
            &store,
            &accidents(),
            vec![ev("accidents.resolved", json!({"id": "A"}), None)],
            0,
        )
        .unwrap();
        assert_eq!(out.fresh[0].merged["severity"], "severe");
        let body: Value = serde_json::from_str(&out.fresh[0].event.body).unwrap();
        assert!(
            body["data"].get("severity").is_none(),
            "the frame is as sent"
        );
        assert!(
            store.merged.borrow().is_empty(),
            "resolved leaves the snapshot"
        );
    }

    #[test]
    fn a_storage_failure_stops_the_request_and_keeps_the_head() {
        let store = Memory {
            fail_at: Some(2),
            ..Memory::default()
        };
        let err = append_all(
            &store,
            &accidents(),
            vec![
                ev("accidents.new", json!({"id": "A"}), None),
                ev("accidents.new", json!({"id": "B"}), None),
            ],
            0,
        )
        .unwrap_err();
        assert_eq!(err, "disk full");
        assert_eq!(*store.head.borrow(), 1);
    }

    fn claims(publish: bool, channels: Option<Vec<&str>>) -> Claims {
        Claims {
            sub: Some("p".into()),
            exp: None,
            scopes: Scopes {
                subscribe: true,
                publish,
                admin: false,
            },
            channels: channels.map(|c| c.into_iter().map(str::to_owned).collect()),
        }
    }

    fn sent(channel: &str, kind: &str, data: Value) -> PublishEvent {
        PublishEvent {
            channel: channel.into(),
            kind: kind.into(),
            data,
            timestamp: None,
            id: None,
        }
    }

    #[test]
    fn a_socket_publish_follows_the_http_rules() {
        let c = Config::default();
        let chat = sent("conversation:c1", "chat_message", json!({"text": "hi"}));
        assert!(check_sent(&claims(true, Some(vec!["conversation:*"])), &chat, &c).is_ok());
        let code = |r: Result<Channel, ApiError>| r.unwrap_err().code;
        assert_eq!(
            code(check_sent(&claims(false, None), &chat, &c)),
            ErrorCode::Forbidden
        );
        assert_eq!(
            code(check_sent(
                &claims(true, Some(vec!["accidents"])),
                &chat,
                &c
            )),
            ErrorCode::Forbidden
        );
        assert_eq!(
            code(check_sent(
                &claims(true, None),
                &sent("nope", "x", json!({})),
                &c
            )),
            ErrorCode::ChannelNotFound
        );
        let wrong_type = check_sent(
            &claims(true, None),
            &sent("accidents", "dance", json!({"id": "A"})),
            &c,
        )
        .unwrap_err();
        assert_eq!(wrong_type.details.unwrap()["field"], "event");
        let missing_key = check_sent(
            &claims(true, None),
            &sent("accidents", "accidents.new", json!({})),
            &c,
        )
        .unwrap_err();
        assert_eq!(missing_key.details.unwrap()["field"], "data.id");
    }

    #[test]
    fn published_names_seq_id_and_duplicate() {
        let r = PublishResult {
            channel: "conversation:c1".into(),
            seq: 7,
            delivered: 2,
            duplicate: true,
        };
        let v: Value = serde_json::from_str(&published_frame(&r, Some("m1"), "t")).unwrap();
        assert_eq!(
            v,
            json!({"type":"published","timestamp":"t",
                   "data":{"channel":"conversation:c1","seq":7,"id":"m1","duplicate":true}})
        );
    }
}
