//! Subscriber filters: parsed once at `subscribe`, matched against an event's
//! merged `data`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::channel::{Channel, Kind};
use super::error::ApiError;

/// Most accepted values in one filter.
const MAX_VALUES: usize = 100;
/// Longest accepted string value.
const MAX_VALUE_LEN: usize = 200;

/// A subscriber's filters for one channel: filter name to accepted values
/// (or a boolean for `alerts_only`). Empty means everything passes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Filters(BTreeMap<String, Value>);

fn fields_of(filter: &str) -> &[&str] {
    match filter {
        "cameras" => &["camera_id"],
        "zones" => &["zone_id", "zone", "zones", "affected_zones"],
        "severity" => &["severity"],
        "level" => &["level"],
        "category" => &["category"],
        "status" => &["status"],
        "priority" => &["priority"],
        _ => &[],
    }
}

impl Filters {
    /// Validates `filters` (absent or `null` means none) for `channel`.
    pub fn parse(channel: &Channel, filters: Option<&Value>) -> Result<Filters, ApiError> {
        let obj = match filters {
            None | Some(Value::Null) => return Ok(Filters::default()),
            Some(Value::Object(o)) => o,
            Some(_) => return Err(ApiError::invalid("filters", "'filters' must be an object")),
        };
        if obj.is_empty() {
            return Ok(Filters::default());
        }
        let Kind::Known(known) = channel.kind() else {
            return Err(ApiError::invalid(
                "filters",
                format!("channel '{}' takes no filters", channel.name()),
            ));
        };
        let mut out = BTreeMap::new();
        for (name, value) in obj {
            let field = format!("filters.{name}");
            if !known.filters().contains(&name.as_str()) {
                return Err(ApiError::invalid(
                    &field,
                    format!(
                        "unknown filter '{name}' for '{}'; expected one of: {}",
                        channel.name(),
                        known.filters().join(", ")
                    ),
                ));
            }
            if name == "alerts_only" {
                if !value.is_boolean() {
                    return Err(ApiError::invalid(
                        &field,
                        "'alerts_only' must be true or false",
                    ));
                }
                out.insert(name.clone(), value.clone());
                continue;
            }
            let values = match value {
                Value::Array(v) if !v.is_empty() && v.len() <= MAX_VALUES => v,
                _ => {
                    return Err(ApiError::invalid(
                        &field,
                        format!("'{name}' must be a list of 1 to {MAX_VALUES} values"),
                    ))
                }
            };
            let ok = values.iter().all(|v| match v {
                Value::String(s) => !s.is_empty() && s.len() <= MAX_VALUE_LEN,
                Value::Number(_) => true,
                _ => false,
            });
            if !ok {
                return Err(ApiError::invalid(
                    &field,
                    format!("'{name}' values must be non-empty strings (at most {MAX_VALUE_LEN} bytes) or numbers"),
                ));
            }
            out.insert(name.clone(), value.clone());
        }
        Ok(Filters(out))
    }

    /// Whether an event of `event_type` whose merged data is `data` passes.
    pub fn matches(&self, event_type: &str, data: &Value) -> bool {
        self.0.iter().all(|(name, accepted)| {
            if name == "alerts_only" {
                return accepted != &Value::Bool(true) || event_type.ends_with(".alert");
            }
            let Some(accepted) = accepted.as_array() else {
                return false;
            };
            fields_of(name).iter().any(|f| match data.get(*f) {
                Some(Value::Array(items)) => items.iter().any(|i| accepted.contains(i)),
                Some(v) => accepted.contains(v),
                None => false,
            })
        })
    }

    /// Whether no filter is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The filters as the JSON object echoed in `subscribed`.
    pub fn to_value(&self) -> Value {
        Value::Object(self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::Config;
    use crate::core::error::ErrorCode;
    use serde_json::json;

    fn ch(name: &str) -> Channel {
        Channel::parse(name, &Config::default()).unwrap()
    }

    fn f(name: &str, v: Value) -> Filters {
        Filters::parse(&ch(name), Some(&v)).unwrap()
    }

    #[test]
    fn no_filters_pass_everything() {
        assert!(Filters::parse(&ch("accidents"), None)
            .unwrap()
            .matches("accidents.new", &json!({})));
    }

    #[test]
    fn list_filters_accept_listed_values_only() {
        let sev = f("accidents", json!({"severity": ["severe", "critical"]}));
        assert!(sev.matches("accidents.new", &json!({"id": "A", "severity": "severe"})));
        assert!(!sev.matches("accidents.new", &json!({"id": "A", "severity": "minor"})));
        assert!(
            !sev.matches("accidents.new", &json!({"id": "A"})),
            "missing field fails"
        );
    }

    #[test]
    fn cameras_filter_reads_camera_id() {
        let cams = f("traffic.flow", json!({"cameras": ["CAM_001"]}));
        assert!(cams.matches("traffic.flow", &json!({"camera_id": "CAM_001"})));
        assert!(!cams.matches("traffic.flow", &json!({"camera_id": "CAM_002"})));
    }

    #[test]
    fn zones_filter_reads_every_zone_field_and_lists() {
        let z = f("weather", json!({"zones": ["ZONE_002"]}));
        assert!(z.matches(
            "weather.alert",
            &json!({"affected_zones": ["ZONE_001", "ZONE_002"]})
        ));
        assert!(!z.matches("weather.alert", &json!({"affected_zones": ["ZONE_003"]})));
        let c = f("congestion", json!({"zones": ["ZONE_001"]}));
        assert!(c.matches("congestion.update", &json!({"zone_id": "ZONE_001"})));
    }

    #[test]
    fn all_given_filters_must_match() {
        let both = f("traffic.flow", json!({"cameras": ["C1"], "zones": ["Z1"]}));
        assert!(both.matches("traffic.flow", &json!({"camera_id": "C1", "zone": "Z1"})));
        assert!(!both.matches("traffic.flow", &json!({"camera_id": "C1", "zone": "Z2"})));
    }

    #[test]
    fn alerts_only_keeps_weather_alerts() {
        let a = f("weather", json!({"alerts_only": true}));
        assert!(a.matches("weather.alert", &json!({"alert_type": "rain"})));
        assert!(!a.matches("weather.update", &json!({"location": "x"})));
        assert!(f("weather", json!({"alerts_only": false})).matches("weather.update", &json!({})));
    }

    #[test]
    fn bad_filters_are_invalid_message_naming_the_field() {
        let cases = [
            ("accidents", json!({"colour": ["red"]}), "filters.colour"),
            (
                "accidents",
                json!({"severity": "severe"}),
                "filters.severity",
            ),
            ("accidents", json!({"severity": []}), "filters.severity"),
            (
                "accidents",
                json!({"severity": [{"a": 1}]}),
                "filters.severity",
            ),
            (
                "weather",
                json!({"alerts_only": "yes"}),
                "filters.alerts_only",
            ),
            ("conversation:c1", json!({"zones": ["Z"]}), "filters"),
            ("accidents", json!([1]), "filters"),
        ];
        for (channel, filters, field) in cases {
            let e = Filters::parse(&ch(channel), Some(&filters)).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidMessage);
            assert_eq!(e.details.unwrap()["field"], field, "{filters}");
        }
    }
}
