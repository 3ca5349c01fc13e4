//! Channel names: the known traffic channels of the SPEC table and namespaced
//! `NAME:ID` channels, with the event types and filters each accepts.

use serde_json::Value;

use super::config::Config;
use super::error::ApiError;

/// The channels of the SPEC's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    TrafficFlow,
    Accidents,
    Congestion,
    Weather,
    AirQuality,
    CamerasStatus,
    Alerts,
    TrafficPatterns,
}

impl Known {
    /// Every known channel, in table order.
    pub const ALL: [Known; 8] = [
        Known::TrafficFlow,
        Known::Accidents,
        Known::Congestion,
        Known::Weather,
        Known::AirQuality,
        Known::CamerasStatus,
        Known::Alerts,
        Known::TrafficPatterns,
    ];

    /// The channel's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Known::TrafficFlow => "traffic.flow",
            Known::Accidents => "accidents",
            Known::Congestion => "congestion",
            Known::Weather => "weather",
            Known::AirQuality => "air-quality",
            Known::CamerasStatus => "cameras.status",
            Known::Alerts => "alerts",
            Known::TrafficPatterns => "traffic.patterns",
        }
    }

    /// The event types a producer may publish here.
    pub fn event_types(self) -> &'static [&'static str] {
        match self {
            Known::TrafficFlow => &["traffic.flow"],
            Known::Accidents => &["accidents.new", "accidents.update", "accidents.resolved"],
            Known::Congestion => &["congestion.update"],
            Known::Weather => &["weather.update", "weather.alert"],
            Known::AirQuality => &["air-quality.update"],
            Known::CamerasStatus => &["cameras.status"],
            Known::Alerts => &["alert"],
            Known::TrafficPatterns => &["traffic.patterns", "traffic.patterns.update"],
        }
    }

    /// The filter names a subscriber may give.
    pub fn filters(self) -> &'static [&'static str] {
        match self {
            Known::TrafficFlow => &["cameras", "zones"],
            Known::Accidents => &["severity", "cameras"],
            Known::Congestion => &["zones", "level"],
            Known::Weather => &["alerts_only", "zones"],
            Known::AirQuality => &["category"],
            Known::CamerasStatus => &["cameras", "status"],
            Known::Alerts => &["priority", "category"],
            Known::TrafficPatterns => &["zones"],
        }
    }

    /// The `data` field an event of `event_type` must carry (the snapshot key).
    pub fn key_field(self, event_type: &str) -> &'static str {
        match self {
            Known::TrafficFlow | Known::CamerasStatus => "camera_id",
            Known::Accidents | Known::Alerts => "id",
            Known::Congestion | Known::TrafficPatterns => "zone_id",
            Known::Weather if event_type == "weather.alert" => "alert_type",
            Known::Weather | Known::AirQuality => "location",
        }
    }

    fn from_name(name: &str) -> Option<Known> {
        Known::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// What kind of channel a name denotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Known(Known),
    /// `NAME:ID` in a configured namespace: any event type, history, no snapshot.
    Namespaced,
}

/// A validated channel name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    name: String,
    kind: Kind,
}

/// Longest namespaced channel id.
const MAX_ID_LEN: usize = 200;

impl Channel {
    /// Parses a channel name; anything that is neither a known channel nor a
    /// well-formed name in a configured namespace is `CHANNEL_NOT_FOUND`.
    pub fn parse(name: &str, config: &Config) -> Result<Channel, ApiError> {
        if let Some(k) = Known::from_name(name) {
            return Ok(Channel {
                name: name.to_owned(),
                kind: Kind::Known(k),
            });
        }
        let valid_id = |id: &str| {
            (1..=MAX_ID_LEN).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-_~@".contains(&b))
        };
        match name.split_once(':') {
            Some((ns, id)) if config.namespaces.iter().any(|n| n == ns) && valid_id(id) => {
                Ok(Channel {
                    name: name.to_owned(),
                    kind: Kind::Namespaced,
                })
            }
            _ => Err(ApiError::channel_not_found(name)),
        }
    }

    /// The name on the wire.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kind of channel.
    pub fn kind(&self) -> &Kind {
        &self.kind
    }

    /// Whether this is one of the SPEC table's channels.
    pub fn is_known(&self) -> bool {
        matches!(self.kind, Kind::Known(_))
    }

    /// Whether the channel keeps presence: a namespaced channel of one of
    /// `PRESENCE_NAMESPACES`.
    pub fn has_presence(&self, config: &Config) -> bool {
        self.kind == Kind::Namespaced
            && self
                .name
                .split_once(':')
                .is_some_and(|(ns, _)| config.presence_namespaces.iter().any(|p| p == ns))
    }

