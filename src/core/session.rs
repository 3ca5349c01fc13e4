//! One socket's state, kept in its hibernation attachment: who it is, what it
//! receives, and its rate counters.

use serde::{Deserialize, Serialize};

use super::auth::Claims;
use super::config::Config;
use super::filter::Filters;
use super::limits::RateLimiter;

/// The authenticated identity of a socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub sub: Option<String>,
    pub exp: Option<i64>,
    /// When the connection must be closed as expired (`exp` + leeway), in ms.
    pub deadline_ms: Option<i64>,
}

/// The state of a socket on `/ws/{channel}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub channel: String,
    pub opened_ms: i64,
    /// `None` until the token was accepted.
    pub identity: Option<Identity>,
    /// Whether events of the channel are delivered.
    pub subscribed: bool,
    pub filters: Filters,
    /// The client asked for batched frames (`?batch=1`).
    pub batch: bool,
    pub limiter: RateLimiter,
    /// `?since=` of the upgrade URL: the first subscription resumes from it.
    #[serde(default)]
    pub resume_from: Option<u64>,
}

impl Session {
    /// A fresh, unauthenticated socket.
    pub fn new(id: String, channel: String, opened_ms: i64, batch: bool) -> Self {
        Session {
            id,
            channel,
            opened_ms,
            identity: None,
            subscribed: false,
            filters: Filters::default(),
            batch,
            limiter: RateLimiter::default(),
            resume_from: None,
        }
    }

    /// Records an accepted token (a first authentication or a refresh).
    pub fn authenticate(&mut self, claims: &Claims, config: &Config) {
        self.identity = Some(Identity {
            sub: claims.sub.clone(),
            exp: claims.exp,
            deadline_ms: claims.expires_at_ms(i64::from(config.jwt_leeway_s)),
        });
    }

    /// Whether the socket gets live events.
    pub fn receives(&self) -> bool {
        self.identity.is_some() && self.subscribed
    }

    /// When an alarm must next look at this socket: the auth timeout while
    /// unauthenticated, the token's expiry after.
    pub fn deadline_ms(&self, config: &Config) -> Option<i64> {
        match &self.identity {
            None => Some(self.opened_ms + i64::from(config.auth_timeout_s) * 1000),
            Some(id) => id.deadline_ms,
        }
    }

    /// What an alarm at `now_ms` must do with this socket.
    pub fn check(&self, now_ms: i64, config: &Config) -> Deadline {
        match self.deadline_ms(config) {
            Some(d) if d <= now_ms && self.identity.is_none() => Deadline::AuthTimedOut,
            Some(d) if d <= now_ms => Deadline::Expired,
            Some(d) => Deadline::At(d),
            None => Deadline::None,
        }
    }
}

/// An alarm's verdict on one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// No auth message within the timeout: `AUTH_FAILED`, close 4000.
    AuthTimedOut,
    /// The token expired: `AUTH_EXPIRED`, close 4001.
    Expired,
    /// Look again at this time.
    At(i64),
    /// Nothing to watch.
    None,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::auth::Scopes;

    fn claims(exp: Option<i64>) -> Claims {
        Claims {
            sub: Some("u".into()),
            exp,
            scopes: Scopes {
                subscribe: true,
                publish: false,
            },
            channels: None,
        }
    }

    #[test]
    fn unauthenticated_sockets_time_out_after_the_auth_timeout() {
        let s = Session::new("c".into(), "alerts".into(), 1_000, false);
        let cfg = Config::default();
        assert_eq!(s.check(10_999, &cfg), Deadline::At(11_000));
        assert_eq!(s.check(11_000, &cfg), Deadline::AuthTimedOut);
    }

    #[test]
    fn authenticated_sockets_expire_at_exp_plus_leeway() {
        let cfg = Config::default();
        let mut s = Session::new("c".into(), "alerts".into(), 0, false);
        s.authenticate(&claims(Some(100)), &cfg);
        assert_eq!(s.check(129_999, &cfg), Deadline::At(130_000));
        assert_eq!(s.check(130_000, &cfg), Deadline::Expired);
        s.authenticate(&claims(None), &cfg);
        assert_eq!(s.check(i64::MAX, &cfg), Deadline::None);
    }

    #[test]
    fn a_session_fits_an_attachment() {
        let cfg = Config::default();
        let mut s = Session::new(
            "0123456789abcdef".into(),
            "conversation:".to_owned() + &"x".repeat(200),
            0,
            true,
        );
        s.authenticate(&claims(Some(1)), &cfg);
        for i in 0..60 {
            let _ = s.limiter.hit(1_800_000_000_000 + i * 50, &cfg);
        }
        let json = serde_json::to_string(&s).unwrap();
        assert!(
            json.len() < 2048,
            "attachments are limited to 2 KiB, got {}",
            json.len()
        );
    }
}
