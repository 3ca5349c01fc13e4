//! The UIP backend dialect (`001_…`): topics over the traffic channels, and the
//! `connection`, `SNAPSHOT`, `UPDATE`, `ALERT` and `PONG` frames its React hook
//! reads. A dialect socket is a hub socket whose subscriptions are topics.

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::auth::Claims;
use super::channel::Channel;
use super::config::Config;
use super::error::{to_json, ApiError};

/// Topic names and the channel each maps to, in the order `all` expands.
pub const TOPICS: [(&str, &str); 6] = [
    ("cameras", "cameras.status"),
    ("weather", "weather"),
    ("airQuality", "air-quality"),
    ("accidents", "accidents"),
    ("congestion", "congestion"),
    ("patterns", "traffic.patterns"),
];

/// The topic a channel is seen as, if any.
pub fn topic_of(channel: &str) -> Option<&'static str> {
    TOPICS.iter().find(|(_, c)| *c == channel).map(|(t, _)| *t)
}

/// Resolves requested topics to channels the token allows. `all` takes every
/// allowed topic silently; an unknown topic is `CHANNEL_NOT_FOUND` and one
/// outside the token's `channels` is `FORBIDDEN`, while the others still apply.
pub fn resolve(
    topics: &[String],
    claims: &Claims,
    config: &Config,
) -> (Vec<&'static str>, Vec<ApiError>) {
    let mut channels: Vec<&'static str> = Vec::new();
    let mut errors = Vec::new();
    let allowed = |ch: &str| Channel::parse(ch, config).is_ok_and(|c| claims.allows(&c, false));
    for t in topics {
        if t == "all" {
            channels.extend(TOPICS.iter().map(|(_, c)| *c).filter(|c| allowed(c)));
            continue;
        }
        match TOPICS.iter().find(|(name, _)| name == t) {
            None => errors.push(
                ApiError::new(
                    super::error::ErrorCode::ChannelNotFound,
                    format!("unknown topic '{t}'"),
                )
                .with("topic", t.as_str()),
            ),
            Some((_, ch)) if !allowed(ch) => {
                errors.push(ApiError::forbidden_channel(ch).with("topic", t.as_str()))
            }
            Some((_, ch)) => channels.push(ch),
        }
    }
    let mut seen = Vec::new();
    channels.retain(|c| {
        let fresh = !seen.contains(c);
        seen.push(c);
        fresh
    });
    (channels, errors)
}

/// A topic's list: the `data` of its channel's snapshot events, in `seq` order.
pub fn list_from_bodies<'a>(bodies: impl IntoIterator<Item = &'a str>) -> String {
    let data: Vec<Value> = bodies
        .into_iter()
        .filter_map(|b| serde_json::from_str::<Value>(b).ok())
        .map(|mut v| v.get_mut("data").map(Value::take).unwrap_or(Value::Null))
        .collect();
    to_json(&data)
}

/// Whether an event of this type is also sent as an `ALERT`.
pub fn is_alert(kind: &str) -> bool {
    kind == "accidents.new" || kind == "weather.alert"
}

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap_or_else(|_| {
        // Lists and data come from stored JSON; this never happens.
        RawValue::from_string("null".to_owned()).unwrap_or_default()
    })
}

/// `{"type":"connection","message","timestamp","heartbeatInterval"}`.
pub fn connection(timestamp: &str, heartbeat_ms: u64) -> String {
    #[derive(Serialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        message: &'static str,
        timestamp: &'a str,
        #[serde(rename = "heartbeatInterval")]
        heartbeat_interval: u64,
    }
    to_json(&Frame {
        kind: "connection",
        message: "Connected to uip-realtime",
        timestamp,
        heartbeat_interval: heartbeat_ms,
    })
}

/// `{"type":"SNAPSHOT","data":{topic: list, …},"timestamp"}`.
pub fn snapshot(timestamp: &str, lists: &[(&str, String)]) -> String {
    let data: serde_json::Map<String, Value> = lists
        .iter()
        .map(|(t, l)| {
            (
                (*t).to_owned(),
                serde_json::from_str(l).unwrap_or(Value::Array(vec![])),
            )
        })
        .collect();
    #[derive(Serialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        data: serde_json::Map<String, Value>,
        timestamp: &'a str,
    }
    to_json(&Frame {
        kind: "SNAPSHOT",
        data,
        timestamp,
    })
}

