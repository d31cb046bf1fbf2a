//! Whole asciicast lines out of the chunks a recording is fetched in; each line is then read
//! with `airlock_recordings::asciicast::parse_event`.

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
