//! The pure half of the CloudWatch Logs sink: spool lines to log events (timestamps, oversize
//! lines split) and PutLogEvents batches within the API limits. No I/O, so every limit is
//! unit-tested exactly at its boundary.

use std::ops::Range;

use crate::asciicast::{parse_event, Header};

/// Bytes CloudWatch Logs counts for each event on top of its message.
pub(crate) const EVENT_OVERHEAD: usize = 26;
/// Largest event, overhead included (256 KiB).
pub(crate) const MAX_EVENT_BYTES: usize = 262_144;
/// Largest message of one event.
pub(crate) const MAX_MESSAGE_BYTES: usize = MAX_EVENT_BYTES - EVENT_OVERHEAD;
/// Most bytes one PutLogEvents call may carry, messages plus overhead.
pub(crate) const MAX_BATCH_BYTES: usize = 1_048_576;
/// Most events one PutLogEvents call may carry.
pub(crate) const MAX_BATCH_EVENTS: usize = 10_000;
/// Longest time, first to last event, one PutLogEvents call may span.
pub(crate) const MAX_BATCH_SPAN_MS: i64 = 24 * 3600 * 1000;

/// One log event to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogEvent {
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    pub message: String,
    /// Spool offset to resume from once this event is sent: the end of its line for the last
    /// (or only) piece of a line, the line's start for an earlier piece of a split line.
    pub resume_at: u64,
}

