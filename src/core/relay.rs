//! How a room hands its events to the hubs: one push in flight at a time,
//! and everything stored meanwhile goes out together in the next one.
//!
//! A publish request queues its new events here as it stores them, so the
//! queue is in `seq` order. The first request that finds no push in flight
//! takes the whole queue and sends it; requests that arrive while that push
//! is out wait, and the first of them to wake sends everything they queued.
//! Each request then reads back what the hubs delivered for its own events.
//! Under load a room therefore makes one call per hub per round instead of
//! one per publish request; an idle room sends at once.

use std::collections::HashMap;

use super::internal::Delivered;

/// One publish request's claim on the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket(u64);

/// One event waiting for (or in) a push: whose it is and where in that
/// request's answer its count goes.
#[derive(Debug, Clone, PartialEq)]
struct Queued {
    ticket: Ticket,
    slot: usize,
    event: Delivered,
}

/// The events one push carries, and whom each belongs to.
#[derive(Debug, PartialEq)]
pub struct Round {
    pub events: Vec<Delivered>,
    owners: Vec<(Ticket, usize)>,
}

/// What a request does next.
#[derive(Debug, PartialEq)]
pub enum Turn {
    /// Its events were pushed: sockets reached per slot of its request.
    Answered(Vec<(usize, u64)>),
    /// No push is in flight: send this round, then call `finish`.
    Send(Round),
    /// A push is in flight: wait until it finishes, then ask again.
    Wait,
}

/// The relay of one room: the queue, whether a push is in flight, and the
/// answers not yet read by their requests.
#[derive(Debug, Default)]
pub struct Relay {
    queue: Vec<Queued>,
    busy: bool,
    next: u64,
    answered: HashMap<Ticket, Vec<(usize, u64)>>,
}

impl Relay {
    /// Queues a request's new events (`(slot, event)`, in `seq` order) and
    /// answers its ticket. A request with nothing new needs no ticket.
    pub fn enqueue(&mut self, events: impl IntoIterator<Item = (usize, Delivered)>) -> Ticket {
        let ticket = Ticket(self.next);
        self.next += 1;
        let before = self.queue.len();
        self.queue
            .extend(events.into_iter().map(|(slot, event)| Queued {
                ticket,
                slot,
                event,
            }));
        if self.queue.len() == before {
            self.answered.insert(ticket, Vec::new());
        }
        ticket
    }

    /// What the holder of `ticket` does now.
    pub fn turn(&mut self, ticket: Ticket) -> Turn {
        if let Some(counts) = self.answered.remove(&ticket) {
            return Turn::Answered(counts);
        }
        if self.busy {
            return Turn::Wait;
        }
        self.busy = true;
        let (owners, events) = self
            .queue
            .drain(..)
            .map(|q| ((q.ticket, q.slot), q.event))
            .unzip();
        Turn::Send(Round { events, owners })
    }

    /// A round's push is over: `delivered` holds, per hub that answered,
    /// sockets reached per event of the round. Every event of the round is
    /// answered (a hub that failed adds nothing; it repairs from history).
    pub fn finish(&mut self, round: Round, delivered: &[Vec<u64>]) {
        self.busy = false;
        for (i, (ticket, slot)) in round.owners.into_iter().enumerate() {
            let n = delivered.iter().filter_map(|d| d.get(i)).sum();
            self.answered.entry(ticket).or_default().push((slot, n));
        }
    }

    /// A round whose push was abandoned before it finished: its events go
    /// back to the front of the queue, so the next round sends them first.
    pub fn abandon(&mut self, round: Round) {
        self.busy = false;
        let back = round
            .owners
            .into_iter()
            .zip(round.events)
            .map(|((ticket, slot), event)| Queued {
                ticket,
                slot,
                event,
            });
        self.queue.splice(0..0, back);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64) -> Delivered {
        Delivered {
            seq,
            kind: "alert".into(),
            body: format!("{{\"seq\":{seq}}}"),
            merged: "{}".into(),
        }
    }

