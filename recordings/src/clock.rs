//! Wall-clock time of recordings: integer microseconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in microseconds since the Unix epoch (0 for a clock set before it).
pub(crate) fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
