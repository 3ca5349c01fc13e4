//! How a hub applies a channel's deliveries: in `seq` order and exactly once,
//! filling any gap from the room's retained history before anything newer.
//!
//! A room stores every event before it pushes it, so a push that is lost, late
//! or out of order shows up at the hub as a delivery whose first `seq` is past
//! the last one applied (or a `head` past it). The hub then fetches the missing
//! range, applies it, and plans the delivery again; events at or below the
//! cursor were applied already and are dropped.

use super::internal::Delivered;

/// What to do next with a delivery.
#[derive(Debug, PartialEq)]
pub enum Step<'a> {
    /// `seq`s in `after + 1 ..= through` are missing: fetch and apply them
    /// first, then plan the delivery again.
    Repair { after: u64, through: u64 },
    /// Apply these events, in order (the delivery's events past the cursor).
    Apply(&'a [Delivered]),
}

/// Plans a delivery of `events` (ascending, contiguous) that the room sent
/// when its head was `head`, to a hub that applied everything up to `applied`.
pub fn plan(applied: u64, events: &[Delivered], head: u64) -> Step<'_> {
    match events.first() {
        Some(first) if first.seq > applied + 1 => Step::Repair {
            after: applied,
            through: first.seq - 1,
        },
        Some(_) => {
            let start = events.partition_point(|e| e.seq <= applied);
            Step::Apply(&events[start..])
        }
        None if head > applied => Step::Repair {
            after: applied,
            through: head,
        },
        None => Step::Apply(&[]),
    }
}

/// What a repair applies: the replayed events in `after + 1 ..= through`, and
/// how many of that range history no longer had (the cursor moves past them).
pub fn repaired(replayed: &[Delivered], after: u64, through: u64) -> (&[Delivered], u64) {
    let start = replayed.partition_point(|e| e.seq <= after);
    let end = replayed.partition_point(|e| e.seq <= through);
    let got = &replayed[start..end.max(start)];
    let lost = (through - after).saturating_sub(got.len() as u64);
    (got, lost)
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

    fn seqs(events: &[Delivered]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn the_next_events_in_order_are_applied() {
        let events = [ev(4), ev(5)];
        assert_eq!(plan(3, &events, 5), Step::Apply(&events[..]));
    }

    #[test]
    fn events_already_applied_are_dropped() {
        let events = [ev(3), ev(4), ev(5)];
        match plan(4, &events, 5) {
            Step::Apply(e) => assert_eq!(seqs(e), vec![5]),
            other => panic!("{other:?}"),
        }
        match plan(9, &events, 5) {
            Step::Apply(e) => assert!(e.is_empty(), "a late duplicate applies nothing"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_delivery_past_the_cursor_repairs_the_gap_first() {
        let events = [ev(7), ev(8)];
        assert_eq!(
            plan(4, &events, 8),
            Step::Repair {
                after: 4,
                through: 6
            }
        );
    }

    #[test]
    fn an_empty_delivery_with_a_newer_head_repairs_up_to_the_head() {
        assert_eq!(
            plan(2, &[], 5),
            Step::Repair {
                after: 2,
                through: 5
            }
        );
        assert_eq!(plan(5, &[], 5), Step::Apply(&[]));
    }

    #[test]
    fn a_first_delivery_after_attach_at_zero_starts_at_one() {
        let events = [ev(1)];
        assert_eq!(plan(0, &events, 1), Step::Apply(&events[..]));
    }

    #[test]
    fn a_repair_applies_its_range_and_counts_what_history_lost() {
        let replayed = [ev(3), ev(5), ev(6), ev(7), ev(9)];
        let (got, lost) = repaired(&replayed, 4, 7);
        assert_eq!(seqs(got), vec![5, 6, 7]);
        assert_eq!(lost, 0);
        let (got, lost) = repaired(&replayed[2..], 2, 7);
        assert_eq!(seqs(got), vec![6, 7]);
        assert_eq!(lost, 3, "3, 4 and 5 were pruned");
        let (got, lost) = repaired(&[], 2, 4);
        assert!(got.is_empty());
        assert_eq!(lost, 2);
    }

    #[test]
    fn out_of_order_pushes_end_with_every_seq_applied_once() {
        // Pushes of 1, 2, 3 and 4 arrive as 2, 4, 1, 3; history holds them all.
        let history: Vec<Delivered> = (1..=4).map(ev).collect();
        let mut applied = 0;
        let mut out = Vec::new();
        for push in [2u64, 4, 1, 3] {
            let events = [ev(push)];
            loop {
                match plan(applied, &events, push) {
                    Step::Repair { after, through } => {
                        let (got, _) = repaired(&history, after, through);
                        out.extend(seqs(got));
                        applied = through;
                    }
                    Step::Apply(e) => {
                        out.extend(seqs(e));
                        if let Some(last) = e.last() {
                            applied = last.seq;
                        }
                        break;
                    }
                }
            }
        }
        assert_eq!(out, vec![1, 2, 3, 4]);
    }
}
