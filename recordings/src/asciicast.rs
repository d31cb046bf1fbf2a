//! asciicast v2: a JSON header line, then one `[time, code, data]` array per line.
//!
//! Time is kept as integer microseconds and printed as seconds with six decimals, so no
//! float ever rounds a timestamp.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The header line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The asciicast format version (2).
    pub version: u8,
    /// Terminal width in columns.
    pub width: u16,
    /// Terminal height in rows.
    pub height: u16,
    /// Unix time of the start, in seconds.
    pub timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Title shown by players.
    pub title: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    /// Environment of the recorded shell (e.g. `TERM`, `SHELL`).
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

    /// The code written as `code` in a file; `None` for one we do not write.
    pub fn parse(code: &str) -> Option<Self> {
        [EventCode::Output, EventCode::Input, EventCode::Resize, EventCode::Marker]
            .into_iter()
            .find(|c| c.as_str() == code)
    }
}

/// One event line, newline included.
pub fn event_line(elapsed_us: u64, code: EventCode, data: &str) -> String {
    let data = serde_json::Value::String(data.to_owned());
    format!("[{}.{:06}, \"{}\", {}]\n", elapsed_us / 1_000_000, elapsed_us % 1_000_000, code.as_str(), data)
}

/// An asciicast time (`123.456789`, seconds, as [`event_line`] writes it) in integer
/// microseconds, read from its text so no float rounds it. `None` for anything else: signs,
/// exponents, a point without digits on both sides, more than 12 digits of seconds, and more
/// than six decimals (refused rather than rounded or cut; our writer always writes six).
pub fn parse_time(text: &str) -> Option<u64> {
    let (secs, frac) = match text.split_once('.') {
        Some((s, f)) if !f.is_empty() => (s, f),
        Some(_) => return None,
        None => (text, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if secs.is_empty() || secs.len() > 12 || !digits(secs) || !digits(frac) || frac.len() > 6 {
        return None;
    }
    let micros =
        frac.bytes().chain(std::iter::repeat(b'0')).take(6).fold(0u64, |n, b| n * 10 + u64::from(b - b'0'));
    secs.parse::<u64>().ok()?.checked_mul(1_000_000)?.checked_add(micros)
}

/// The time of an event line `[time, …` in microseconds (see [`parse_time`]); only the time
/// is read. None if the line does not start with such a time.
pub fn event_time_us(line: &str) -> Option<u64> {
    let (time, _) = line.trim_start().strip_prefix('[')?.split_once(',')?;
    parse_time(time.trim())
}

/// One event of a recording, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Microseconds since the start of the recording.
    pub time_us: u64,
    /// What the event is; `None` for a code we do not write (a later asciicast version,
    /// another recorder).
    pub code: Option<EventCode>,
    /// Its data (text for output and input).
    pub data: String,
}

/// Parses an event line `[time, "code", "data"]` (a trailing newline is fine); `None` for the
/// header line and anything malformed.
pub fn parse_event(line: &str) -> Option<Event> {
    let time_us = event_time_us(line)?;
    // The time was read above from its text; here it is only skipped.
    let (_, code, data): (serde::de::IgnoredAny, String, String) = serde_json::from_str(line).ok()?;
    Some(Event { time_us, code: EventCode::parse(&code), data })
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
    fn times_are_exact() {
        assert_eq!(parse_time("123.456789"), Some(123_456_789));
        assert_eq!(parse_time("0.000001"), Some(1));
        assert_eq!(parse_time("0.1"), Some(100_000));
        assert_eq!(parse_time("1.5"), Some(1_500_000));
        assert_eq!(parse_time("42"), Some(42_000_000));
        assert_eq!(parse_time("7"), Some(7_000_000));
        // 0.3 has no exact binary form; from its text it is exact.
        assert_eq!(parse_time("0.300000"), Some(300_000));
        assert_eq!(parse_time("999999999999.999999"), Some(999_999_999_999_999_999));
        assert_eq!(parse_time("1.999999"), Some(1_999_999));
        // Past microseconds the time is refused, never rounded or cut.
        for more in ["1.9999999", "0.1234569", "2.999999999", "0.0000001"] {
            assert_eq!(parse_time(more), None, "{more:?}");
        }
        for bad in [
            "",
            ".5",
            "1.",
            "-1",
            "-1.0",
            "+1",
            "1e6",
            "1e3",
            "1.0e2",
            "0x10",
            " 1",
            " 1.0",
            "1.2.3",
            "1000000000000",
            "9999999999999.0",
            "１.0",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn events_parse() {
        let e = parse_event("[5.250000, \"o\", \"\\u001b[31mred\\r\\n\"]").unwrap();
        assert_eq!(
            e,
            Event { time_us: 5_250_000, code: Some(EventCode::Output), data: "\u{1b}[31mred\r\n".into() }
        );
        let e = parse_event("[12.000345, \"o\", \"a\\u001b[0mb\\n\"]\n").unwrap();
        assert_eq!(
            (e.time_us, e.code, e.data.as_str()),
            (12_000_345, Some(EventCode::Output), "a\u{1b}[0mb\n")
        );
        assert_eq!(parse_event("[0.1, \"i\", \"ls\\r\"]").unwrap().code, Some(EventCode::Input));
        assert_eq!(parse_event("[0.1, \"r\", \"80x24\"]").unwrap().code, Some(EventCode::Resize));
        assert_eq!(parse_event("[0.1, \"m\", \"x\"]").unwrap().code, Some(EventCode::Marker));
        assert_eq!(parse_event("[0.1, \"z\", \"x\"]").unwrap().code, None, "another code");
        for bad in [
            "{\"version\": 2}",
            "{\"version\": 2, \"width\": 80}",
            "",
            "[",
            "[1.0]",
            "[1.0, \"o\"]",
            "[1.0, \"o\", 5]",
            "[-1.0, \"o\", \"x\"]",
            "[1.0e2, \"o\", \"x\"]",
            "[1.0000001, \"o\", \"x\"]",
        ] {
            assert_eq!(parse_event(bad), None, "{bad:?}");
        }
        for us in [0, 1, 999_999, 123_456_789] {
            let e = parse_event(&event_line(us, EventCode::Input, "x")).unwrap();
            assert_eq!((e.time_us, e.code), (us, Some(EventCode::Input)));
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