/// `{"type":"UPDATE"|"ALERT","topic","data","timestamp"}`.
pub fn topic_frame(kind: TopicFrame, topic: &str, data: &str, timestamp: &str) -> String {
    #[derive(Serialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        topic: &'a str,
        data: Box<RawValue>,
        timestamp: &'a str,
    }
    let kind = match kind {
        TopicFrame::Update => "UPDATE",
        TopicFrame::Alert => "ALERT",
    };
    to_json(&Frame {
        kind,
        topic,
        data: raw(data),
        timestamp,
    })
}

/// Which per-topic frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicFrame {
    /// The topic's whole list after a change.
    Update,
    /// A new accident or weather alert, with the event's data.
    Alert,
}

/// `{"type":"PONG","timestamp"}`.
pub fn pong(timestamp: &str) -> String {
    format!(r#"{{"type":"PONG","timestamp":{}}}"#, to_json(timestamp))
}

/// The `data` of a stored event body, as JSON.
pub fn data_of(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|mut v| v.get_mut("data").map(Value::take))
        .map_or_else(|| "null".to_owned(), |d| to_json(&d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::auth::Scopes;
    use crate::core::error::ErrorCode;
    use serde_json::json;

    fn claims(channels: Option<Vec<&str>>) -> Claims {
        Claims {
            sub: None,
            exp: None,
            scopes: Scopes {
                subscribe: true,
                publish: false,
                admin: false,
            },
            channels: channels.map(|c| c.into_iter().map(str::to_owned).collect()),
        }
    }

    fn topics(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn topics_map_one_to_one_and_all_is_all_six() {
        let cfg = Config::default();
        let (chs, errs) = resolve(
            &topics(&["cameras", "airQuality", "patterns"]),
            &claims(None),
            &cfg,
        );
        assert_eq!(
            chs,
            vec!["cameras.status", "air-quality", "traffic.patterns"]
        );
        assert!(errs.is_empty());
        let (chs, _) = resolve(&topics(&["all", "weather"]), &claims(None), &cfg);
        assert_eq!(chs.len(), 6, "no duplicates: {chs:?}");
        assert_eq!(topic_of("air-quality"), Some("airQuality"));
        assert_eq!(topic_of("alerts"), None);
    }

    #[test]
    fn unknown_and_forbidden_topics_are_errors_while_the_rest_apply() {
        let cfg = Config::default();
        let (chs, errs) = resolve(
            &topics(&["weather", "bogus", "accidents"]),
            &claims(Some(vec!["weather"])),
            &cfg,
        );
        assert_eq!(chs, vec!["weather"]);
        let codes: Vec<ErrorCode> = errs.iter().map(|e| e.code).collect();
        assert_eq!(
            codes,
            vec![ErrorCode::ChannelNotFound, ErrorCode::Forbidden]
        );
        let (chs, errs) = resolve(
            &topics(&["all"]),
            &claims(Some(vec!["weather", "accidents"])),
            &cfg,
        );
        assert_eq!(
            (chs, errs.len()),
            (vec!["weather", "accidents"], 0),
            "all takes what the token allows"
        );
    }

    #[test]
    fn frames_have_the_exact_shapes_of_the_seed() {
        let c: Value = serde_json::from_str(&connection("t", 10_000)).unwrap();
        assert_eq!(
            c,
            json!({"type": "connection", "message": "Connected to uip-realtime", "timestamp": "t", "heartbeatInterval": 10000})
        );
        let s: Value =
            serde_json::from_str(&snapshot("t", &[("cameras", "[{\"a\":1}]".into())])).unwrap();
        assert_eq!(
            s,
            json!({"type": "SNAPSHOT", "data": {"cameras": [{"a": 1}]}, "timestamp": "t"})
        );
        let u: Value =
            serde_json::from_str(&topic_frame(TopicFrame::Update, "cameras", "[]", "t")).unwrap();
        assert_eq!(
            u,
            json!({"type": "UPDATE", "topic": "cameras", "data": [], "timestamp": "t"})
        );
        assert_eq!(
            serde_json::from_str::<Value>(&pong("t")).unwrap(),
            json!({"type": "PONG", "timestamp": "t"})
        );
    }

    #[test]
    fn a_list_is_the_data_of_the_snapshot_events_in_order() {
        let bodies = [
            r#"{"type":"x","seq":1,"data":{"id":1}}"#,
            r#"{"type":"x","seq":2,"data":{"id":2}}"#,
        ];
        assert_eq!(list_from_bodies(bodies), r#"[{"id":1},{"id":2}]"#);
        assert_eq!(data_of(bodies[1]), r#"{"id":2}"#);
    }
}
