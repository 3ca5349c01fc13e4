//! Commands to backends (Centrifugo's RPC proxy): what is sent to
//! `COMMAND_URL`, and how the backend's answer becomes the socket's frame.

use serde::Serialize;
use serde_json::Value;

use super::error::{ApiError, ErrorCode, ErrorFrame};
use super::protocol::command_result_frame;

/// The body `POST`ed to the backend.
#[derive(Debug, Serialize)]
pub struct CommandCall<'a> {
    pub command: &'a str,
    /// The client's message, whole.
    pub message: &'a Value,
    pub sub: Option<&'a str>,
    pub connection_id: &'a str,
    /// The token's `channels` claim, or null.
    pub channels: Option<&'a [String]>,
}

/// Why a command got no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The backend answered with this non-2xx status.
    Status(u16),
    Timeout,
    Unreachable,
    InvalidResponse,
    NotConfigured,
}

impl Failure {
    fn reason(self) -> Option<&'static str> {
        match self {
            Failure::Status(_) => None,
            Failure::Timeout => Some("timeout"),
            Failure::Unreachable => Some("unreachable"),
            Failure::InvalidResponse => Some("invalid_response"),
            Failure::NotConfigured => Some("not_configured"),
        }
    }
}

/// What the backend's HTTP answer means: the `data` of the `.result` frame,
/// or the failure.
pub fn read_answer(status: u16, body: &str) -> Result<Value, Failure> {
    if !(200..300).contains(&status) {
        return Err(Failure::Status(status));
    }
    serde_json::from_str(body).map_err(|_| Failure::InvalidResponse)
}

/// The frame a command's socket gets: `<name>.result`, or `COMMAND_FAILED`
/// with `details` naming the command, its `id` and the status or reason.
pub fn answer_frame(
    name: &str,
    id: Option<&Value>,
    outcome: Result<Value, Failure>,
    ts: &str,
) -> String {
    match outcome {
        Ok(data) => command_result_frame(name, ts, &data, id),
        Err(failure) => {
            let message = match failure {
                Failure::Status(s) => format!("the backend answered '{name}' with HTTP {s}"),
                Failure::Timeout => format!("the backend did not answer '{name}' in time"),
                Failure::Unreachable => format!("the backend for '{name}' cannot be reached"),
                Failure::InvalidResponse => {
                    format!("the backend's answer to '{name}' is not JSON")
                }
                Failure::NotConfigured => {
                    format!("no backend is configured for '{name}' (COMMAND_URL)")
                }
            };
            let mut err = ApiError::new(ErrorCode::CommandFailed, message).with("command", name);
            if let Some(id) = id {
                err = err.with("id", id.clone());
            }
            err = match (failure, failure.reason()) {
                (Failure::Status(s), _) => err.with("status", s),
                (_, Some(reason)) => err.with("reason", reason),
                (_, None) => err,
            };
            err.frame(ErrorFrame::Error, ts)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frame(outcome: Result<Value, Failure>) -> Value {
        serde_json::from_str(&answer_frame(
            "stream_control",
            Some(&json!("c1")),
            outcome,
            "t",
        ))
        .unwrap()
    }

    #[test]
    fn a_2xx_json_answer_is_the_result() {
        let data = read_answer(200, r#"{"ok":true}"#);
        assert_eq!(
            frame(data),
            json!({"type":"stream_control.result","timestamp":"t","data":{"ok":true},"id":"c1"})
        );
        assert_eq!(read_answer(204, "null"), Ok(Value::Null));
    }

    #[test]
    fn a_non_2xx_answer_names_the_status() {
        let f = frame(read_answer(500, r#"{"ok":true}"#));
        assert_eq!(f["error"]["code"], "COMMAND_FAILED");
        assert_eq!(
            f["error"]["details"],
            json!({"command":"stream_control","id":"c1","status":500})
        );
    }

    #[test]
    fn other_failures_name_the_reason() {
        assert_eq!(read_answer(200, "<html>"), Err(Failure::InvalidResponse));
        for (failure, reason) in [
            (Failure::Timeout, "timeout"),
            (Failure::Unreachable, "unreachable"),
            (Failure::InvalidResponse, "invalid_response"),
            (Failure::NotConfigured, "not_configured"),
        ] {
            let f = frame(Err(failure));
            assert_eq!(f["error"]["details"]["reason"], reason);
            assert!(f["error"]["details"].get("status").is_none());
        }
    }

    #[test]
    fn the_call_carries_the_message_and_who_sent_it() {
        let msg = json!({"type":"stream_control","action":"start","camera_id":"cam_123"});
        let channels = vec!["cameras.status".to_owned()];
        let body = serde_json::to_value(CommandCall {
            command: "stream_control",
            message: &msg,
            sub: Some("op"),
            connection_id: "hub-0.x",
            channels: Some(&channels),
        })
        .unwrap();
        assert_eq!(
            body,
            json!({"command":"stream_control","message":msg,"sub":"op",
                   "connection_id":"hub-0.x","channels":["cameras.status"]})
        );
    }
}
