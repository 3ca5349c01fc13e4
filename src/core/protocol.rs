//! The wire protocol as types: what clients and producers send (parsed at the
//! edge into typed values) and what the server sends back.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::channel::Channel;
use super::config::Config;
use super::error::{to_json, ApiError, ErrorCode};
use super::time::parse_rfc3339_ms;

/// Largest client frame and publish body (1 MiB).
pub const MAX_FRAME_BYTES: usize = 1 << 20;
/// Most events in one publish.
pub const MAX_BATCH: usize = 100;
/// Longest token, channel name and event id accepted.
const MAX_TOKEN_LEN: usize = 8192;
const MAX_CHANNEL_LEN: usize = 256;
const MAX_ID_LEN: usize = 200;

/// A message a client sends on a socket.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Auth {
        token: String,
    },
    Subscribe {
        channel: String,
        filters: Option<Value>,
        since: Option<u64>,
    },
    Unsubscribe {
        channel: String,
    },
    /// A ping that is not byte-for-byte the auto-response request.
    Ping,
    /// `001_…` dialect: `{"action":"subscribe"|"unsubscribe","topics":[…]}`.
    Topics {
        subscribe: bool,
        topics: Vec<String>,
    },
    /// `001_…` dialect: `{"action":"ping"}`, answered `PONG`.
    ActionPing,
    /// `{"type":"publish","channel","event","data","id"?}`: a client publish,
    /// not yet checked against the channel (see [`PublishEvent::validate`]).
    Publish(PublishEvent),
    /// A message whose `type` is one of `COMMANDS`, forwarded whole to the
    /// command backend; `id` is echoed in the answer.
    Command {
        name: String,
        message: Value,
        id: Option<Value>,
    },
    /// `{"type":"presence","channel"}`: who is subscribed to the channel.
    Presence {
        channel: String,
    },
}

fn field_str(obj: &Map<String, Value>, name: &str, max: usize) -> Result<String, ApiError> {
    match obj.get(name) {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= max => Ok(s.clone()),
        Some(Value::String(_)) => Err(ApiError::invalid(
            name,
            format!("'{name}' must be 1 to {max} bytes"),
        )),
        Some(_) => Err(ApiError::invalid(
            name,
            format!("'{name}' must be a string"),
        )),
        None => Err(ApiError::invalid(name, format!("'{name}' is required"))),
    }
}

fn no_other_fields(obj: &Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(extra) => Err(ApiError::invalid(
            extra,
            format!("unknown field '{extra}'; expected: {}", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

fn parse_object(text: &str) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(ApiError::new(
            ErrorCode::InvalidMessage,
            "message must be a JSON object",
        )),
        Err(e) => Err(ApiError::new(
            ErrorCode::InvalidMessage,
            format!("invalid JSON: {e}"),
        )),
    }
}

/// `since` as a non-negative integer sequence number.
fn parse_since(v: Option<&Value>) -> Result<Option<u64>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| ApiError::invalid("since", "'since' must be a non-negative integer")),
        Some(_) => Err(ApiError::invalid(
            "since",
            "'since' must be a non-negative integer",
        )),
    }
}

impl ClientMessage {
    /// Parses a text frame with no commands configured.
    pub fn parse(text: &str) -> Result<ClientMessage, ApiError> {
        ClientMessage::parse_with(text, &[])
    }

