//! The one error type of the gateway and its mapping to HTTP statuses, WebSocket
//! close codes and the SPEC's error object.

use serde::Serialize;
use serde_json::{Map, Value};

/// Every error code of the wire contract (SPEC "Errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    AuthFailed,
    AuthExpired,
    SubscriptionFailed,
    RateLimitExceeded,
    InvalidMessage,
    ChannelNotFound,
    MaxSubscriptions,
    Forbidden,
    MessageTooLarge,
    Overloaded,
    /// A command's backend failed, timed out or is not configured.
    CommandFailed,
    InternalError,
    NotFound,
    MethodNotAllowed,
    UpgradeRequired,
}

impl ErrorCode {
    /// The HTTP status an HTTP endpoint answers with for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::AuthFailed | ErrorCode::AuthExpired => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::ChannelNotFound | ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::MessageTooLarge => 413,
            ErrorCode::UpgradeRequired => 426,
            ErrorCode::RateLimitExceeded => 429,
            ErrorCode::Overloaded => 503,
            ErrorCode::CommandFailed => 502,
            ErrorCode::InternalError => 500,
            ErrorCode::SubscriptionFailed
            | ErrorCode::InvalidMessage
            | ErrorCode::MaxSubscriptions => 400,
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::AuthFailed => "AUTH_FAILED",
            ErrorCode::AuthExpired => "AUTH_EXPIRED",
            ErrorCode::SubscriptionFailed => "SUBSCRIPTION_FAILED",
            ErrorCode::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            ErrorCode::InvalidMessage => "INVALID_MESSAGE",
            ErrorCode::ChannelNotFound => "CHANNEL_NOT_FOUND",
            ErrorCode::MaxSubscriptions => "MAX_SUBSCRIPTIONS",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::MessageTooLarge => "MESSAGE_TOO_LARGE",
            ErrorCode::Overloaded => "OVERLOADED",
            ErrorCode::CommandFailed => "COMMAND_FAILED",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::UpgradeRequired => "UPGRADE_REQUIRED",
        }
    }
}

/// WebSocket close codes of the wire contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    Normal,
    /// The heartbeat sweep found the client silent past the timeout.
    GoingAway,
    MessageTooBig,
    AuthTimeout,
    AuthFailed,
    Forbidden,
    ChannelNotFound,
    RateLimited,
    /// The server lost a socket's state and cannot go on with it.
    InternalError,
}

impl CloseCode {
    /// The numeric code sent in the close frame.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::MessageTooBig => 1009,
            CloseCode::AuthTimeout => 4000,
            CloseCode::AuthFailed => 4001,
            CloseCode::Forbidden => 4003,
            CloseCode::ChannelNotFound => 4004,
            CloseCode::RateLimited => 4008,
            CloseCode::InternalError => 1011,
        }
    }

    /// The reason text sent in the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal closure",
            CloseCode::GoingAway => "heartbeat timeout",
            CloseCode::MessageTooBig => "message too large",
            CloseCode::AuthTimeout => "authentication timeout",
            CloseCode::AuthFailed => "authentication failed",
            CloseCode::Forbidden => "forbidden",
            CloseCode::ChannelNotFound => "channel not found",
            CloseCode::RateLimited => "rate limit exceeded",
            CloseCode::InternalError => "internal error",
        }
    }
}

/// Longest piece of client input an error quotes, in bytes.
pub const MAX_QUOTED: usize = 200;

/// `text` cut to at most `max` bytes on a character boundary, marked with `…`.
fn bounded(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// An error as the client sees it: a code, a human message and optional details.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Map<String, Value>>,
}

impl ApiError {
    /// An error with a code and a message and no details.
    /// A message that quotes client input is cut to [`MAX_QUOTED`] bytes, so
    /// an error never echoes a large frame back.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: bounded(message.into(), MAX_QUOTED * 2),
            details: None,
        }
    }

    /// Adds one entry to `details` (a string value is cut to [`MAX_QUOTED`] bytes).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        let value = match value.into() {
            Value::String(s) => Value::String(bounded(s, MAX_QUOTED)),
            other => other,
        };
        self.details
            .get_or_insert_with(Map::new)
            .insert(bounded(key.to_owned(), MAX_QUOTED), value);
        self
    }

    /// `INVALID_MESSAGE` naming the offending field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::InvalidMessage, message).with("field", field)
    }

    /// `CHANNEL_NOT_FOUND` naming the channel.
    pub fn channel_not_found(channel: &str) -> Self {
        ApiError::new(
            ErrorCode::ChannelNotFound,
            format!("channel '{channel}' does not exist"),
        )
        .with("channel", channel)
    }

    /// `FORBIDDEN` for a channel outside the token's `channels` claim.
    pub fn forbidden_channel(channel: &str) -> Self {
        ApiError::new(
            ErrorCode::Forbidden,
            format!("the token does not grant channel '{channel}'"),
        )
        .with("channel", channel)
    }

    /// `OVERLOADED`: retry the same request (same event ids) after
    /// `retry_after_s` seconds.
    pub fn overloaded(retry_after_s: u64) -> Self {
        ApiError::new(
            ErrorCode::Overloaded,
            "the channel is busy; retry with the same event ids after retry_after_s seconds",
        )
        .with("retry_after_s", retry_after_s)
    }

    /// Seconds a client should wait before retrying, when the error says.
    pub fn retry_after_s(&self) -> Option<u64> {
        self.details.as_ref()?.get("retry_after_s")?.as_u64()
    }

    /// `INTERNAL_ERROR` with a message safe to show to a client.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::InternalError, message)
    }

    /// The HTTP status for this error.
    pub fn http_status(&self) -> u16 {
        self.code.http_status()
    }

    /// The HTTP body: `{"error": {...}}`.
    pub fn http_body(&self) -> String {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a ApiError,
        }
        to_json(&Body { error: self })
    }

    /// The in-band WebSocket frame `{"type": kind, "timestamp", "error": {...}}`.
    /// `kind` is `error` except for refused authentication (`auth.failed`).
    pub fn frame(&self, kind: ErrorFrame, timestamp: &str) -> String {
        #[derive(Serialize)]
        struct Frame<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            timestamp: &'a str,
            error: &'a ApiError,
        }
        to_json(&Frame {
            kind: kind.as_str(),
            timestamp,
            error: self,
        })
    }
}

