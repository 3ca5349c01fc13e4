//! System status (`002_…`): what `POST /v1/system/status` sets, the frame
//! every socket gets, and the rule for sockets that authenticate meanwhile.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{to_json, ApiError, ErrorCode};

/// Longest status message accepted.
const MAX_MESSAGE_LEN: usize = 1000;

/// The gateway's announced state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Online,
    Degraded,
    Maintenance,
}

/// The status as stored and announced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemStatus {
    pub status: Level,
    /// When it was set, in seconds since the epoch.
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect_after_s: Option<u64>,
}

impl SystemStatus {
    /// The status before anyone set one.
    pub fn online_since(timestamp: i64) -> Self {
        SystemStatus {
            status: Level::Online,
            timestamp,
            message: None,
            reconnect_after_s: None,
        }
    }

    /// Parses a `POST /v1/system/status` body set at `now_s`.
    pub fn parse(body: &str, now_s: i64) -> Result<Self, ApiError> {
        let obj = match serde_json::from_str::<Value>(body) {
            Ok(Value::Object(o)) => o,
            _ => return Err(ApiError::new(
                ErrorCode::InvalidMessage,
                "the body must be a JSON object {\"status\", \"message\"?, \"reconnect_after_s\"?}",
            )),
        };
        if let Some(extra) = obj
            .keys()
            .find(|k| !["status", "message", "reconnect_after_s"].contains(&k.as_str()))
        {
            return Err(ApiError::invalid(
                extra,
                format!("unknown field '{extra}'; expected: status, message, reconnect_after_s"),
            ));
        }
        let status = obj
            .get("status")
            .and_then(|s| serde_json::from_value::<Level>(s.clone()).ok())
            .ok_or_else(|| {
                ApiError::invalid(
                    "status",
                    "'status' must be \"online\", \"degraded\" or \"maintenance\"",
                )
            })?;
        let message = match obj.get("message") {
            None | Some(Value::Null) => None,
            Some(Value::String(m)) if m.len() <= MAX_MESSAGE_LEN => Some(m.clone()),
            Some(_) => {
                return Err(ApiError::invalid(
                    "message",
                    format!("'message' must be a string of at most {MAX_MESSAGE_LEN} bytes"),
                ))
            }
        };
        let reconnect_after_s = match obj.get("reconnect_after_s") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                ApiError::invalid(
                    "reconnect_after_s",
                    "'reconnect_after_s' must be a non-negative integer",
                )
            })?),
        };
        Ok(SystemStatus {
            status,
            timestamp: now_s,
            message,
            reconnect_after_s,
        })
    }

    /// Whether sockets that authenticate now are told the status.
    pub fn is_announced(&self) -> bool {
        self.status != Level::Online
    }

    /// `{"type":"system","event":"status","timestamp","data"}`.
    pub fn frame(&self, ts: &str) -> String {
        #[derive(Serialize)]
        struct Frame<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            event: &'static str,
            timestamp: &'a str,
            data: &'a SystemStatus,
        }
        to_json(&Frame {
            kind: "system",
            event: "status",
            timestamp: ts,
            data: self,
        })
    }

    /// `GET /v1/system/status`: `{"status","message"?,"since"}`.
    pub fn current_json(&self) -> String {
        #[derive(Serialize)]
        struct Body<'a> {
            status: Level,
            #[serde(skip_serializing_if = "Option::is_none")]
            message: Option<&'a str>,
            since: i64,
        }
        to_json(&Body {
            status: self.status,
            message: self.message.as_deref(),
            since: self.timestamp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_status_with_its_options() {
        let s = SystemStatus::parse(
            r#"{"status":"maintenance","message":"upgrade","reconnect_after_s":30}"#,
            100,
        )
        .unwrap();
        assert_eq!(s.status, Level::Maintenance);
        assert_eq!(
            (s.message.as_deref(), s.reconnect_after_s, s.timestamp),
            (Some("upgrade"), Some(30), 100)
        );
        assert!(s.is_announced());
        assert!(!SystemStatus::online_since(1).is_announced());
    }

    #[test]
    fn bad_bodies_name_the_field() {
        for (body, field) in [
            (r#"{"status":"asleep"}"#, "status"),
            (r#"{}"#, "status"),
            (r#"{"status":"online","message":5}"#, "message"),
            (
                r#"{"status":"online","reconnect_after_s":-1}"#,
                "reconnect_after_s",
            ),
            (r#"{"status":"online","colour":"red"}"#, "colour"),
        ] {
            let e = SystemStatus::parse(body, 0).unwrap_err();
            assert_eq!(e.details.unwrap()["field"], field, "{body}");
        }
        assert_eq!(
            SystemStatus::parse("[]", 0).unwrap_err().code,
            ErrorCode::InvalidMessage
        );
    }

    #[test]
    fn the_frame_is_the_002_shape() {
        let s = SystemStatus::parse(r#"{"status":"degraded"}"#, 1645678900).unwrap();
        let v: Value = serde_json::from_str(&s.frame("t")).unwrap();
        assert_eq!(
            v,
            json!({"type":"system","event":"status","timestamp":"t",
                   "data":{"status":"degraded","timestamp":1645678900}})
        );
        let c: Value = serde_json::from_str(&s.current_json()).unwrap();
        assert_eq!(c, json!({"status":"degraded","since":1645678900}));
    }
}