    /// Parses a text frame; a `type` listed in `commands` is a
    /// [`ClientMessage::Command`]. Every failure is `INVALID_MESSAGE` naming
    /// the field.
    pub fn parse_with(text: &str, commands: &[String]) -> Result<ClientMessage, ApiError> {
        let obj = parse_object(text)?;
        if !obj.contains_key("type") && obj.contains_key("action") {
            return parse_action(&obj);
        }
        let kind = match obj.get("type") {
            Some(Value::String(t)) => t.as_str(),
            Some(_) => return Err(ApiError::invalid("type", "'type' must be a string")),
            None => return Err(ApiError::invalid("type", "'type' is required")),
        };
        match kind {
            "auth" => {
                no_other_fields(&obj, &["type", "token"])?;
                Ok(ClientMessage::Auth {
                    token: field_str(&obj, "token", MAX_TOKEN_LEN)?,
                })
            }
            "subscribe" => {
                no_other_fields(&obj, &["type", "channel", "filters", "since"])?;
                Ok(ClientMessage::Subscribe {
                    channel: field_str(&obj, "channel", MAX_CHANNEL_LEN)?,
                    filters: obj.get("filters").cloned(),
                    since: parse_since(obj.get("since"))?,
                })
            }
            "unsubscribe" => {
                no_other_fields(&obj, &["type", "channel"])?;
                Ok(ClientMessage::Unsubscribe {
                    channel: field_str(&obj, "channel", MAX_CHANNEL_LEN)?,
                })
            }
            "ping" => Ok(ClientMessage::Ping),
            "publish" => {
                no_other_fields(&obj, &["type", "channel", "event", "data", "id"])?;
                Ok(ClientMessage::Publish(PublishEvent {
                    channel: field_str(&obj, "channel", MAX_CHANNEL_LEN)?,
                    kind: field_str(&obj, "event", MAX_EVENT_TYPE_LEN)?,
                    data: obj
                        .get("data")
                        .cloned()
                        .ok_or_else(|| ApiError::invalid("data", "'data' is required"))?,
                    timestamp: None,
                    id: optional_id(&obj)?,
                }))
            }
            "presence" => {
                no_other_fields(&obj, &["type", "channel"])?;
                Ok(ClientMessage::Presence {
                    channel: field_str(&obj, "channel", MAX_CHANNEL_LEN)?,
                })
            }
            name if commands.iter().any(|c| c == name) => Ok(ClientMessage::Command {
                name: name.to_owned(),
                id: obj.get("id").cloned(),
                message: Value::Object(obj),
            }),
            other => Err(ApiError::invalid(
                "type",
                format!(
                    "unknown message type '{other}'; expected auth, subscribe, unsubscribe, ping, publish, presence{}",
                    commands.iter().map(|c| format!(", {c}")).collect::<String>()
                ),
            )
            .with("type", other)),
        }
    }
}

/// Most topics in one dialect message.
const MAX_TOPICS: usize = 20;