    /// Checks an event a producer wants to publish here: its type and, for a
    /// known channel, that `data` holds the snapshot key. `field_prefix` names
    /// where the event sits in the request (`""` or `"events[3]."`).
    pub fn validate_event(&self, event_type: &str, data: &Value) -> Result<(), ApiError> {
        let Some(obj) = data.as_object() else {
            return Err(ApiError::invalid("data", "'data' must be a JSON object"));
        };
        match self.kind {
            Kind::Namespaced => {
                if event_type.is_empty() || event_type.len() > 100 {
                    return Err(ApiError::invalid(
                        "type",
                        "'type' must be a string of 1 to 100 characters",
                    ));
                }
                Ok(())
            }
            Kind::Known(k) => {
                if !k.event_types().contains(&event_type) {
                    return Err(ApiError::invalid(
                        "type",
                        format!(
                            "channel '{}' does not accept type '{}'; expected one of: {}",
                            self.name,
                            event_type,
                            k.event_types().join(", ")
                        ),
                    ));
                }
                let key = k.key_field(event_type);
                match obj.get(key) {
                    None | Some(Value::Null) => Err(ApiError::invalid(
                        &format!("data.{key}"),
                        format!("'{event_type}' events need 'data.{key}'"),
                    )),
                    Some(Value::String(s)) if s.is_empty() => Err(ApiError::invalid(
                        &format!("data.{key}"),
                        format!("'data.{key}' must not be empty"),
                    )),
                    Some(_) => Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::error::ErrorCode;
    use serde_json::json;

    fn parse(name: &str) -> Result<Channel, ApiError> {
        Channel::parse(name, &Config::default())
    }

    #[test]
    fn every_known_channel_parses() {
        for k in Known::ALL {
            assert_eq!(parse(k.name()).unwrap().kind(), &Kind::Known(k));
        }
    }

    #[test]
    fn presence_is_for_the_configured_namespaces_only() {
        assert!(parse("conversation:c1")
            .unwrap()
            .has_presence(&Config::default()));
        assert!(!parse("accidents").unwrap().has_presence(&Config::default()));
        let mut c = Config::default();
        c.presence_namespaces.clear();
        assert!(!parse("conversation:c1").unwrap().has_presence(&c));
    }

    #[test]
    fn namespaced_channels_need_a_configured_namespace_and_a_valid_id() {
        assert_eq!(
            parse("conversation:conv-123").unwrap().kind(),
            &Kind::Namespaced
        );
        assert!(parse("conversation:a.b_c~d@e-F9").is_ok());
        for bad in [
            "conversation:",
            "conversation:a b",
            "room:1",
            "nope",
            "",
            "conversation:a/b",
        ] {
            assert_eq!(
                parse(bad).unwrap_err().code,
                ErrorCode::ChannelNotFound,
                "{bad}"
            );
        }
        assert!(parse(&format!("conversation:{}", "x".repeat(200))).is_ok());
        assert!(parse(&format!("conversation:{}", "x".repeat(201))).is_err());
    }

    #[test]
    fn known_channels_check_type_and_key() {
        let acc = parse("accidents").unwrap();
        assert!(acc
            .validate_event("accidents.new", &json!({"id": "A1"}))
            .is_ok());
        let e = acc
            .validate_event("traffic.flow", &json!({"id": "A1"}))
            .unwrap_err();
        assert_eq!(e.details.unwrap()["field"], "type");
        let e = acc
            .validate_event("accidents.new", &json!({"severity": "x"}))
            .unwrap_err();
        assert_eq!(e.details.unwrap()["field"], "data.id");
        let w = parse("weather").unwrap();
        assert!(w
            .validate_event("weather.alert", &json!({"alert_type": "rain"}))
            .is_ok());
        assert!(w
            .validate_event("weather.update", &json!({"location": {"lat": 1}}))
            .is_ok());
        assert!(w
            .validate_event("weather.update", &json!({"alert_type": "rain"}))
            .is_err());
    }

    #[test]
    fn data_must_be_an_object() {
        let c = parse("conversation:c1").unwrap();
        assert!(c
            .validate_event("chat_message", &json!({"content": "hi"}))
            .is_ok());
        assert_eq!(
            c.validate_event("chat_message", &json!([1]))
                .unwrap_err()
                .details
                .unwrap()["field"],
            "data"
        );
    }
}
