//! Snapshot rules: which key an event updates, when it leaves the snapshot, and
//! the merged view filters look at.

use serde_json::{Map, Value};

use super::channel::{Kind, Known};
use super::time::parse_rfc3339_ms;

/// What an event does to its channel's snapshot.
#[derive(Debug, Clone, PartialEq)]
pub enum SnapshotOp {
    /// Namespaced channels keep no snapshot.
    Skip,
    /// The event becomes the latest for `key`, until `expires_ms` if given.
    Upsert {
        key: String,
        expires_ms: Option<i64>,
    },
    /// The key leaves the snapshot (a resolved accident or alert).
    Remove { key: String },
}

fn scalar_key(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        // Objects serialize with sorted keys, so equal locations give equal keys.
        other => other.to_string(),
    }
}

/// The snapshot key of an event, or `None` on a channel without snapshot.
pub fn key_of(kind: &Kind, event_type: &str, data: &Value) -> Option<String> {
    let Kind::Known(k) = kind else { return None };
    let field = k.key_field(event_type);
    let value = data.get(field)?;
    Some(match k {
        Known::Weather if event_type == "weather.alert" => format!("alert:{}", scalar_key(value)),
        Known::Weather => format!("location:{}", scalar_key(value)),
        _ => scalar_key(value),
    })
}

fn time_field(data: &Value, names: &[&str]) -> Option<i64> {
    names.iter().find_map(|n| {
        data.get(*n)
            .and_then(Value::as_str)
            .and_then(parse_rfc3339_ms)
    })
}

fn is_resolved(data: &Value) -> bool {
    data.get("resolved").and_then(Value::as_bool) == Some(true)
        || data.get("status").and_then(Value::as_str) == Some("resolved")
}

/// Decides what `event_type` with `data` does to the snapshot.
///
/// Accidents leave on `accidents.resolved`; weather alerts stay until their
/// `end_time`; `alerts` stay until resolved (`status: "resolved"` or
/// `resolved: true`) or until `expires_at`/`end_time`.
pub fn op_for(kind: &Kind, event_type: &str, data: &Value) -> SnapshotOp {
    let Some(key) = key_of(kind, event_type, data) else {
        return SnapshotOp::Skip;
    };
    match kind {
        Kind::Known(Known::Accidents) if event_type == "accidents.resolved" => {
            SnapshotOp::Remove { key }
        }
        Kind::Known(Known::Alerts) if is_resolved(data) => SnapshotOp::Remove { key },
        Kind::Known(Known::Alerts) => SnapshotOp::Upsert {
            key,
            expires_ms: time_field(data, &["expires_at", "end_time"]),
        },
        Kind::Known(Known::Weather) if event_type == "weather.alert" => SnapshotOp::Upsert {
            key,
            expires_ms: time_field(data, &["end_time"]),
        },
        _ => SnapshotOp::Upsert {
            key,
            expires_ms: None,
        },
    }
}

/// `data` laid over the previous merged data of the same key: what filters see,
/// so an update that omits `severity` still reaches a `severity` subscriber.
pub fn merge(previous: Option<&Value>, data: &Value) -> Value {
    match (previous.and_then(Value::as_object), data.as_object()) {
        (Some(prev), Some(new)) => {
            let mut merged: Map<String, Value> = prev.clone();
            for (k, v) in new {
                merged.insert(k.clone(), v.clone());
            }
            Value::Object(merged)
        }
        _ => data.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ACC: Kind = Kind::Known(Known::Accidents);
    const WEATHER: Kind = Kind::Known(Known::Weather);
    const ALERTS: Kind = Kind::Known(Known::Alerts);

    #[test]
    fn latest_per_key_upserts_by_the_channel_key() {
        let op = op_for(
            &Kind::Known(Known::TrafficFlow),
            "traffic.flow",
            &json!({"camera_id": "CAM_1"}),
        );
        assert_eq!(
            op,
            SnapshotOp::Upsert {
                key: "CAM_1".into(),
                expires_ms: None
            }
        );
    }

    #[test]
    fn resolved_accident_is_removed() {
        assert_eq!(
            op_for(&ACC, "accidents.resolved", &json!({"id": "A1"})),
            SnapshotOp::Remove { key: "A1".into() }
        );
        assert!(matches!(
            op_for(&ACC, "accidents.update", &json!({"id": "A1"})),
            SnapshotOp::Upsert { .. }
        ));
    }

    #[test]
    fn weather_keeps_locations_and_alerts_apart_and_alerts_expire() {
        let upd = op_for(
            &WEATHER,
            "weather.update",
            &json!({"location": {"lon": 2, "lat": 1}}),
        );
        assert_eq!(
            upd,
            SnapshotOp::Upsert {
                key: r#"location:{"lat":1,"lon":2}"#.into(),
                expires_ms: None
            }
        );
        let alert = op_for(
            &WEATHER,
            "weather.alert",
            &json!({"alert_type": "heavy_rain", "end_time": "2025-11-29T13:00:00Z"}),
        );
        assert_eq!(
            alert,
            SnapshotOp::Upsert {
                key: "alert:heavy_rain".into(),
                expires_ms: Some(1_764_421_200_000)
            }
        );
    }

    #[test]
    fn alerts_leave_when_resolved_and_expire() {
        assert_eq!(
            op_for(&ALERTS, "alert", &json!({"id": "X", "status": "resolved"})),
            SnapshotOp::Remove { key: "X".into() }
        );
        assert_eq!(
            op_for(&ALERTS, "alert", &json!({"id": "X", "resolved": true})),
            SnapshotOp::Remove { key: "X".into() }
        );
        assert!(matches!(
            op_for(
                &ALERTS,
                "alert",
                &json!({"id": "X", "expires_at": "2030-01-01T00:00:00Z"})
            ),
            SnapshotOp::Upsert {
                expires_ms: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn namespaced_channels_skip_the_snapshot() {
        assert_eq!(
            op_for(&Kind::Namespaced, "chat_message", &json!({"id": "1"})),
            SnapshotOp::Skip
        );
    }

    #[test]
    fn merge_lays_new_fields_over_old() {
        let m = merge(
            Some(&json!({"id": "A", "severity": "severe"})),
            &json!({"id": "A", "status": "x"}),
        );
        assert_eq!(m, json!({"id": "A", "severity": "severe", "status": "x"}));
        assert_eq!(merge(None, &json!({"a": 1})), json!({"a": 1}));
    }
}