fn parse_action(obj: &Map<String, Value>) -> Result<ClientMessage, ApiError> {
    let action = field_str(obj, "action", 20)?;
    match action.as_str() {
        "ping" => Ok(ClientMessage::ActionPing),
        "subscribe" | "unsubscribe" => {
            no_other_fields(obj, &["action", "topics"])?;
            let topics = match obj.get("topics") {
                Some(Value::Array(list)) if !list.is_empty() && list.len() <= MAX_TOPICS => list
                    .iter()
                    .map(|t| match t {
                        Value::String(s) if !s.is_empty() && s.len() <= 50 => Ok(s.clone()),
                        _ => Err(ApiError::invalid(
                            "topics",
                            "topics must be non-empty strings",
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                _ => {
                    return Err(ApiError::invalid(
                        "topics",
                        format!("'topics' must be a list of 1 to {MAX_TOPICS} topic names"),
                    ))
                }
            };
            Ok(ClientMessage::Topics {
                subscribe: action == "subscribe",
                topics,
            })
        }
        other => Err(ApiError::invalid(
            "action",
            format!("unknown action '{other}'; expected subscribe, unsubscribe or ping"),
        )),
    }
}

/// A channel event as stored, replayed and sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelEvent {
    #[serde(rename = "type")]
    pub kind: String,
    pub channel: String,
    pub seq: u64,
    pub timestamp: String,
    pub data: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// One validated event of a publish request, before the room orders it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishEvent {
    pub channel: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// Longest event type accepted.
const MAX_EVENT_TYPE_LEN: usize = 100;

/// An optional event `id`: a string of 1 to 200 bytes.
fn optional_id(obj: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    match obj.get("id") {
        None | Some(Value::Null) => Ok(None),
        Some(_) => Ok(Some(field_str(obj, "id", MAX_ID_LEN)?)),
    }
}

impl PublishEvent {
    /// Checks the event against its channel (the name, the event type and the
    /// key field its snapshot rule needs); the same rules for every publish.
    pub fn validate(&self, config: &Config) -> Result<Channel, ApiError> {
        let channel = Channel::parse(&self.channel, config)?;
        channel.validate_event(&self.kind, &self.data)?;
        Ok(channel)
    }

    /// [`PublishEvent::validate`] for a socket's `publish`, whose event type
    /// field is `event`.
    pub fn validate_sent(&self, config: &Config) -> Result<Channel, ApiError> {
        self.validate(config).map_err(|mut e| {
            if let Some(field) = e.details.as_mut().and_then(|d| d.get_mut("field")) {
                if field == "type" {
                    *field = Value::from("event");
                }
            }
            e
        })
    }
}

fn parse_publish_event(v: &Value, config: &Config) -> Result<PublishEvent, ApiError> {
    let Some(obj) = v.as_object() else {
        return Err(ApiError::new(
            ErrorCode::InvalidMessage,
            "an event must be a JSON object",
        ));
    };
    no_other_fields(obj, &["channel", "type", "data", "timestamp", "id"])?;
    let channel_name = field_str(obj, "channel", MAX_CHANNEL_LEN)?;
    let kind = field_str(obj, "type", MAX_EVENT_TYPE_LEN)?;
    let data = obj
        .get("data")
        .cloned()
        .ok_or_else(|| ApiError::invalid("data", "'data' is required"))?;
    let timestamp = match obj.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if parse_rfc3339_ms(s).is_some() => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::invalid(
                "timestamp",
                "'timestamp' must be an RFC 3339 date-time",
            ))
        }
    };
    let event = PublishEvent {
        channel: channel_name,
        kind,
        data,
        timestamp,
        id: optional_id(obj)?,
    };
    event.validate(config)?;
    Ok(event)
}

/// Parses and validates a `POST /v1/publish` body: one event or `{"events": [...]}`.
/// Nothing of a batch is accepted when any event is invalid; the error names the
/// event's `index` and `field`.
pub fn parse_publish(body: &str, config: &Config) -> Result<Vec<PublishEvent>, ApiError> {
    if body.len() > MAX_FRAME_BYTES {
        return Err(ApiError::new(
            ErrorCode::MessageTooLarge,
            "publish body is over 1 MiB",
        ));
    }
    let obj = parse_object(body)?;
    let Some(events) = obj.get("events") else {
        return Ok(vec![parse_publish_event(&Value::Object(obj), config)?]);
    };
    no_other_fields(&obj, &["events"])?;
    let list = match events {
        Value::Array(l) if !l.is_empty() && l.len() <= MAX_BATCH => l,
        _ => {
            return Err(ApiError::invalid(
                "events",
                format!("'events' must be a list of 1 to {MAX_BATCH} events"),
            ))
        }
    };
    list.iter()
        .enumerate()
        .map(|(i, e)| parse_publish_event(e, config).map_err(|err| err.with("index", i)))
        .collect()
}

/// One entry of the publish response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishResult {
    pub channel: String,
    pub seq: u64,
    pub delivered: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// `data` of `auth.success`.
#[derive(Debug, Serialize)]
pub struct AuthSuccess<'a> {
    pub sub: Option<&'a str>,
    pub exp: Option<i64>,
    pub connection_id: &'a str,
}

/// `data` of `rate_limit_info` (the `000_…` names).
#[derive(Debug, Serialize)]
pub struct RateLimitInfo {
    pub max_messages_per_minute: u32,
    pub max_subscriptions: usize,
    pub burst_limit: u32,
    pub burst_window: u32,
}

impl RateLimitInfo {
    /// The limits in force under `config`.
    pub fn from_config(config: &Config) -> Self {
        RateLimitInfo {
            max_messages_per_minute: config.max_messages_per_minute,
            max_subscriptions: config.max_subscriptions,
            burst_limit: config.burst_limit,
            burst_window: config.burst_window_s,
        }
    }
}

