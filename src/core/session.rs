//! One socket's state, kept in its hibernation attachment: who it is, its
//! deadlines, its rate counters, and what it receives.

use serde::{Deserialize, Serialize};

use super::auth::Claims;
use super::config::Config;
use super::filter::Filters;
use super::limits::RateLimiter;

/// The authenticated identity of a socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub claims: Claims,
    /// When the connection must be closed as expired (`exp` + leeway), in ms.
    pub deadline_ms: Option<i64>,
}

/// What every socket has, on either endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conn {
    pub id: String,
    pub opened_ms: i64,
    /// `None` until a token was accepted.
    pub identity: Option<Identity>,
    /// The client asked for batched frames (`?batch=1`).
    pub batch: bool,
    pub limiter: RateLimiter,
    /// When the client last sent a frame the handler saw (the heartbeat sweep
    /// also reads the runtime's auto-response time).
    #[serde(default)]
    pub last_seen_ms: i64,
}

impl Conn {
    /// A fresh, unauthenticated connection.
    pub fn new(id: String, opened_ms: i64, batch: bool) -> Self {
        Conn {
            id,
            opened_ms,
            identity: None,
            batch,
            limiter: RateLimiter::default(),
            last_seen_ms: opened_ms,
        }
    }

    /// Records an accepted token (a first authentication or a refresh).
    pub fn authenticate(&mut self, claims: &Claims, config: &Config) {
        self.identity = Some(Identity {
            claims: claims.clone(),
            deadline_ms: claims.expires_at_ms(i64::from(config.jwt_leeway_s)),
        });
    }

    /// Whether a token was accepted.
    pub fn is_authenticated(&self) -> bool {
        self.identity.is_some()
    }

    /// When an alarm must next look at this socket: the auth timeout while
    /// unauthenticated, the token's expiry after.
    pub fn deadline_ms(&self, config: &Config) -> Option<i64> {
        match &self.identity {
            None => Some(self.opened_ms + i64::from(config.auth_timeout_s) * 1000),
            Some(id) => id.deadline_ms,
        }
    }

    /// When an alarm must first look at a socket that just changed: its
    /// deadline or the end of its heartbeat window, whichever comes first.
    pub fn next_check_ms(&self, config: &Config) -> i64 {
        let silent_until =
            self.last_seen_ms.max(self.opened_ms) + i64::from(config.heartbeat_timeout_s) * 1000;
        self.deadline_ms(config)
            .map_or(silent_until, |d| d.min(silent_until))
    }

    /// What an alarm at `now_ms` must do with this socket. `last_pong_ms` is
    /// the runtime's last auto-response to this socket's ping, if any.
    pub fn check(&self, now_ms: i64, last_pong_ms: Option<i64>, config: &Config) -> Deadline {
        let alive_ms = self
            .last_seen_ms
            .max(last_pong_ms.unwrap_or(0))
            .max(self.opened_ms);
        let silent_until = alive_ms + i64::from(config.heartbeat_timeout_s) * 1000;
        if silent_until <= now_ms {
            return Deadline::Silent;
        }
        match self.deadline_ms(config).filter(|d| *d <= now_ms) {
            Some(_) if self.identity.is_none() => Deadline::AuthTimedOut,
            Some(_) => Deadline::Expired,
            None => Deadline::At(
                self.deadline_ms(config)
                    .map_or(silent_until, |d| d.min(silent_until)),
            ),
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
    /// Nothing heard from the client within the heartbeat timeout: close 1001.
    Silent,
    /// Look again at this time.
    At(i64),
}

/// A socket's attachment, which carries its [`Conn`].
pub trait HasConn {
    fn conn(&self) -> &Conn;
    fn conn_mut(&mut self) -> &mut Conn;
}

/// The state of a socket on `/ws/{channel}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub conn: Conn,
    pub channel: String,
    /// Whether events of the channel are delivered.
    pub subscribed: bool,
    pub filters: Filters,
    /// `?since=` of the upgrade URL: the first subscription resumes from it.
    #[serde(default)]
    pub resume_from: Option<u64>,
}

impl Session {
    /// A fresh, unauthenticated socket on `channel`.
    pub fn new(conn: Conn, channel: String) -> Self {
        Session {
            conn,
            channel,
            subscribed: false,
            filters: Filters::default(),
            resume_from: None,
        }
    }

    /// Whether the socket gets live events.
    pub fn receives(&self) -> bool {
        self.conn.is_authenticated() && self.subscribed
    }
}

impl HasConn for Session {
    fn conn(&self) -> &Conn {
        &self.conn
    }

    fn conn_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

/// The state of a multiplexed `/ws` socket; its subscriptions live in the hub's
/// storage, since ten of them with filters would not fit an attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HubSession {
    pub conn: Conn,
    /// Speaks the `001_…` dialect (`?dialect=001` or a first `action` message).
    #[serde(default)]
    pub dialect: bool,
}

impl HasConn for HubSession {
    fn conn(&self) -> &Conn {
        &self.conn
    }

    fn conn_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

/// Largest attachment the runtime stores.
pub const MAX_ATTACHMENT_BYTES: usize = 2048;

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
        let c = Conn::new("c".into(), 1_000, false);
        let cfg = Config::default();
        assert_eq!(c.check(10_999, None, &cfg), Deadline::At(11_000));
        assert_eq!(c.check(11_000, None, &cfg), Deadline::AuthTimedOut);
    }

    #[test]
    fn authenticated_sockets_expire_at_exp_plus_leeway() {
        let cfg = Config::default();
        let mut c = Conn::new("c".into(), 0, false);
        c.authenticate(&claims(Some(100)), &cfg);
        c.last_seen_ms = 120_000;
        assert_eq!(c.check(129_999, None, &cfg), Deadline::At(130_000));
        assert_eq!(c.check(130_000, None, &cfg), Deadline::Expired);
    }

    #[test]
    fn a_silent_socket_is_swept_after_the_heartbeat_timeout() {
        let cfg = Config::default();
        let mut c = Conn::new("c".into(), 0, false);
        c.authenticate(&claims(None), &cfg);
        assert_eq!(c.check(29_999, None, &cfg), Deadline::At(30_000));
        assert_eq!(c.check(30_000, None, &cfg), Deadline::Silent);
        assert_eq!(
            c.check(30_000, Some(25_000), &cfg),
            Deadline::At(55_000),
            "an auto-response counts"
        );
        c.last_seen_ms = 40_000;
        assert_eq!(
            c.check(60_000, Some(25_000), &cfg),
            Deadline::At(70_000),
            "so does a message"
        );
    }

    #[test]
    fn a_session_fits_an_attachment() {
        let cfg = Config::default();
        let mut conn = Conn::new("0123456789abcdef".into(), 0, true);
        let mut cl = claims(Some(1));
        cl.channels = Some(
            (0..10)
                .map(|i| format!("conversation:team-{i}-*"))
                .collect(),
        );
        conn.authenticate(&cl, &cfg);
        for i in 0..60 {
            let _ = conn.limiter.hit(1_800_000_000_000 + i * 50, &cfg);
        }
        let s = Session::new(conn, "conversation:".to_owned() + &"x".repeat(200));
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.len() < MAX_ATTACHMENT_BYTES, "got {}", json.len());
    }
}
