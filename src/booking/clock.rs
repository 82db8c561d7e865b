//! The instants of holds: when one lapses, when one lapsed. Stored as
//! milliseconds since the Unix epoch (UTC), an absolute time that means the
//! same after a restart; written on the wire in RFC 3339 (UTC, `Z`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

/// Milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UtcMillis(pub i64);

impl UtcMillis {
    /// The system clock's reading.
    pub fn now() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        UtcMillis(since_epoch.as_millis().try_into().unwrap_or(i64::MAX))
    }

    /// `secs` seconds later.
    pub fn plus_secs(self, secs: u32) -> Self {
        UtcMillis(self.0.saturating_add(i64::from(secs) * 1000))
    }

    /// How long from `self` until `later`; zero if `later` has passed.
    pub fn until(self, later: UtcMillis) -> Duration {
        Duration::from_millis(later.0.saturating_sub(self.0).max(0) as u64)
    }
}

impl std::fmt::Display for UtcMillis {
    /// RFC 3339 in UTC, with milliseconds where they are not zero:
    /// `2026-11-30T13:00:00.250Z`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match jiff::Timestamp::from_millisecond(self.0) {
            Ok(instant) => write!(f, "{instant}"),
            // Beyond jiff's range (years -9999..=9999): no hold lasts that long.
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

impl Serialize for UtcMillis {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_written_in_rfc_3339_utc() {
        assert_eq!(UtcMillis(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(
            UtcMillis(1_796_043_600_250).to_string(),
            "2026-11-30T13:00:00.25Z"
        );
        assert_eq!(
            UtcMillis(1000).until(UtcMillis(3500)),
            Duration::from_millis(2500)
        );
        assert_eq!(UtcMillis(3500).until(UtcMillis(1000)), Duration::ZERO);
    }
}