/// `data` of `subscribed`.
#[derive(Debug, Serialize)]
pub struct Subscribed<'a> {
    pub channel: &'a str,
    pub filters: Value,
    pub seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
}

/// `data` of `snapshot`: events are already-serialized channel events.
#[derive(Debug, Serialize)]
pub struct SnapshotData<'a> {
    pub channel: &'a str,
    pub seq: u64,
    pub events: Vec<&'a RawValue>,
}

/// `data` of `unsubscribed`.
#[derive(Debug, Serialize)]
pub struct ChannelOnly<'a> {
    pub channel: &'a str,
}

/// An empty `data` object.
#[derive(Debug, Serialize)]
pub struct Empty {}

/// `data` of `published`: where a socket's publish was stored.
#[derive(Debug, Serialize)]
pub struct Published<'a> {
    pub channel: &'a str,
    pub seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// One socket subscribed to a presence channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub sub: Option<String>,
    pub connection_id: String,
    /// When it subscribed, RFC 3339.
    pub joined_at: String,
}

/// `data` of `presence`.
#[derive(Debug, Serialize)]
pub struct PresenceData<'a> {
    pub channel: &'a str,
    pub members: &'a [Member],
}

/// `data` of `presence.join` / `presence.leave`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Who {
    pub sub: Option<String>,
    pub connection_id: String,
}

/// Whether a presence change is a join or a leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceChange {
    Join,
    Leave,
}

/// `{"type":"presence.join"|"presence.leave","channel","timestamp","data"}`.
pub fn presence_change_frame(change: PresenceChange, channel: &str, ts: &str, who: &Who) -> String {
    #[derive(Serialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        channel: &'a str,
        timestamp: &'a str,
        data: &'a Who,
    }
    to_json(&Frame {
        kind: match change {
            PresenceChange::Join => "presence.join",
            PresenceChange::Leave => "presence.leave",
        },
        channel,
        timestamp: ts,
        data: who,
    })
}

/// `{"type": name + ".result","timestamp","data","id"?}`: a command's answer.
pub fn command_result_frame(name: &str, ts: &str, data: &Value, id: Option<&Value>) -> String {
    #[derive(Serialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: String,
        timestamp: &'a str,
        data: &'a Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
    }
    to_json(&Frame {
        kind: format!("{name}.result"),
        timestamp: ts,
        data,
        id,
    })
}

/// Every server message but channel events and errors, with its envelope.
#[derive(Debug, Serialize)]
#[serde(tag = "type")]
pub enum ServerMessage<'a> {
    #[serde(rename = "auth.success")]
    AuthSuccess {
        timestamp: &'a str,
        data: AuthSuccess<'a>,
    },
    #[serde(rename = "rate_limit_info")]
    RateLimitInfo {
        timestamp: &'a str,
        data: RateLimitInfo,
    },
    #[serde(rename = "subscribed")]
    Subscribed {
        timestamp: &'a str,
        data: Subscribed<'a>,
    },
    #[serde(rename = "snapshot")]
    Snapshot {
        timestamp: &'a str,
        data: SnapshotData<'a>,
    },
    #[serde(rename = "unsubscribed")]
    Unsubscribed {
        timestamp: &'a str,
        data: ChannelOnly<'a>,
    },
    #[serde(rename = "pong")]
    Pong { timestamp: &'a str, data: Empty },
    #[serde(rename = "published")]
    Published {
        timestamp: &'a str,
        data: Published<'a>,
    },
    #[serde(rename = "presence")]
    Presence {
        timestamp: &'a str,
        data: PresenceData<'a>,
    },
}

impl ServerMessage<'_> {
    /// The frame text.
    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

