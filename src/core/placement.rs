//! Which hub shard a new `/ws` socket goes to.
//!
//! A room pushes each event once per hub that holds a subscriber of its
//! channel, and every push is a call between objects (BENCHMARKS.md: ~0.4 ms
//! of the core each, whatever the hub then sends). Sockets spread at random
//! over 4 shards put a 100-subscriber channel on all 4; so shards fill in
//! order instead, up to `HUB_FILL` sockets each, and a small deployment's
//! channels reach one hub. Once every shard holds its share, sockets spread
//! at random, as they did before.
//!
//! A Worker isolate knows the shards' socket counts only from the hubs'
//! answers to the upgrades it forwarded, plus the upgrades it has sent that
//! are not answered yet (a burst of connects must not all land on the first
//! shard before its count comes back). Another isolate's sockets are seen with
//! the next answer from that hub; a count older than [`FORGET_MS`] is
//! forgotten, so a shard whose sockets left is filled again.

/// How long a hub's reported socket count is trusted.
pub const FORGET_MS: i64 = 30_000;

/// One isolate's view of the hub shards, deciding where sockets go.
#[derive(Debug, Clone)]
pub struct Placement {
    fill: u32,
    shards: Vec<ShardView>,
}

#[derive(Debug, Clone, Copy, Default)]
struct ShardView {
    /// Sockets the hub reported with its last answer.
    sockets: u32,
    /// When that answer came; `None` before any.
    seen_ms: Option<i64>,
    /// Upgrades sent to the hub and not answered yet.
    pending: u32,
}

impl ShardView {
    fn load(&self, now_ms: i64) -> u32 {
        let known = match self.seen_ms {
            Some(at) if now_ms - at <= FORGET_MS => self.sockets,
            _ => 0,
        };
        known.saturating_add(self.pending)
    }
}

impl Placement {
    /// A view of `shards` hub shards (at least one), each filled up to `fill`
    /// sockets before the next; `fill` 0 spreads every socket at random.
    pub fn new(shards: u32, fill: u32) -> Self {
        Placement {
            fill,
            shards: vec![ShardView::default(); shards.max(1) as usize],
        }
    }

    /// The shard for a new socket: the first whose load is under the fill,
    /// else the one `random` (in `[0, 1)`) picks. The upgrade counts as
    /// pending on it until [`Placement::answered`].
    pub fn pick(&mut self, now_ms: i64, random: f64) -> u32 {
        let count = self.shards.len();
        let open = (self.fill > 0)
            .then(|| self.shards.iter().position(|s| s.load(now_ms) < self.fill))
            .flatten();
        let shard = open.unwrap_or_else(|| ((random * count as f64) as usize).min(count - 1));
        self.shards[shard].pending += 1;
        shard as u32
    }

    /// The hub's answer to an upgrade sent by [`Placement::pick`]: its socket
    /// count when it reported one (`None` when the call failed).
    pub fn answered(&mut self, shard: u32, sockets: Option<u32>, now_ms: i64) {
        let Some(view) = self.shards.get_mut(shard as usize) else {
            return;
        };
        view.pending = view.pending.saturating_sub(1);
        if let Some(n) = sockets {
            view.sockets = n;
            view.seen_ms = Some(now_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Places `n` sockets one after another, each answered with the count the
    /// hub would then hold; returns the shard of each.
    fn place_in_turn(p: &mut Placement, held: &mut [u32], n: usize, now: i64) -> Vec<u32> {
        (0..n)
            .map(|i| {
                let shard = p.pick(now, (i % 7) as f64 / 7.0);
                held[shard as usize] += 1;
                p.answered(shard, Some(held[shard as usize]), now);
                shard
            })
            .collect()
    }

    #[test]
    fn sockets_fill_the_first_shard_before_the_next() {
        let mut p = Placement::new(4, 3);
        let mut held = [0; 4];
        let shards = place_in_turn(&mut p, &mut held, 7, 0);
        assert_eq!(shards, vec![0, 0, 0, 1, 1, 1, 2]);
    }

    #[test]
    fn a_small_deployment_stays_on_one_shard() {
        let mut p = Placement::new(4, 256);
        let mut held = [0; 4];
        let shards = place_in_turn(&mut p, &mut held, 100, 0);
        assert!(shards.iter().all(|s| *s == 0));
    }

    #[test]
    fn once_every_shard_is_full_sockets_spread_at_random() {
        let mut p = Placement::new(2, 1);
        let mut held = [0; 2];
        place_in_turn(&mut p, &mut held, 2, 0);
        assert_eq!(p.pick(0, 0.0), 0);
        assert_eq!(p.pick(0, 0.99), 1);
    }

    #[test]
    fn unanswered_upgrades_count_so_a_burst_does_not_pile_on_one_shard() {
        let mut p = Placement::new(3, 2);
        let burst: Vec<u32> = (0..6).map(|_| p.pick(0, 0.0)).collect();
        assert_eq!(burst, vec![0, 0, 1, 1, 2, 2]);
    }

    #[test]
    fn a_failed_upgrade_frees_its_place() {
        let mut p = Placement::new(2, 1);
        assert_eq!(p.pick(0, 0.0), 0);
        p.answered(0, None, 0);
        assert_eq!(p.pick(0, 0.99), 0);
    }

    #[test]
    fn a_hub_reports_sockets_other_isolates_placed() {
        let mut p = Placement::new(2, 10);
        let first = p.pick(0, 0.0);
        p.answered(first, Some(10), 0);
        assert_eq!(p.pick(0, 0.0), 1);
    }

    #[test]
    fn an_old_count_is_forgotten_so_an_emptied_shard_fills_again() {
        let mut p = Placement::new(2, 10);
        let first = p.pick(0, 0.0);
        p.answered(first, Some(10), 0);
        assert_eq!(p.pick(FORGET_MS, 0.0), 1);
        assert_eq!(p.pick(FORGET_MS + 1, 0.0), 0);
    }

    #[test]
    fn fill_zero_spreads_every_socket_at_random() {
        let mut p = Placement::new(4, 0);
        assert_eq!(p.pick(0, 0.0), 0);
        assert_eq!(p.pick(0, 0.3), 1);
        assert_eq!(p.pick(0, 0.99), 3);
    }

    #[test]
    fn an_answer_for_an_unknown_shard_is_ignored() {
        let mut p = Placement::new(2, 1);
        p.answered(7, Some(3), 0);
        assert_eq!(p.pick(0, 0.99), 0);
        assert_eq!(p.pick(0, 0.0), 1);
    }
}
