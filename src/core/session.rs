//! One socket's state, kept in its hibernation attachment: who it is, its
//! deadlines, its rate counters, and what it receives.

use serde::{Deserialize, Serialize};

use super::auth::Claims;
use super::config::Config;
use super::dialect;
use super::filter::Filters;
use super::limits::RateLimiter;
use super::protocol::{Empty, ServerMessage, Who};

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
    /// When the client last sent a frame the handler saw (the liveness
    /// sweep also reads the runtime's auto-response time).
    #[serde(default)]
    pub last_seen_ms: i64,
    /// The client sent a ping the handler saw (the exact one never reaches
    /// it; the runtime's auto-response time shows those).
    #[serde(default)]
    pub heartbeats: bool,
    /// When the server last sent this socket a keep-alive frame.
    #[serde(default)]
    pub keepalive_ms: i64,
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
            heartbeats: false,
            keepalive_ms: 0,
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

    /// Who this connection is, for presence frames.
    pub fn who(&self) -> Who {
        Who {
            sub: self.identity.as_ref().and_then(|i| i.claims.sub.clone()),
            connection_id: self.id.clone(),
        }
    }

    /// When the socket must be closed whatever the client does: the auth
    /// timeout while unauthenticated, the token's expiry after.
    pub fn deadline_ms(&self, config: &Config) -> Option<i64> {
        match &self.identity {
            None => Some(self.opened_ms + i64::from(config.auth_timeout_s) * 1000),
            Some(id) => id.deadline_ms,
        }
    }

    /// When the client was last heard: a frame, an auto-answered ping, or
    /// the opening.
    fn heard_ms(&self, last_pong_ms: Option<i64>) -> i64 {
        self.last_seen_ms
            .max(last_pong_ms.unwrap_or(0))
            .max(self.opened_ms)
    }

    /// Whether the client heartbeats, so its silence means it is gone.
    fn pings(&self, last_pong_ms: Option<i64>) -> bool {
        self.heartbeats || last_pong_ms.is_some()
    }

    /// When a keep-alive is due: `KEEPALIVE_S` after the client was last
    /// heard or the last keep-alive, whichever is later; never before
    /// authentication.
    fn keepalive_due_ms(&self, last_pong_ms: Option<i64>, config: &Config) -> Option<i64> {
        self.is_authenticated().then(|| {
            self.heard_ms(last_pong_ms).max(self.keepalive_ms)
                + i64::from(config.keepalive_s) * 1000
        })
    }

    /// When a heartbeating client counts as gone.
    fn heartbeat_due_ms(&self, last_pong_ms: Option<i64>, config: &Config) -> Option<i64> {
        self.pings(last_pong_ms)
            .then(|| self.heard_ms(last_pong_ms) + i64::from(config.heartbeat_timeout_s) * 1000)
    }

    /// When an alarm should next look at this socket. A keep-alive may go
    /// out up to a ninth of `KEEPALIVE_S` late (5 s of 45), so that one wake
    /// serves every socket due within that window.
    pub fn next_check_ms(&self, last_pong_ms: Option<i64>, config: &Config) -> i64 {
        let slack = i64::from(config.keepalive_s) * 1000 / 9;
        [
            self.deadline_ms(config),
            self.heartbeat_due_ms(last_pong_ms, config),
            self.keepalive_due_ms(last_pong_ms, config)
                .map(|k| k + slack),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(i64::MAX)
    }

    /// What an alarm at `now_ms` must do with this socket. `last_pong_ms` is
    /// the runtime's last auto-response to this socket's ping, if any.
    pub fn check(&self, now_ms: i64, last_pong_ms: Option<i64>, config: &Config) -> Deadline {
        if self.deadline_ms(config).is_some_and(|d| d <= now_ms) {
            return if self.identity.is_none() {
                Deadline::AuthTimedOut
            } else {
                Deadline::Expired
            };
        }
        if self
            .heartbeat_due_ms(last_pong_ms, config)
            .is_some_and(|d| d <= now_ms)
        {
            return Deadline::Silent;
        }
        if self
            .keepalive_due_ms(last_pong_ms, config)
            .is_some_and(|d| d <= now_ms)
        {
            return Deadline::KeepAlive;
        }
        Deadline::At(self.next_check_ms(last_pong_ms, config))
    }
}

/// An alarm's verdict on one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// No auth message within the timeout: `AUTH_FAILED`, close 4000.
    AuthTimedOut,
    /// The token expired: `AUTH_EXPIRED`, close 4001.
    Expired,
    /// A client that heartbeats went silent past the timeout: close 1001.
    Silent,
    /// The client has been silent for `KEEPALIVE_S`: send a keep-alive,
    /// record it, and check again.
    KeepAlive,
    /// Look again at this time.
    At(i64),
}

