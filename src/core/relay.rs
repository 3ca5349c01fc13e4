//! How a room hands its events to the hubs: at most [`MAX_IN_FLIGHT`] pushes
//! in flight at a time, and everything stored meanwhile goes out together in
//! the next one.
//!
//! A publish request queues its new events here as it stores them, so the
//! queue is in `seq` order. A request that finds a free slot takes the whole
//! queue and sends it; requests that arrive while every slot is taken wait,
//! and the first of them to wake sends everything they queued. Each request
//! then reads back what the hubs delivered for its own events. Under load a
//! room therefore makes one call per hub per round instead of one per publish
//! request; an idle room sends at once.
//!
//! Two rounds in flight rather than one keep the hubs busy while the answers
//! of the last round travel back: with one, a hub that finished its fan-out
//! sat idle until the slowest hub had answered and the next round was built.
//! Rounds leave in `seq` order on one stub per hub, so a hub receives them in
//! order; one that overtakes another anyway is a gap the hub repairs
//! (`core::gap`), and the late one is then a duplicate it drops.

use std::collections::HashMap;

use super::internal::Delivered;

/// Rounds a room keeps in flight to its hubs at once.
pub const MAX_IN_FLIGHT: usize = 2;

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
    /// A slot is free and events are queued: send this round, then call
    /// `finish` (or `abandon`).
    Send(Round),
    /// Its events are in flight, or every slot is taken: wait until a round
    /// finishes, then ask again.
    Wait,
}

/// The relay of one room: the queue, how many rounds are in flight, and the
/// answers not yet read by their requests.
#[derive(Debug, Default)]
pub struct Relay {
    queue: Vec<Queued>,
    in_flight: usize,
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
        if self.in_flight >= MAX_IN_FLIGHT || self.queue.is_empty() {
            return Turn::Wait;
        }
        self.in_flight += 1;
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
        self.in_flight = self.in_flight.saturating_sub(1);
        for (i, (ticket, slot)) in round.owners.into_iter().enumerate() {
            let n = delivered.iter().filter_map(|d| d.get(i)).sum();
            self.answered.entry(ticket).or_default().push((slot, n));
        }
    }

    /// A round whose push was abandoned before it finished: its events go
    /// back to the front of the queue, so the next round sends them first
    /// (they are older than anything queued since).
    pub fn abandon(&mut self, round: Round) {
        self.in_flight = self.in_flight.saturating_sub(1);
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

    /// Fills every slot with a one-event round, so the next request waits.
    fn fill_slots(relay: &mut Relay, first_seq: u64) -> Vec<(Ticket, Round)> {
        (0..MAX_IN_FLIGHT as u64)
            .map(|i| {
                let t = relay.enqueue([(0, ev(first_seq + i))]);
                (t, sending(relay.turn(t)))
            })
            .collect()
    }

    #[test]
    fn an_idle_relay_sends_a_request_at_once() {
        let mut relay = Relay::default();
        let t = relay.enqueue([(0, ev(1)), (1, ev(2))]);
        let round = sending(relay.turn(t));
        assert_eq!(seqs(&round), vec![1, 2]);
        relay.finish(round, &[vec![3, 4]]);
        assert_eq!(relay.turn(t), Turn::Answered(vec![(0, 3), (1, 4)]));
    }

    #[test]
    fn a_second_round_goes_out_while_the_first_is_in_flight() {
        let mut relay = Relay::default();
        let a = relay.enqueue([(0, ev(1))]);
        let first = sending(relay.turn(a));
        let b = relay.enqueue([(0, ev(2))]);
        let second = sending(relay.turn(b));
        assert_eq!(seqs(&second), vec![2]);
        assert_eq!(relay.turn(a), Turn::Wait, "its events are in flight");
        relay.finish(first, &[vec![1]]);
        relay.finish(second, &[vec![2]]);
        assert_eq!(relay.turn(a), Turn::Answered(vec![(0, 1)]));
        assert_eq!(relay.turn(b), Turn::Answered(vec![(0, 2)]));
    }

    #[test]
    fn a_request_whose_events_are_in_flight_sends_nothing_more() {
        let mut relay = Relay::default();
        let a = relay.enqueue([(0, ev(1))]);
        let _first = sending(relay.turn(a));
        assert_eq!(relay.turn(a), Turn::Wait, "an empty round is never sent");
    }

    #[test]
    fn requests_while_every_slot_is_taken_wait_and_go_out_together_in_seq_order() {
        let mut relay = Relay::default();
        let mut rounds = fill_slots(&mut relay, 1);
        let next = MAX_IN_FLIGHT as u64 + 1;
        let b = relay.enqueue([(0, ev(next))]);
        let c = relay.enqueue([(0, ev(next + 1)), (1, ev(next + 2))]);
        assert_eq!(relay.turn(b), Turn::Wait);
        assert_eq!(relay.turn(c), Turn::Wait);
        let (a, first) = rounds.remove(0);
        relay.finish(first, &[vec![1]]);
        assert_eq!(relay.turn(a), Turn::Answered(vec![(0, 1)]));
        let later = sending(relay.turn(c));
        assert_eq!(seqs(&later), vec![next, next + 1, next + 2]);
        assert_eq!(relay.turn(b), Turn::Wait);
        relay.finish(later, &[vec![5, 6, 7]]);
        assert_eq!(relay.turn(b), Turn::Answered(vec![(0, 5)]));
        assert_eq!(relay.turn(c), Turn::Answered(vec![(0, 6), (1, 7)]));
    }

    #[test]
    fn rounds_that_finish_out_of_order_answer_their_own_requests() {
        let mut relay = Relay::default();
        let mut rounds = fill_slots(&mut relay, 1);
        let (last_ticket, last) = rounds.pop().expect("a round per slot");
        relay.finish(last, &[vec![9]]);
        assert_eq!(relay.turn(last_ticket), Turn::Answered(vec![(0, 9)]));
        for (t, round) in rounds {
            relay.finish(round, &[vec![4]]);
            assert_eq!(relay.turn(t), Turn::Answered(vec![(0, 4)]));
        }
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
        let mut rounds = fill_slots(&mut relay, 1);
        let (a, round) = rounds.remove(0);
        let next = MAX_IN_FLIGHT as u64 + 1;
        let b = relay.enqueue([(0, ev(next))]);
        assert_eq!(relay.turn(b), Turn::Wait);
        relay.abandon(round);
        let again = sending(relay.turn(b));
        assert_eq!(seqs(&again), vec![1, next]);
        relay.finish(again, &[vec![1, 1]]);
        assert_eq!(relay.turn(a), Turn::Answered(vec![(0, 1)]));
        assert_eq!(relay.turn(b), Turn::Answered(vec![(0, 1)]));
    }
}