/// Cuts `events` into consecutive PutLogEvents batches, each within the count, byte and time
/// span limits. `events` must be in timestamp order (as [`Clock`] makes them).
pub(crate) fn batches(events: &[LogEvent]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, event) in events.iter().enumerate() {
        let size = event.message.len() + EVENT_OVERHEAD;
        let full = i > start
            && (i - start >= MAX_BATCH_EVENTS
                || bytes + size > MAX_BATCH_BYTES
                || event.timestamp_ms - events[start].timestamp_ms > MAX_BATCH_SPAN_MS);
        if full {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < events.len() {
        out.push(start..events.len());
    }
    out
}

/// Splits a message longer than an event may be into consecutive pieces, each cut at a
/// UTF-8 character boundary.
pub(crate) fn split_message(mut text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    while text.len() > MAX_MESSAGE_BYTES {
        let cut = text.floor_char_boundary(MAX_MESSAGE_BYTES);
        pieces.push(&text[..cut]);
        text = &text[cut..];
    }
    pieces.push(text);
    pieces
}

/// The length of `bytes` without an incomplete UTF-8 sequence at its end, so a line longer
/// than one read is never cut inside a character.
pub(crate) fn complete_prefix_len(bytes: &[u8]) -> usize {
    let n = bytes.len();
    for back in 1..=n.min(4) {
        let b = bytes[n - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: the lead byte is further back
        }
        let need = match b {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        return if need > back { n - back } else { n };
    }
    n
}

/// The start time in epoch milliseconds from a recording's header line, if it is one.
pub(crate) fn header_base_ms(line: &str) -> Option<i64> {
    serde_json::from_str::<Header>(line).ok().map(|h| h.timestamp.saturating_mul(1000))
}

/// Gives each line its event timestamp, never decreasing.
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    base_ms: i64,
    last_ms: i64,
}

impl Clock {
    /// A clock for a recording that started at `base_ms`, resuming after `last_ms`.
    pub(crate) fn new(base_ms: i64, last_ms: i64) -> Self {
        Clock { base_ms, last_ms: last_ms.max(base_ms) }
    }

    /// The timestamp of `line`: the header's start for the header, start + event time for an
    /// event, the previous timestamp for anything else; clamped so it never goes back.
    pub(crate) fn stamp(&mut self, line: &str) -> i64 {
        let at = if let Some(event) = parse_event(line) {
            let offset = i64::try_from(event.time_us / 1000).unwrap_or(i64::MAX);
            self.base_ms.saturating_add(offset)
        } else {
            header_base_ms(line).unwrap_or(self.last_ms)
        };
        self.last_ms = self.last_ms.max(at);
        self.last_ms
    }
}

/// The log events of `chunk`, spool bytes starting at offset `start`: one per line (its
/// newline dropped), split when too long. The last line may lack its newline (the end of a
/// recording, or a piece of a line longer than one read). Empty lines have no event:
/// CloudWatch refuses empty messages, and they hold no data.
pub(crate) fn line_events(chunk: &[u8], start: u64, clock: &mut Clock) -> Vec<LogEvent> {
    let mut events = Vec::new();
    let mut offset = start;
    for segment in chunk.split_inclusive(|&b| b == b'\n') {
        let line_start = offset;
        offset += segment.len() as u64;
        let body = segment.strip_suffix(b"\n").unwrap_or(segment);
        if body.is_empty() {
            continue;
        }
        // The recorder writes valid UTF-8; anything else is kept, replaced, not dropped.
        let text = String::from_utf8_lossy(body);
        let timestamp_ms = clock.stamp(&text);
        let pieces = split_message(&text);
        let last = pieces.len() - 1;
        for (i, piece) in pieces.into_iter().enumerate() {
            let resume_at = if i == last { offset } else { line_start };
            events.push(LogEvent { timestamp_ms, message: piece.to_owned(), resume_at });
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asciicast::{event_line, header_line, EventCode};

    fn ev(timestamp_ms: i64, len: usize) -> LogEvent {
        LogEvent { timestamp_ms, message: "x".repeat(len), resume_at: 0 }
    }

    #[test]
    fn at_most_ten_thousand_events_a_batch() {
        let events: Vec<_> = (0..25_001).map(|i| ev(i, 1)).collect();
        assert_eq!(batches(&events), vec![0..10_000, 10_000..20_000, 20_000..25_001]);
        assert_eq!(batches(&events[..10_000]), vec![0..10_000]);
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn the_byte_limit_counts_26_bytes_an_event_exactly_at_the_boundary() {
        // Four largest events are exactly 1,048,576 bytes with their overhead.
        let mut events: Vec<_> = (0..4).map(|_| ev(0, MAX_MESSAGE_BYTES)).collect();
        assert_eq!(4 * (MAX_MESSAGE_BYTES + EVENT_OVERHEAD), MAX_BATCH_BYTES);
        assert_eq!(batches(&events), vec![0..4]);
        events[3].message.pop();
        events.push(ev(0, 1)); // 1 + 26 bytes do not fit in the one byte left
        assert_eq!(batches(&events), vec![0..4, 4..5]);
        // With 100-byte messages the bytes cut before the count: 1,048,576 / 126 = 8,322.
        let small: Vec<_> = (0..9_000).map(|_| ev(0, 100)).collect();
        assert_eq!(batches(&small), vec![0..8_322, 8_322..9_000]);
    }

    #[test]
    fn a_batch_spans_at_most_24_hours() {
        let events = vec![
            ev(0, 1),
            ev(MAX_BATCH_SPAN_MS, 1),
            ev(MAX_BATCH_SPAN_MS + 1, 1),
            ev(MAX_BATCH_SPAN_MS * 3, 1),
        ];
        assert_eq!(batches(&events), vec![0..2, 2..3, 3..4]);
    }

    #[test]
    fn oversize_lines_split_at_char_boundaries() {
        assert_eq!(split_message("short"), vec!["short"]);
        let exact = "a".repeat(MAX_MESSAGE_BYTES);
        assert_eq!(split_message(&exact).len(), 1);
        // "é" is 2 bytes, "😀" 4: a boundary never falls inside one.
        let text = format!("a{}", "é😀".repeat(100_000));
        let pieces = split_message(&text);
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| !p.is_empty() && p.len() <= MAX_MESSAGE_BYTES));
        assert!(pieces[0].len() > MAX_MESSAGE_BYTES - 4);
        assert_eq!(pieces.concat(), text);
    }

    #[test]
    fn split_lines_resume_at_their_start_until_their_last_piece() {
        let line = format!("[1.0, \"o\", \"{}\"]\n", "ü".repeat(200_000));
        let mut clock = Clock::new(5_000, 0);
        let events = line_events(line.as_bytes(), 100, &mut clock);
        assert_eq!(events.len(), 2);
        assert_eq!((events[0].resume_at, events[1].resume_at), (100, 100 + line.len() as u64));
        assert!(events.iter().all(|e| e.timestamp_ms == 6_000));
        assert_eq!(events[0].message.clone() + &events[1].message, line.trim_end());
    }

    #[test]
    fn incomplete_utf8_at_the_end_is_held_back() {
        let s = "aé😀".as_bytes();
        assert_eq!(complete_prefix_len(s), s.len());
        for cut in 1..4 {
            assert_eq!(complete_prefix_len(&s[..s.len() - cut]), 3, "cut {cut}");
        }
        assert_eq!(complete_prefix_len(&s[..2]), 1);
        assert_eq!(complete_prefix_len(b""), 0);
    }

    #[test]
    fn timestamps_follow_the_header_and_never_go_back() {
        let header = Header {
            version: 2,
            width: 80,
            height: 24,
            timestamp: 1_700_000_000,
            title: None,
            env: Default::default(),
        };
        let mut text = header_line(&header);
        text += &event_line(1_500_999, EventCode::Output, "\u{1b}[31mred\u{1b}[0m\r\n");
        text += &event_line(1_000_000, EventCode::Output, "earlier");
        text += "not json\n\n";
        text += &event_line(3_000_000, EventCode::Input, "ls\r");
        let base = header_base_ms(text.lines().next().unwrap()).unwrap();
        assert_eq!(base, 1_700_000_000_000);
        let mut clock = Clock::new(base, 0);
        let events = line_events(text.as_bytes(), 0, &mut clock);
        let stamps: Vec<_> = events.iter().map(|e| e.timestamp_ms - base).collect();
        assert_eq!(stamps, vec![0, 1_500, 1_500, 1_500, 3_000], "the empty line has no event");
        assert!(events[1].message.contains("\\u001b[31m"), "escapes are kept as written");
        assert_eq!(events.last().unwrap().resume_at, text.len() as u64);
        assert_eq!(events[3].message, "not json");
        // Resuming keeps the clamp.
        let mut resumed = Clock::new(base, base + 9_000);
        assert_eq!(resumed.stamp(&event_line(1_000, EventCode::Output, "x")), base + 9_000);
        assert_eq!(resumed.stamp("garbage"), base + 9_000);
    }
}
