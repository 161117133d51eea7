//! Timestamps as the agent writes them (RFC 3339, UTC, `Z`): alerts, notices and the audit log
//! to the second, snapshots and forecasts to the millisecond. One place, so every file, API
//! answer and notification spells time the same way.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `2026-12-06T21:37:51Z`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `2026-12-06T21:37:51.123Z`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Unix seconds (negative ones clamp to the epoch) as a time.
pub fn from_unix_secs(secs: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let t = from_unix_secs(1_765_057_071.123_4);
        assert_eq!(rfc3339(t), "2025-12-06T21:37:51Z");
        assert_eq!(rfc3339_millis(t), "2025-12-06T21:37:51.123Z");
        assert_eq!(rfc3339(from_unix_secs(-5.0)), "1970-01-01T00:00:00Z");
    }
}
