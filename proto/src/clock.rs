//! Wall-clock time as the wire and the stores carry it: integer microseconds since the Unix
//! epoch (never floats), the one definition the broker and the agent share.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in integer microseconds since the Unix epoch (0 for a clock set before it).
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_is_after_2026_in_microseconds() {
        // 2026-01-01T00:00:00Z: a figure in seconds or milliseconds would be far below it.
        assert!(super::now_us() > 1_767_225_600_000_000);
    }
}