    fn seqs(round: &Round) -> Vec<u64> {
        round.events.iter().map(|e| e.seq).collect()
    }

    fn sending(turn: Turn) -> Round {
        match turn {
            Turn::Send(round) => round,
            other => panic!("expected a round to send, got {other:?}"),
        }
    }

    #[test]
    fn an_idle_relay_sends_a_request_at_once() {
        let mut relay = Relay::default();
        let t = relay.enqueue([(0, ev(1)), (1, ev(2))]);
        let round = sending(relay.turn(t));
        assert_eq!(seqs(&round), vec![1, 2]);
        let later = relay.enqueue([(0, ev(3))]);
        assert_eq!(relay.turn(later), Turn::Wait);
        relay.finish(round, &[vec![3, 4]]);
        assert_eq!(relay.turn(t), Turn::Answered(vec![(0, 3), (1, 4)]));
        assert_eq!(seqs(&sending(relay.turn(later))), vec![3]);
    }

    #[test]
    fn requests_during_a_push_wait_and_go_out_together_in_seq_order() {
        let mut relay = Relay::default();
        let a = relay.enqueue([(0, ev(1))]);
        let first = sending(relay.turn(a));
        let b = relay.enqueue([(0, ev(2))]);
        let c = relay.enqueue([(0, ev(3)), (1, ev(4))]);
        assert_eq!(relay.turn(b), Turn::Wait);
        assert_eq!(relay.turn(c), Turn::Wait);
        relay.finish(first, &[vec![1]]);
        assert_eq!(relay.turn(a), Turn::Answered(vec![(0, 1)]));
        let second = sending(relay.turn(c));
        assert_eq!(seqs(&second), vec![2, 3, 4]);
        assert_eq!(relay.turn(b), Turn::Wait);
        relay.finish(second, &[vec![5, 6, 7]]);
        assert_eq!(relay.turn(b), Turn::Answered(vec![(0, 5)]));
        assert_eq!(relay.turn(c), Turn::Answered(vec![(0, 6), (1, 7)]));
    }

    #[test]
    fn counts_are_summed_over_the_hubs_that_answered() {
        let mut relay = Relay::default();
        let t = relay.enqueue([(2, ev(1)), (5, ev(2))]);
        let round = sending(relay.turn(t));
        relay.finish(round, &[vec![10, 1], vec![20, 2]]);
        assert_eq!(relay.turn(t), Turn::Answered(vec![(2, 30), (5, 3)]));
    }

    #[test]
    fn a_round_no_hub_answered_still_answers_every_request() {
        let mut relay = Relay::default();
        let t = relay.enqueue([(0, ev(1))]);
        let round = sending(relay.turn(t));
        relay.finish(round, &[]);
        assert_eq!(relay.turn(t), Turn::Answered(vec![(0, 0)]));
    }

    #[test]
    fn a_request_with_nothing_new_is_answered_without_a_push() {
        let mut relay = Relay::default();
        let t = relay.enqueue([]);
        assert_eq!(relay.turn(t), Turn::Answered(Vec::new()));
        let next = relay.enqueue([(0, ev(1))]);
        assert_eq!(seqs(&sending(relay.turn(next))), vec![1]);
    }

    #[test]
    fn an_abandoned_round_is_sent_again_before_anything_newer() {
        let mut relay = Relay::default();
        let a = relay.enqueue([(0, ev(1)), (1, ev(2))]);
        let round = sending(relay.turn(a));
        let b = relay.enqueue([(0, ev(3))]);
        relay.abandon(round);
        let again = sending(relay.turn(b));
        assert_eq!(seqs(&again), vec![1, 2, 3]);
        relay.finish(again, &[vec![1, 1, 1]]);
        assert_eq!(relay.turn(a), Turn::Answered(vec![(0, 1), (1, 1)]));
        assert_eq!(relay.turn(b), Turn::Answered(vec![(0, 1)]));
    }
}
