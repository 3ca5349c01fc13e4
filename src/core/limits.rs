//! Per-connection rate limits: two sliding windows over client frames, kept
//! small enough to live in a socket attachment across hibernation.

use serde::{Deserialize, Serialize};

use super::config::Config;

/// Seconds counted by the minute window; one more than 60 so that a partly
/// elapsed oldest second is never dropped early (the window errs strict).
const MINUTE_SLOTS: usize = 61;

/// The counters of one connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RateLimiter {
    /// Arrival times (ms) of the latest frames, at most `burst_limit + 1`: exact burst window.
    #[serde(rename = "b", default)]
    recent: Vec<i64>,
    /// Frames per second, ring indexed by `second % MINUTE_SLOTS`.
    #[serde(rename = "m", default)]
    per_second: Vec<u32>,
    /// The second of the latest frame.
    #[serde(rename = "s", default)]
    last_second: i64,
}

/// Which limit a frame broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Burst,
    Minute,
}

impl RateLimiter {
    /// Counts one client frame arriving at `now_ms`; `Err` when it breaks a limit.
    pub fn hit(&mut self, now_ms: i64, config: &Config) -> Result<(), Exceeded> {
        let window_ms = i64::from(config.burst_window_s) * 1000;
        self.recent.retain(|&t| now_ms - t < window_ms);
        self.recent.push(now_ms);
        let burst = self.recent.len() > config.burst_limit as usize;
        let keep = config.burst_limit as usize + 1;
        if self.recent.len() > keep {
            self.recent.drain(..self.recent.len() - keep);
        }

        if self.per_second.len() != MINUTE_SLOTS {
            self.per_second = vec![0; MINUTE_SLOTS];
        }
        let second = now_ms.div_euclid(1000);
        let stale = (second - self.last_second).clamp(0, MINUTE_SLOTS as i64);
        for s in 1..=stale {
            let idx = (self.last_second + s).rem_euclid(MINUTE_SLOTS as i64) as usize;
            self.per_second[idx] = 0;
        }
        self.last_second = self.last_second.max(second);
        let idx = second.rem_euclid(MINUTE_SLOTS as i64) as usize;
        self.per_second[idx] = self.per_second[idx].saturating_add(1);
        let minute: u64 = self.per_second.iter().map(|&c| u64::from(c)).sum();

        if burst {
            Err(Exceeded::Burst)
        } else if minute > u64::from(config.max_messages_per_minute) {
            Err(Exceeded::Minute)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::default()
    }

    #[test]
    fn fifty_frames_in_five_seconds_pass_and_the_fifty_first_breaks_the_burst() {
        let mut r = RateLimiter::default();
        for i in 0..50 {
            assert_eq!(r.hit(1_000_000 + i * 10, &cfg()), Ok(()));
        }
        assert_eq!(r.hit(1_000_600, &cfg()), Err(Exceeded::Burst));
    }

    #[test]
    fn the_burst_window_slides() {
        let mut r = RateLimiter::default();
        for i in 0..50 {
            r.hit(1_000_000 + i, &cfg()).unwrap();
        }
        assert_eq!(
            r.hit(1_005_000, &cfg()),
            Ok(()),
            "the first frames left the window"
        );
    }

    #[test]
    fn a_steady_sender_breaks_the_minute_window_after_a_thousand() {
        let mut r = RateLimiter::default();
        // With the default burst limit no client reaches 1000 a minute, so
        // raise it to see the minute window alone; 20 frames per second.
        let c = Config {
            burst_limit: 10_000,
            ..cfg()
        };
        let mut t = 10_000_000;
        let mut sent = 0;
        let outcome = loop {
            match r.hit(t, &c) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            t += 50;
            assert!(sent <= 1000, "never more than 1000 within a minute");
        };
        assert_eq!(outcome, Exceeded::Minute);
        assert!(
            sent >= 990,
            "only the window's granularity is lost, got {sent}"
        );
    }

    #[test]
    fn survives_a_serde_round_trip_as_in_an_attachment() {
        let mut r = RateLimiter::default();
        r.hit(5_000, &cfg()).unwrap();
        let json = serde_json::to_string(&r).unwrap();
        let back: RateLimiter = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }
}
