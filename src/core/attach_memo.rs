//! A hub's memory of its last attach answer per channel, so a burst of new
//! subscribers between two events costs the room one attach call instead of
//! one each (10,000 sockets subscribing through hubs made 10,000 room calls
//! and as many commits on one room).
//!
//! An answer may serve a later fresh subscriber (no `since`) only while it is
//! still exactly what the room would answer: the hub has applied nothing since
//! (its cursor stands at the answer's head, so the snapshot is unchanged and
//! live events continue from that head), the room still counts the hub as
//! attached (the hub forgets a channel whenever it detaches or tells the room
//! it no longer wants it), the registration covers the subscriber's dialect,
//! and the answer is younger than [`ATTACH_REUSE_MS`].

use std::collections::HashMap;

use crate::core::internal::{AttachResponse, Registration};

/// How long one attach answer may serve later subscribers. Snapshot entries
/// can expire meanwhile, so a reused snapshot is at most this much older
/// than a fresh one, as if the subscriber had come this much earlier.
pub const ATTACH_REUSE_MS: i64 = 1000;

struct Entry {
    state: AttachResponse,
    registration: Registration,
    at_ms: i64,
}

/// Per channel, the last fresh-subscriber attach answer.
#[derive(Default)]
pub struct AttachMemo {
    entries: HashMap<String, Entry>,
}

impl AttachMemo {
    /// Remembers the answer of an attach for a fresh subscriber, after the
    /// hub's cursor was set to its head. Answers older than
    /// [`ATTACH_REUSE_MS`] are dropped, so the memory holds only live ones.
    pub fn remember(
        &mut self,
        channel: &str,
        state: &AttachResponse,
        registration: Registration,
        now_ms: i64,
    ) {
        self.entries
            .retain(|_, e| now_ms - e.at_ms < ATTACH_REUSE_MS);
        // The catch-up went to the existing subscribers once; a reuse has none.
        let state = AttachResponse {
            head: state.head,
            recovered: state.recovered,
            events: state.events.clone(),
            catch_up: Vec::new(),
        };
        self.entries.insert(
            channel.to_owned(),
            Entry {
                state,
                registration,
                at_ms: now_ms,
            },
        );
    }

    /// The remembered answer for a fresh subscriber of `channel`, when it
    /// still holds: `applied` (the hub's cursor now) is its head, it covers
    /// `wanted`, and it is recent.
    pub fn reuse(
        &self,
        channel: &str,
        applied: Option<u64>,
        wanted: Registration,
        now_ms: i64,
    ) -> Option<AttachResponse> {
        let e = self.entries.get(channel)?;
        let holds = applied == Some(e.state.head)
            && e.registration.covers(wanted)
            && now_ms - e.at_ms < ATTACH_REUSE_MS;
        holds.then(|| e.state.clone())
    }

    /// Forgets `channel`: the room may no longer count this hub as attached.
    pub fn forget(&mut self, channel: &str) {
        self.entries.remove(channel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::internal::Delivered;

    fn answer(head: u64) -> AttachResponse {
        let event = |seq| Delivered {
            seq,
            kind: "chat_message".into(),
            body: format!("{{\"seq\":{seq}}}"),
            merged: "{}".into(),
        };
        AttachResponse {
            head,
            recovered: None,
            events: vec![event(head)],
            catch_up: vec![event(head)],
        }
    }

    fn remembered(head: u64, registration: Registration) -> AttachMemo {
        let mut memo = AttachMemo::default();
        memo.remember("c", &answer(head), registration, 1_000);
        memo
    }

    #[test]
    fn an_answer_serves_a_fresh_subscriber_while_the_cursor_stands_at_its_head() {
        let memo = remembered(7, Registration::Plain);
        let got = memo
            .reuse("c", Some(7), Registration::Plain, 1_500)
            .unwrap();
        assert_eq!((got.head, got.events.len()), (7, 1));
    }

    #[test]
    fn a_reused_answer_carries_no_catch_up_for_the_existing_subscribers() {
        let memo = remembered(7, Registration::Plain);
        let got = memo
            .reuse("c", Some(7), Registration::Plain, 1_500)
            .unwrap();
        assert!(got.catch_up.is_empty());
    }

    #[test]
    fn an_event_applied_since_makes_the_answer_stale() {
        let memo = remembered(7, Registration::Plain);
        assert!(memo
            .reuse("c", Some(8), Registration::Plain, 1_500)
            .is_none());
        assert!(memo.reuse("c", None, Registration::Plain, 1_500).is_none());
    }

    #[test]
    fn an_answer_expires_after_the_reuse_window() {
        let memo = remembered(7, Registration::Plain);
        let late = 1_000 + ATTACH_REUSE_MS;
        assert!(memo
            .reuse("c", Some(7), Registration::Plain, late)
            .is_none());
    }

    #[test]
    fn a_plain_registration_does_not_serve_a_dialect_subscriber() {
        let memo = remembered(7, Registration::Plain);
        assert!(memo
            .reuse("c", Some(7), Registration::Dialect, 1_500)
            .is_none());
    }

    #[test]
    fn a_dialect_registration_serves_both_kinds() {
        let memo = remembered(7, Registration::Dialect);
        assert!(memo
            .reuse("c", Some(7), Registration::Dialect, 1_500)
            .is_some());
        assert!(memo
            .reuse("c", Some(7), Registration::Plain, 1_500)
            .is_some());
    }

    #[test]
    fn a_forgotten_channel_is_attached_again() {
        let mut memo = remembered(7, Registration::Plain);
        memo.forget("c");
        assert!(memo
            .reuse("c", Some(7), Registration::Plain, 1_500)
            .is_none());
    }

    #[test]
    fn other_channels_are_not_served_by_one_channels_answer() {
        let memo = remembered(7, Registration::Plain);
        assert!(memo
            .reuse("d", Some(7), Registration::Plain, 1_500)
            .is_none());
    }

    #[test]
    fn remembering_drops_answers_past_the_window() {
        let mut memo = remembered(7, Registration::Plain);
        memo.remember(
            "d",
            &answer(3),
            Registration::Plain,
            1_000 + ATTACH_REUSE_MS,
        );
        assert_eq!(memo.entries.len(), 1);
    }
}
