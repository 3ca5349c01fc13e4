//! Every way the server ends a socket, as a value: the one table that says
//! which frame tells the client why (if any), with which error code, and which
//! close code follows. The objects and the Worker only carry it out.

use super::auth::Claims;
use super::channel::Channel;
use super::error::{ApiError, CloseCode, ErrorCode, ErrorFrame};

/// A reason to close a socket.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// A token that failed verification (`AUTH_FAILED`, or `AUTH_EXPIRED`
    /// when it was already past `exp`).
    BadToken(ApiError),
    /// No `auth` message within `AUTH_TIMEOUT_S`.
    AuthTimeout,
    /// The token of a live connection passed `exp` + leeway.
    Expired,
    /// A token without scope `subscribe`.
    NoSubscribeScope,
    /// On `/ws/{channel}`, a token whose `channels` claim excludes the channel.
    ChannelForbidden(String),
    /// On `/ws/{channel}`, a channel that does not exist.
    ChannelNotFound(ApiError),
    /// Claims too large to keep with the connection.
    ClaimsTooLarge,
    /// Over the burst or minute window.
    RateLimited(ApiError),
    /// A client frame over 1 MiB.
    FrameTooLarge,
    /// A client that heartbeats went silent for `HEARTBEAT_TIMEOUT_S`.
    HeartbeatTimeout,
    /// The server lost the socket's state.
    LostState,
}

impl Refusal {
    /// Whether verified claims may hold a socket: scope `subscribe`, and on
    /// `/ws/{channel}` (`channel` given) the channel within the claim.
    pub fn of_claims(claims: &Claims, channel: Option<&Channel>) -> Option<Refusal> {
        if !claims.scopes.subscribe {
            return Some(Refusal::NoSubscribeScope);
        }
        match channel {
            Some(ch) if !claims.allows(ch, false) => {
                Some(Refusal::ChannelForbidden(ch.name().to_owned()))
            }
            _ => None,
        }
    }

    /// The frame kind and error sent before the close, if any.
    pub fn error(&self) -> Option<(ErrorFrame, ApiError)> {
        let (kind, err) = match self {
            Refusal::BadToken(e) => (ErrorFrame::AuthFailed, e.clone()),
            Refusal::AuthTimeout => (
                ErrorFrame::AuthFailed,
                ApiError::new(ErrorCode::AuthFailed, "no auth message within the timeout"),
            ),
            Refusal::Expired => (
                ErrorFrame::Error,
                ApiError::new(
                    ErrorCode::AuthExpired,
                    "token has expired; reconnect with a fresh token",
                ),
            ),
            Refusal::NoSubscribeScope => (
                ErrorFrame::Error,
                ApiError::new(ErrorCode::Forbidden, "the token lacks scope 'subscribe'"),
            ),
            Refusal::ChannelForbidden(ch) => (ErrorFrame::Error, ApiError::forbidden_channel(ch)),
            Refusal::ChannelNotFound(e) => (ErrorFrame::Error, e.clone()),
            Refusal::ClaimsTooLarge => (
                ErrorFrame::AuthFailed,
                ApiError::new(
                    ErrorCode::AuthFailed,
                    "the token's claims are too large for a connection",
                ),
            ),
            Refusal::RateLimited(e) => (ErrorFrame::Error, e.clone()),
            Refusal::FrameTooLarge => (
                ErrorFrame::Error,
                ApiError::new(ErrorCode::MessageTooLarge, "frames are limited to 1 MiB"),
            ),
            Refusal::HeartbeatTimeout => return None,
            Refusal::LostState => (
                ErrorFrame::Error,
                ApiError::internal("the connection's state was lost; reconnect"),
            ),
        };
        Some((kind, err))
    }

