//! asciicast v2: a JSON header line, then one `[time, code, data]` array per line.
//!
//! Time is kept as integer microseconds and printed as seconds with six decimals, so no
//! float ever rounds a timestamp.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The header line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub version: u8,
    pub width: u16,
    pub height: u16,
    /// Unix time of the start, in seconds.
    pub timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub env: BTreeMap<String, String>,
}

/// Event codes of asciicast v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventCode {
    /// Terminal output.
    Output,
    /// Keyboard input.
    Input,
    /// Terminal resize, data `COLSxROWS`.
    Resize,
    /// A marker (we use it for session lifecycle notes such as the exit code).
    Marker,
}

impl EventCode {
    /// The one-letter code written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            EventCode::Output => "o",
            EventCode::Input => "i",
            EventCode::Resize => "r",
            EventCode::Marker => "m",
        }
    }
}

/// One event line, newline included.
pub fn event_line(elapsed_us: u64, code: EventCode, data: &str) -> String {
    let data = serde_json::Value::String(data.to_owned());
    format!("[{}.{:06}, \"{}\", {}]\n", elapsed_us / 1_000_000, elapsed_us % 1_000_000, code.as_str(), data)
}

/// The time of an event line in microseconds, read from its `seconds.micros` text (as
/// [`event_line`] writes it) so no float rounds it. None if the line does not start with
/// such a time; more than six decimals are refused rather than rounded.
pub fn event_time_us(line: &str) -> Option<u64> {
    let rest = line.strip_prefix('[')?.trim_start();
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
    if !rest[end..].trim_start().starts_with(',') {
        return None;
    }
    let text = &rest[..end];
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if secs.is_empty() || !digits(secs) || !digits(frac) || frac.len() > 6 {
        return None;
    }
    let micros =
        frac.bytes().chain(std::iter::repeat(b'0')).take(6).fold(0u64, |n, b| n * 10 + u64::from(b - b'0'));
    secs.parse::<u64>().ok()?.checked_mul(1_000_000)?.checked_add(micros)
}

/// The header line, newline included.
pub fn header_line(header: &Header) -> String {
    // A struct of strings and integers always serializes.
    let mut line = serde_json::to_string(header).unwrap_or_default();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_time_is_exact() {
        assert_eq!(event_line(1_000_001, EventCode::Output, "a\"b\n"), "[1.000001, \"o\", \"a\\\"b\\n\"]\n");
        assert_eq!(event_line(0, EventCode::Resize, "80x24"), "[0.000000, \"r\", \"80x24\"]\n");
        let v: serde_json::Value =
            serde_json::from_str(&event_line(123_456_789, EventCode::Input, "\u{1b}[A")).unwrap();
        assert_eq!(v[0].as_f64().unwrap(), 123.456789);
        assert_eq!(v[2].as_str().unwrap(), "\u{1b}[A");
    }

    #[test]
    fn event_time_reads_back_exactly() {
        for us in [0, 1, 999_999, 1_000_000, 123_456_789, 86_400_000_000_123] {
            assert_eq!(event_time_us(&event_line(us, EventCode::Output, "x")), Some(us));
        }
        assert_eq!(event_time_us("[1.5, \"o\", \"x\"]"), Some(1_500_000));
        assert_eq!(event_time_us("[ 7 , \"m\", \"x\"]"), Some(7_000_000));
        for bad in [
            "",
            "[",
            "[1.5",
            "[-1.0, \"o\"]",
            "[+1.0, \"o\"]",
            "[1.0000001, \"o\"]",
            "[1e3, \"o\"]",
            "[.5, \"o\"]",
            "[1.2.3, \"o\"]",
            "{\"version\": 2}",
            "[99999999999999999999.0, \"o\"]",
        ] {
            assert_eq!(event_time_us(bad), None, "{bad}");
        }
    }

    #[test]
    fn header_round_trips() {
        let h = Header {
            version: 2,
            width: 80,
            height: 24,
            timestamp: 1_700_000_000,
            title: Some("s".into()),
            env: [("TERM".to_string(), "xterm".to_string())].into(),
        };
        let line = header_line(&h);
        assert!(line.ends_with('\n'));
        assert_eq!(serde_json::from_str::<Header>(&line).unwrap(), h);
    }
}
