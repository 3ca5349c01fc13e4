//! RFC 3339 timestamps, the only time format on the wire.

use chrono::{DateTime, SecondsFormat};

/// Formats milliseconds since the epoch as `2025-11-29T10:30:00.000Z`.
pub fn rfc3339_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 timestamp into milliseconds since the epoch.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_millis_and_round_trips() {
        let s = rfc3339_ms(1_764_412_200_123);
        assert_eq!(s, "2025-11-29T10:30:00.123Z");
        assert_eq!(parse_rfc3339_ms(&s), Some(1_764_412_200_123));
        assert_eq!(
            parse_rfc3339_ms("2025-11-29T12:30:00+02:00"),
            Some(1_764_412_200_000)
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }
}
