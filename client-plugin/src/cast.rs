//! Reading asciicast v2 recordings: event lines with exact times, and whole lines out of the
//! chunks a recording is fetched in.

/// An event's kind, from its one-letter code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// `o`: terminal output.
    Output,
    /// `i`: keyboard input.
    Input,
    /// `r`: a resize, data `COLSxROWS`.
    Resize,
    /// `m`: a marker (lifecycle notes such as the exit code).
    Marker,
    /// Any other code (a later asciicast version, another recorder).
    Other,
}

/// One event of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Microseconds since the start of the recording.
    pub time_us: u64,
    /// What the event is.
    pub code: Code,
    /// Its data (text for output and input).
    pub data: String,
}

/// An asciicast time (`123.456789`, seconds) in microseconds, read from its text so no float
/// rounds it; digits past the sixth decimal are dropped. `None` for anything else (signs,
/// exponents, more than 12 digits of seconds).
pub fn parse_time(text: &str) -> Option<u64> {
    let (secs, frac) = match text.split_once('.') {
        Some((s, f)) if !f.is_empty() => (s, f),
        Some(_) => return None,
        None => (text, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if secs.is_empty() || secs.len() > 12 || !digits(secs) || !digits(frac) {
        return None;
    }
    let mut micros: u64 = 0;
    for i in 0..6 {
        micros = micros * 10 + frac.as_bytes().get(i).map_or(0, |b| u64::from(b - b'0'));
    }
    secs.parse::<u64>().ok()?.checked_mul(1_000_000)?.checked_add(micros)
}

/// Parses an event line `[time, "code", "data"]`; `None` for the header line and anything
/// malformed.
pub fn parse_event(line: &str) -> Option<Event> {
    let (time, _) = line.trim_start().strip_prefix('[')?.split_once(',')?;
    let time_us = parse_time(time.trim())?;
    // The time was read above from its text; here it is only skipped.
    let (_, code, data): (serde::de::IgnoredAny, String, String) = serde_json::from_str(line).ok()?;
    let code = match code.as_str() {
        "o" => Code::Output,
        "i" => Code::Input,
        "r" => Code::Resize,
        "m" => Code::Marker,
        _ => Code::Other,
    };
    Some(Event { time_us, code, data })
}

/// A line longer than the [`Lines`] limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a recording line is longer than {0} bytes")]
pub struct LineTooLong(pub usize);

/// Cuts a byte stream into lines, holding at most `max_line` bytes of an unfinished one.
#[derive(Debug)]
pub struct Lines {
    carry: Vec<u8>,
    max_line: usize,
}

impl Lines {
    /// A splitter refusing lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Lines { carry: Vec::new(), max_line }
    }

    /// Adds a chunk; returns the lines it completed (without their `\n`).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<String>, LineTooLong> {
        let Some(last_nl) = chunk.iter().rposition(|&b| b == b'\n') else {
            if self.carry.len() + chunk.len() > self.max_line {
                return Err(LineTooLong(self.max_line));
            }
            self.carry.extend_from_slice(chunk);
            return Ok(Vec::new());
        };
        self.carry.extend_from_slice(&chunk[..last_nl]);
        let done = std::mem::replace(&mut self.carry, chunk[last_nl + 1..].to_vec());
        let lines: Vec<String> =
            done.split(|&b| b == b'\n').map(|l| String::from_utf8_lossy(l).into_owned()).collect();
        if lines.iter().any(|l| l.len() > self.max_line) || self.carry.len() > self.max_line {
            return Err(LineTooLong(self.max_line));
        }
        Ok(lines)
    }

    /// Ends the stream; returns the last line if it had no `\n`.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.carry);
        (!rest.is_empty()).then(|| String::from_utf8_lossy(&rest).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_exact() {
        assert_eq!(parse_time("123.456789"), Some(123_456_789));
        assert_eq!(parse_time("0.000001"), Some(1));
        assert_eq!(parse_time("0.1"), Some(100_000));
        assert_eq!(parse_time("42"), Some(42_000_000));
        // 0.3 has no exact binary form; from its text it is exact.
        assert_eq!(parse_time("0.300000"), Some(300_000));
        assert_eq!(parse_time("999999999999.999999"), Some(999_999_999_999_999_999));
        assert_eq!(parse_time("1.9999999"), Some(1_999_999), "truncated, not rounded");
        for bad in ["", ".5", "1.", "-1", "1e6", "1.0e2", "0x10", " 1", "1.2.3", "1000000000000"] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn events_parse() {
        let e = parse_event("[5.250000, \"o\", \"\\u001b[31mred\\r\\n\"]").unwrap();
        assert_eq!(e, Event { time_us: 5_250_000, code: Code::Output, data: "\u{1b}[31mred\r\n".into() });
        assert_eq!(parse_event("[0.1, \"i\", \"ls\\r\"]").unwrap().code, Code::Input);
        assert_eq!(parse_event("[0.1, \"r\", \"80x24\"]").unwrap().code, Code::Resize);
        assert_eq!(parse_event("[0.1, \"m\", \"x\"]").unwrap().code, Code::Marker);
        assert_eq!(parse_event("[0.1, \"z\", \"x\"]").unwrap().code, Code::Other);
        for bad in
            ["{\"version\": 2}", "", "[", "[1.0]", "[1.0, \"o\"]", "[1.0, \"o\", 5]", "[-1.0, \"o\", \"x\"]"]
        {
            assert_eq!(parse_event(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn lines_across_chunks() {
        let mut l = Lines::new(100);
        assert_eq!(l.push(b"ab").unwrap(), Vec::<String>::new());
        assert_eq!(l.push(b"c\nd\n\ne").unwrap(), ["abc", "d", ""]);
        assert_eq!(l.push(b"f\n").unwrap(), ["ef"]);
        assert_eq!(l.finish(), None);
        l.push(b"tail").unwrap();
        assert_eq!(l.finish().as_deref(), Some("tail"));
    }

    #[test]
    fn long_lines_are_refused() {
        let mut l = Lines::new(4);
        assert!(l.push(b"abc").is_ok());
        assert_eq!(l.push(b"de"), Err(LineTooLong(4)));
        let mut l = Lines::new(4);
        assert!(l.push(b"abcdefgh\nx").is_err());
        let mut l = Lines::new(4);
        assert!(l.push(b"ab\nabcdef").is_err());
        assert_eq!(Lines::new(4).push(b"abcd\n").unwrap(), ["abcd"]);
    }
}