/// A socket's attachment, which carries its [`Conn`].
pub trait HasConn {
    fn conn(&self) -> &Conn;
    fn conn_mut(&mut self) -> &mut Conn;

    /// The keep-alive frame this socket's client takes as "connection alive".
    fn keepalive_frame(&self, timestamp: &str) -> String {
        ServerMessage::Pong {
            timestamp,
            data: Empty {},
        }
        .to_json()
    }
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
    /// When the socket last subscribed (its presence `joined_at`).
    #[serde(default)]
    pub joined_ms: i64,
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
            joined_ms: 0,
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

    fn keepalive_frame(&self, timestamp: &str) -> String {
        if self.dialect {
            dialect::pong(timestamp)
        } else {
            ServerMessage::Pong {
                timestamp,
                data: Empty {},
            }
            .to_json()
        }
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
                admin: false,
            },
            channels: None,
        }
    }

    fn authed(exp: Option<i64>) -> Conn {
        let mut c = Conn::new("c".into(), 0, false);
        c.authenticate(&claims(exp), &Config::default());
        c
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
        let mut c = authed(Some(100));
        c.last_seen_ms = 120_000;
        c.keepalive_ms = 120_000;
        assert_eq!(c.check(129_999, None, &cfg), Deadline::At(130_000));
        assert_eq!(c.check(130_000, None, &cfg), Deadline::Expired);
    }

    #[test]
    fn expiry_is_not_hidden_by_silence() {
        let cfg = Config::default();
        let c = authed(Some(60));
        assert_eq!(c.check(90_000, None, &cfg), Deadline::Expired);
    }

    #[test]
    fn a_client_that_never_pings_is_never_closed_for_silence() {
        let cfg = Config::default();
        let mut c = authed(None);
        for t in [44_999, 89_999, 90_000, 3_600_000] {
            let verdict = c.check(t, None, &cfg);
            assert_ne!(verdict, Deadline::Silent, "at {t}");
            if verdict == Deadline::KeepAlive {
                c.keepalive_ms = t;
            }
        }
    }

    #[test]
    fn a_silent_client_gets_a_keepalive_every_interval() {
        let cfg = Config::default();
        let mut c = authed(None);
        assert_eq!(c.check(44_999, None, &cfg), Deadline::At(50_000));
        assert_eq!(c.check(45_000, None, &cfg), Deadline::KeepAlive);
        c.keepalive_ms = 46_000;
        assert_eq!(c.check(46_000, None, &cfg), Deadline::At(96_000));
        assert_eq!(c.check(91_000, None, &cfg), Deadline::KeepAlive);
    }

    #[test]
    fn a_client_that_pings_within_the_interval_never_gets_a_keepalive() {
        let cfg = Config::default();
        let c = authed(None);
        for ping in (30_000..600_000).step_by(30_000) {
            assert!(matches!(
                c.check(ping + 29_999, Some(ping), &cfg),
                Deadline::At(_)
            ));
        }
    }

    #[test]
    fn a_client_that_pinged_and_stopped_is_closed_after_the_heartbeat_timeout() {
        let cfg = Config::default();
        let mut c = authed(None);
        c.keepalive_ms = 80_000;
        assert_eq!(c.check(100_000, Some(10_000), &cfg), Deadline::Silent);
        assert!(matches!(
            c.check(99_999, Some(10_000), &cfg),
            Deadline::At(100_000)
        ));
        let mut handled = authed(None);
        handled.heartbeats = true;
        handled.last_seen_ms = 5_000;
        handled.keepalive_ms = 90_000;
        assert_eq!(
            handled.check(95_000, None, &cfg),
            Deadline::Silent,
            "a ping the handler answered counts too"
        );
    }

    #[test]
    fn dialect_sockets_are_kept_alive_with_their_own_pong() {
        let s = HubSession {
            conn: authed(None),
            dialect: true,
        };
        assert!(s.keepalive_frame("t").starts_with(r#"{"type":"PONG""#));
        let plain = Session::new(authed(None), "alerts".into());
        assert_eq!(
            plain.keepalive_frame("t"),
            r#"{"type":"pong","timestamp":"t","data":{}}"#
        );
    }

    #[test]
    fn keepalives_are_at_most_a_ninth_of_the_interval_late() {
        let cfg = Config::default();
        let c = authed(None);
        assert_eq!(c.next_check_ms(None, &cfg), 50_000);
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
