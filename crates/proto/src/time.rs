//! Timestamps: the wire carries RFC 3339 UTC with millisecond precision
//! (`2024-11-19T07:06:40.000Z`); the hash chain uses milliseconds since the Unix epoch.

use chrono::{DateTime, SecondsFormat, Utc};

/// Formats milliseconds since the epoch as RFC 3339 UTC with millisecond precision.
pub fn format_ms(ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        // Out of chrono's range: only reachable with a corrupt clock; render the epoch.
        None => "1970-01-01T00:00:00.000Z".to_owned(),
    }
}

/// Parses an RFC 3339 timestamp (any offset) into milliseconds since the epoch.
pub fn parse_ms(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_milliseconds() {
        let s = format_ms(1_732_000_002_123);
        assert_eq!(s, "2024-11-19T07:06:42.123Z");
        assert_eq!(parse_ms(&s), Some(1_732_000_002_123));
        assert_eq!(parse_ms("2024-11-19T08:06:42.123+01:00"), Some(1_732_000_002_123));
        assert_eq!(parse_ms("yesterday"), None);
    }
}
