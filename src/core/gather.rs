//! How a busy room gathers concurrent publish requests into one write.
//!
//! Every storage write of a Durable Object opens an implicit transaction
//! that commits (one `fsync`) soon after, and the answers wait for it. A
//! room that stores each request as it arrives therefore pays one commit per
//! request however many are waiting. Instead, while other publishes are in
//! progress, the first request to arrive yields once and then stores its own
//! events and those of every request that arrived meanwhile, in arrival
//! order, in one synchronous pass: one commit for the lot. An idle room
//! stores a request at once, so a lone publish waits for nothing.

/// What a request does with its events.
#[derive(Debug, PartialEq)]
pub enum Arrival<T> {
    /// Nothing else is in progress: store them now.
    Now(T),
    /// It leads a gathering: yield once, then `take` and store everything.
    Lead,
    /// A gathering is open: its leader stores them; wait for its answer.
    Follow,
}

/// The requests gathered so far, in arrival order.
#[derive(Debug)]
pub struct Gather<T> {
    waiting: Vec<T>,
    open: bool,
}

impl<T> Default for Gather<T> {
    fn default() -> Self {
        Gather {
            waiting: Vec::new(),
            open: false,
        }
    }
}

impl<T> Gather<T> {
    /// A request arrives with `item`; `busy` is whether other publishes are
    /// in progress (their commits or fan-outs still running).
    pub fn arrive(&mut self, item: T, busy: bool) -> Arrival<T> {
        if !self.open && !busy {
            return Arrival::Now(item);
        }
        self.waiting.push(item);
        if self.open {
            Arrival::Follow
        } else {
            self.open = true;
            Arrival::Lead
        }
    }

    /// Closes the gathering and hands over what it holds, in arrival order;
    /// the next request to arrive while the room is busy opens a new one.
    pub fn take(&mut self) -> Vec<T> {
        self.open = false;
        std::mem::take(&mut self.waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_to_an_idle_room_is_stored_at_once() {
        let mut g = Gather::default();
        assert_eq!(g.arrive("a", false), Arrival::Now("a"));
        assert!(g.take().is_empty());
    }

    #[test]
    fn the_first_request_to_a_busy_room_leads_and_later_ones_follow() {
        let mut g = Gather::default();
        assert_eq!(g.arrive("a", true), Arrival::Lead);
        assert_eq!(g.arrive("b", true), Arrival::Follow);
        assert_eq!(
            g.arrive("c", false),
            Arrival::Follow,
            "an open gathering takes a request even once the room looks idle"
        );
        assert_eq!(g.take(), vec!["a", "b", "c"]);
    }

    #[test]
    fn taking_closes_the_gathering() {
        let mut g = Gather::default();
        assert_eq!(g.arrive("a", true), Arrival::Lead);
        assert_eq!(g.take(), vec!["a"]);
        assert_eq!(g.arrive("b", false), Arrival::Now("b"));
        assert_eq!(g.arrive("c", true), Arrival::Lead);
        assert_eq!(g.take(), vec!["c"]);
    }
}