/// Which message type carries an error on a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorFrame {
    Error,
    AuthFailed,
}

impl ErrorFrame {
    /// The message `type` of this frame kind.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorFrame::Error => "error",
            ErrorFrame::AuthFailed => "auth.failed",
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ApiError {}

/// Serializes a value the core built itself. These types hold only strings,
/// numbers and JSON values, for which serde_json cannot fail; the fallback keeps
/// the no-panic promise anyway.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| {
        format!(
            r#"{{"error":{{"code":"INTERNAL_ERROR","message":"serialization failed: {}"}}}}"#,
            e.to_string().replace('"', "'")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_never_quotes_more_than_a_bounded_piece_of_input() {
        let huge = "é".repeat(300_000);
        let e = ApiError::invalid("type", format!("unknown type '{huge}'")).with("type", huge);
        assert!(e.message.len() <= 2 * MAX_QUOTED + 3);
        let quoted = e.details.as_ref().unwrap()["type"].as_str().unwrap();
        assert!(quoted.len() <= MAX_QUOTED + 3 && quoted.ends_with('…'));
        assert!(e.frame(ErrorFrame::Error, "t").len() < 1024);
    }

    #[test]
    fn every_code_maps_to_its_wire_name_and_status() {
        let table = [
            (ErrorCode::AuthFailed, "AUTH_FAILED", 401),
            (ErrorCode::AuthExpired, "AUTH_EXPIRED", 401),
            (ErrorCode::SubscriptionFailed, "SUBSCRIPTION_FAILED", 400),
            (ErrorCode::RateLimitExceeded, "RATE_LIMIT_EXCEEDED", 429),
            (ErrorCode::InvalidMessage, "INVALID_MESSAGE", 400),
            (ErrorCode::ChannelNotFound, "CHANNEL_NOT_FOUND", 404),
            (ErrorCode::MaxSubscriptions, "MAX_SUBSCRIPTIONS", 400),
            (ErrorCode::Forbidden, "FORBIDDEN", 403),
            (ErrorCode::MessageTooLarge, "MESSAGE_TOO_LARGE", 413),
            (ErrorCode::Overloaded, "OVERLOADED", 503),
            (ErrorCode::CommandFailed, "COMMAND_FAILED", 502),
            (ErrorCode::InternalError, "INTERNAL_ERROR", 500),
            (ErrorCode::NotFound, "NOT_FOUND", 404),
            (ErrorCode::MethodNotAllowed, "METHOD_NOT_ALLOWED", 405),
            (ErrorCode::UpgradeRequired, "UPGRADE_REQUIRED", 426),
        ];
        for (code, name, status) in table {
            assert_eq!(code.as_str(), name);
            assert_eq!(serde_json::to_value(code).unwrap(), name);
            assert_eq!(code.http_status(), status, "{name}");
        }
    }

    #[test]
    fn http_body_wraps_the_error_object() {
        let e = ApiError::invalid("data.camera_id", "missing field");
        let v: Value = serde_json::from_str(&e.http_body()).unwrap();
        assert_eq!(v["error"]["code"], "INVALID_MESSAGE");
        assert_eq!(v["error"]["details"]["field"], "data.camera_id");
    }

    #[test]
    fn socket_frame_has_type_timestamp_and_error() {
        let e = ApiError::new(ErrorCode::AuthFailed, "bad token");
        let v: Value =
            serde_json::from_str(&e.frame(ErrorFrame::AuthFailed, "2025-01-01T00:00:00.000Z"))
                .unwrap();
        assert_eq!(v["type"], "auth.failed");
        assert_eq!(v["timestamp"], "2025-01-01T00:00:00.000Z");
        assert_eq!(v["error"]["code"], "AUTH_FAILED");
        assert!(v["error"].get("details").is_none());
    }

    #[test]
    fn close_codes_match_the_spec() {
        let codes: Vec<u16> = [
            CloseCode::Normal,
            CloseCode::GoingAway,
            CloseCode::MessageTooBig,
            CloseCode::AuthTimeout,
            CloseCode::AuthFailed,
            CloseCode::Forbidden,
            CloseCode::ChannelNotFound,
            CloseCode::RateLimited,
        ]
        .iter()
        .map(|c| c.code())
        .collect();
        assert_eq!(codes, vec![1000, 1001, 1009, 4000, 4001, 4003, 4004, 4008]);
    }
}