    /// The close code that follows.
    pub fn close(&self) -> CloseCode {
        match self {
            Refusal::BadToken(_) | Refusal::Expired | Refusal::ClaimsTooLarge => {
                CloseCode::AuthFailed
            }
            Refusal::AuthTimeout => CloseCode::AuthTimeout,
            Refusal::NoSubscribeScope | Refusal::ChannelForbidden(_) => CloseCode::Forbidden,
            Refusal::ChannelNotFound(_) => CloseCode::ChannelNotFound,
            Refusal::RateLimited(_) => CloseCode::RateLimited,
            Refusal::FrameTooLarge => CloseCode::MessageTooBig,
            Refusal::HeartbeatTimeout => CloseCode::GoingAway,
            Refusal::LostState => CloseCode::InternalError,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reason frame's kind and error code.
    type Frame = (&'static str, &'static str);
    /// The reason frame, if any, and the close code.
    type Row = (Option<Frame>, u16);

    fn row(r: &Refusal) -> Row {
        let frame = r.error().map(|(k, e)| (k.as_str(), e.code.as_str()));
        (frame, r.close().code())
    }

    #[test]
    fn each_refusal_has_the_frame_code_and_close_of_the_spec_table() {
        let bad = ApiError::new(ErrorCode::AuthFailed, "bad");
        let expired = ApiError::new(ErrorCode::AuthExpired, "old");
        let table: Vec<(Refusal, Option<Frame>, u16)> = vec![
            (
                Refusal::BadToken(bad),
                Some(("auth.failed", "AUTH_FAILED")),
                4001,
            ),
            (
                Refusal::BadToken(expired),
                Some(("auth.failed", "AUTH_EXPIRED")),
                4001,
            ),
            (
                Refusal::AuthTimeout,
                Some(("auth.failed", "AUTH_FAILED")),
                4000,
            ),
            (Refusal::Expired, Some(("error", "AUTH_EXPIRED")), 4001),
            (
                Refusal::NoSubscribeScope,
                Some(("error", "FORBIDDEN")),
                4003,
            ),
            (
                Refusal::ChannelForbidden("alerts".into()),
                Some(("error", "FORBIDDEN")),
                4003,
            ),
            (
                Refusal::ChannelNotFound(ApiError::channel_not_found("x")),
                Some(("error", "CHANNEL_NOT_FOUND")),
                4004,
            ),
            (
                Refusal::ClaimsTooLarge,
                Some(("auth.failed", "AUTH_FAILED")),
                4001,
            ),
            (
                Refusal::RateLimited(ApiError::new(ErrorCode::RateLimitExceeded, "slow")),
                Some(("error", "RATE_LIMIT_EXCEEDED")),
                4008,
            ),
            (
                Refusal::FrameTooLarge,
                Some(("error", "MESSAGE_TOO_LARGE")),
                1009,
            ),
            (Refusal::HeartbeatTimeout, None, 1001),
            (Refusal::LostState, Some(("error", "INTERNAL_ERROR")), 1011),
        ];
        for (refusal, frame, close) in table {
            assert_eq!(row(&refusal), (frame, close), "{refusal:?}");
        }
    }

    #[test]
    fn claims_need_scope_subscribe_and_on_a_direct_socket_the_channel() {
        use crate::core::auth::Scopes;
        use crate::core::config::Config;
        let alerts = Channel::parse("alerts", &Config::default()).unwrap();
        let mut claims = Claims {
            sub: None,
            exp: None,
            scopes: Scopes {
                subscribe: true,
                publish: false,
                admin: false,
            },
            channels: Some(vec!["weather".into()]),
        };
        assert_eq!(Refusal::of_claims(&claims, None), None);
        assert_eq!(
            Refusal::of_claims(&claims, Some(&alerts)),
            Some(Refusal::ChannelForbidden("alerts".into()))
        );
        claims.scopes.subscribe = false;
        assert_eq!(
            Refusal::of_claims(&claims, None),
            Some(Refusal::NoSubscribeScope)
        );
    }

    #[test]
    fn no_close_but_the_heartbeat_timeout_comes_without_a_reason() {
        for r in [
            Refusal::AuthTimeout,
            Refusal::Expired,
            Refusal::LostState,
            Refusal::FrameTooLarge,
        ] {
            assert!(r.error().is_some());
        }
        assert!(Refusal::HeartbeatTimeout.error().is_none());
    }
}