/// `{"type":"batch","timestamp","events":[…]}` from already-serialized events,
/// each exactly as it would have been sent alone. One event is sent as itself.
pub fn batch_frame(timestamp: &str, bodies: &[&str]) -> String {
    if let [one] = bodies {
        return (*one).to_owned();
    }
    let mut frame = String::with_capacity(bodies.iter().map(|b| b.len() + 1).sum::<usize>() + 64);
    frame.push_str(r#"{"type":"batch","timestamp":"#);
    frame.push_str(&to_json(timestamp));
    frame.push_str(r#","events":["#);
    for (i, b) in bodies.iter().enumerate() {
        if i > 0 {
            frame.push(',');
        }
        frame.push_str(b);
    }
    frame.push_str("]}");
    frame
}

/// The exact auto-response request and reply (SPEC: exactly these bytes).
pub const PING_REQUEST: &str = r#"{"type":"ping"}"#;
/// Reply to [`PING_REQUEST`], sent by the runtime without waking the object.
pub const PING_RESPONSE: &str = r#"{"type":"pong"}"#;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field_of(e: ApiError) -> String {
        e.details.unwrap()["field"].as_str().unwrap().to_owned()
    }

    #[test]
    fn parses_every_client_message() {
        assert_eq!(
            ClientMessage::parse(r#"{"type":"auth","token":"abc"}"#).unwrap(),
            ClientMessage::Auth {
                token: "abc".into()
            }
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"subscribe","channel":"accidents","filters":{"severity":["severe"]},"since":4}"#).unwrap(),
            ClientMessage::Subscribe {
                channel: "accidents".into(),
                filters: Some(json!({"severity": ["severe"]})),
                since: Some(4)
            }
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"unsubscribe","channel":"x"}"#).unwrap(),
            ClientMessage::Unsubscribe {
                channel: "x".into()
            }
        );
        assert_eq!(
            ClientMessage::parse(r#"{ "type" : "ping" }"#).unwrap(),
            ClientMessage::Ping
        );
    }

    #[test]
    fn parses_the_dialect_actions() {
        assert_eq!(
            ClientMessage::parse(r#"{"action":"subscribe","topics":["cameras","all"]}"#).unwrap(),
            ClientMessage::Topics {
                subscribe: true,
                topics: vec!["cameras".into(), "all".into()]
            }
        );
        assert_eq!(
            ClientMessage::parse(r#"{"action":"ping"}"#).unwrap(),
            ClientMessage::ActionPing
        );
        for (text, field) in [
            (r#"{"action":"subscribe"}"#, "topics"),
            (r#"{"action":"subscribe","topics":[]}"#, "topics"),
            (r#"{"action":"subscribe","topics":[3]}"#, "topics"),
            (r#"{"action":"dance"}"#, "action"),
            (r#"{"action":7}"#, "action"),
        ] {
            assert_eq!(
                field_of(ClientMessage::parse(text).unwrap_err()),
                field,
                "{text}"
            );
        }
    }

    #[test]
    fn malformed_frames_are_invalid_message() {
        for text in [
            "not json",
            "[1,2]",
            "42",
            r#"{"channel":"x"}"#,
            r#"{"type":7}"#,
        ] {
            assert_eq!(
                ClientMessage::parse(text).unwrap_err().code,
                ErrorCode::InvalidMessage,
                "{text}"
            );
        }
    }

    #[test]
    fn unknown_type_names_the_type() {
        let e = ClientMessage::parse(r#"{"type":"dance"}"#).unwrap_err();
        assert_eq!(e.details.unwrap()["type"], "dance");
    }

    #[test]
    fn missing_extra_and_mistyped_fields_name_the_field() {
        assert_eq!(
            field_of(ClientMessage::parse(r#"{"type":"subscribe"}"#).unwrap_err()),
            "channel"
        );
        assert_eq!(
            field_of(ClientMessage::parse(r#"{"type":"subscribe","channel":5}"#).unwrap_err()),
            "channel"
        );
        assert_eq!(
            field_of(
                ClientMessage::parse(r#"{"type":"subscribe","channel":"a","colour":1}"#)
                    .unwrap_err()
            ),
            "colour"
        );
        assert_eq!(
            field_of(ClientMessage::parse(r#"{"type":"auth","token":""}"#).unwrap_err()),
            "token"
        );
        let long = format!(
            r#"{{"type":"unsubscribe","channel":"{}"}}"#,
            "x".repeat(300)
        );
        assert_eq!(
            field_of(ClientMessage::parse(&long).unwrap_err()),
            "channel"
        );
    }

    #[test]
    fn since_must_be_a_non_negative_integer() {
        for since in ["-1", "1.5", "\"3\"", "true"] {
            let text = format!(r#"{{"type":"subscribe","channel":"a","since":{since}}}"#);
            assert_eq!(
                field_of(ClientMessage::parse(&text).unwrap_err()),
                "since",
                "{since}"
            );
        }
    }

    #[test]
    fn publish_accepts_single_and_batch() {
        let c = Config::default();
        let one = parse_publish(
            r#"{"channel":"accidents","type":"accidents.new","data":{"id":"A"},"id":"e1"}"#,
            &c,
        )
        .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].id.as_deref(), Some("e1"));
        let batch = parse_publish(
            r#"{"events":[{"channel":"accidents","type":"accidents.new","data":{"id":"A"}},
                           {"channel":"conversation:c","type":"chat_message","data":{},"timestamp":"2025-11-29T10:30:00Z"}]}"#,
            &c,
        )
        .unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[1].timestamp.as_deref(), Some("2025-11-29T10:30:00Z"));
    }

    #[test]
    fn publish_errors_name_index_and_field() {
        let c = Config::default();
        let e = parse_publish(
            r#"{"events":[{"channel":"accidents","type":"accidents.new","data":{"id":"A"}},
                           {"channel":"accidents","type":"accidents.new","data":{}}]}"#,
            &c,
        )
        .unwrap_err();
        let d = e.details.unwrap();
        assert_eq!(
            (d["index"].as_u64(), d["field"].as_str()),
            (Some(1), Some("data.id"))
        );
        let nf = parse_publish(r#"{"channel":"nope","type":"x","data":{}}"#, &c).unwrap_err();
        assert_eq!(nf.code, ErrorCode::ChannelNotFound);
        assert_eq!(
            field_of(parse_publish(r#"{"events":[]}"#, &c).unwrap_err()),
            "events"
        );
        assert_eq!(
            field_of(
                parse_publish(
                    r#"{"channel":"alerts","type":"alert","data":{"id":"1"},"timestamp":"noon"}"#,
                    &c
                )
                .unwrap_err()
            ),
            "timestamp"
        );
        let big = format!(
            r#"{{"channel":"alerts","type":"alert","data":{{"id":"{}"}}}}"#,
            "x".repeat(MAX_FRAME_BYTES)
        );
        assert_eq!(
            parse_publish(&big, &c).unwrap_err().code,
            ErrorCode::MessageTooLarge
        );
    }

    #[test]
    fn a_batch_frame_holds_the_events_as_sent_alone() {
        let a = r#"{"type":"x","seq":1}"#;
        let b = r#"{"type":"x","seq":2}"#;
        let v: Value = serde_json::from_str(&batch_frame("t", &[a, b])).unwrap();
        assert_eq!(
            v,
            json!({"type": "batch", "timestamp": "t", "events": [{"type": "x", "seq": 1}, {"type": "x", "seq": 2}]})
        );
        assert_eq!(batch_frame("t", &[a]), a);
    }

    #[test]
    fn server_messages_carry_type_timestamp_and_data() {
        let ev = RawValue::from_string(r#"{"type":"alert","seq":1}"#.to_owned()).unwrap();
        let m = ServerMessage::Snapshot {
            timestamp: "t",
            data: SnapshotData {
                channel: "alerts",
                seq: 1,
                events: vec![&ev],
            },
        };
        let v: Value = serde_json::from_str(&m.to_json()).unwrap();
        assert_eq!(
            v,
            json!({"type":"snapshot","timestamp":"t","data":{"channel":"alerts","seq":1,"events":[{"type":"alert","seq":1}]}})
        );
        let s = ServerMessage::Subscribed {
            timestamp: "t",
            data: Subscribed {
                channel: "a",
                filters: json!({}),
                seq: 0,
                recovered: None,
            },
        };
        assert!(!s.to_json().contains("recovered"));
    }
}
