//! Strips ANSI/VT escape sequences from recorded terminal output, so it reads as plain text.
//!
//! Handles CSI (`ESC [ … final`), OSC (`ESC ] … BEL` or `ESC \`), the other control strings
//! (DCS, SOS, PM, APC, ended by `ESC \`), two-byte escapes (`ESC 7`, `ESC =`) and escapes with
//! intermediates (`ESC ( B`), in their 7-bit and C1 forms. State is kept across pushes, since
//! a recording cuts output anywhere, in the middle of a sequence too.
//!
//! Used by the broker to search recordings and by the CLI's `recordings cat`.

/// Where the stripper is within an escape sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Text,
    Escape,
    /// `ESC` + intermediate bytes, waiting for the final byte.
    EscapeIntermediate,
    Csi,
    /// A control string up to ST; OSC also ends at BEL.
    ControlString {
        osc: bool,
    },
    ControlStringEscape,
}

/// A streaming stripper: keeps text, `\n` and `\t`; drops escape sequences and other control
/// characters; drops a `\r` that a `\n` follows and keeps a lone one.
#[derive(Debug, Default)]
pub struct Stripper {
    state: State,
    /// A `\r` held until we know whether `\n` follows it.
    pending_cr: bool,
}

impl Stripper {
    /// A stripper at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the text of `input` to `out`.
    pub fn push(&mut self, input: &str, out: &mut String) {
        for c in input.chars() {
            self.step(c, out);
        }
    }

    /// Ends the stream, giving back a held `\r`.
    pub fn finish(&mut self, out: &mut String) {
        if std::mem::take(&mut self.pending_cr) {
            out.push('\r');
        }
        self.state = State::Text;
    }

    fn step(&mut self, c: char, out: &mut String) {
        match self.state {
            State::Text => self.text(c, out),
            State::Escape => self.escape(c, out),
            State::EscapeIntermediate => match c {
                '\u{20}'..='\u{2f}' => {}
                '\u{30}'..='\u{7e}' => self.state = State::Text,
                _ => self.abandon(c, out),
            },
            State::Csi => match c {
                // Parameter and intermediate bytes.
                '\u{20}'..='\u{3f}' => {}
                '\u{40}'..='\u{7e}' => self.state = State::Text,
                _ => self.abandon(c, out),
            },
            State::ControlString { osc } => match c {
                '\u{7}' if osc => self.state = State::Text,
                // ST in its C1 form, and CAN/SUB, which cancel any sequence.
                '\u{9c}' | '\u{18}' | '\u{1a}' => self.state = State::Text,
                '\u{1b}' => self.state = State::ControlStringEscape,
                _ => {}
            },
            State::ControlStringEscape if c == '\\' => self.state = State::Text,
            // ESC + anything else ends the string and starts a new sequence, as in a terminal.
            State::ControlStringEscape => self.escape(c, out),
        }
    }

    /// A character that cannot continue the sequence ends it and is read as text, as a
    /// terminal does.
    fn abandon(&mut self, c: char, out: &mut String) {
        self.state = State::Text;
        self.text(c, out);
    }

    fn escape(&mut self, c: char, out: &mut String) {
        self.state = match c {
            '[' => State::Csi,
            ']' => State::ControlString { osc: true },
            'P' | 'X' | '^' | '_' => State::ControlString { osc: false },
            '\u{1b}' => State::Escape,
            '\u{20}'..='\u{2f}' => State::EscapeIntermediate,
            '\u{30}'..='\u{7e}' => State::Text,
            _ => return self.abandon(c, out),
        };
    }

    fn text(&mut self, c: char, out: &mut String) {
        match c {
            '\u{1b}' => self.state = State::Escape,
            '\u{9b}' => self.state = State::Csi,
            '\u{9d}' => self.state = State::ControlString { osc: true },
            '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => self.state = State::ControlString { osc: false },
            '\r' => {
                if self.pending_cr {
                    out.push('\r');
                }
                self.pending_cr = true;
            }
            '\n' => {
                self.pending_cr = false;
                out.push('\n');
            }
            // Other controls (BEL, backspace, DEL, C1) ring or move the cursor; no text.
            c if c.is_control() && c != '\t' => {}
            c => {
                if std::mem::take(&mut self.pending_cr) {
                    out.push('\r');
                }
                out.push(c);
            }
        }
    }
}

/// Strips a whole text at once.
pub fn strip(text: &str) -> String {
    let mut s = Stripper::new();
    let mut out = String::with_capacity(text.len());
    s.push(text, &mut out);
    s.finish(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&str]) -> String {
        let mut s = Stripper::new();
        let mut out = String::new();
        for p in parts {
            s.push(p, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn colors_and_crlf() {
        assert_eq!(strip("\u{1b}[31mred-42\u{1b}[0m\r\n"), "red-42\n");
        assert_eq!(strip("\u{1b}[1;38;2;255;0;0mx\u{1b}[m\ty\r\n\r\n"), "x\ty\n\n");
    }

    #[test]
    fn osc_and_control_strings() {
        assert_eq!(strip("a\u{1b}]0;user@host: ~\u{7}b"), "ab");
        assert_eq!(strip("\u{1b}]8;;http://example.com\u{1b}\\link\u{1b}]8;;\u{1b}\\"), "link");
        assert_eq!(strip("\u{1b}Pq#0;2;0;0;0#0~~\u{1b}\\ok"), "ok");
        assert_eq!(strip("\u{1b}Pq#0;2;0;0;0\u{1b}\\ok"), "ok");
        assert_eq!(strip("\u{1b}_apc\u{7}still inside\u{1b}\\out"), "out", "BEL ends only OSC");
        // ESC + something else ends the string and begins a new sequence.
        assert_eq!(strip("\u{1b}]0;t\u{1b}[31mz"), "z");
        assert_eq!(strip("\u{1b}]0;t\u{18}after-cancel"), "after-cancel");
    }

    #[test]
    fn short_escapes_and_c1_forms() {
        assert_eq!(strip("\u{1b}(B\u{1b}[m\u{1b}=x\u{1b}7y\u{1b}8\u{1b}M"), "xy");
        assert_eq!(strip("\u{1b}(B\u{1b}[m\u{1b}=x\u{1b}7y\u{1b}8"), "xy");
        assert_eq!(strip("\u{1b}#8z"), "z");
        assert_eq!(strip("\u{9b}1mC1\u{9d}title\u{7}!\u{90}dcs\u{9c}."), "C1!.");
        assert_eq!(strip("\u{9b}1mC1\u{9d}t\u{7}!"), "C1!");
        assert_eq!(strip("\u{1b}\u{1b}[2Jq"), "q");
    }

    #[test]
    fn controls_are_dropped_but_newlines_and_tabs_stay() {
        assert_eq!(strip("\u{1b}[?2004h$ ls\u{8}\u{7}\u{7f}\u{0}\tz"), "$ ls\tz");
        assert_eq!(strip("\u{1b}[?2004h$ ls\u{8}\u{7}\u{7f}\tz"), "$ ls\tz");
        assert_eq!(strip("50%\r100%\r"), "50%\r100%\r", "a lone CR is kept");
        assert_eq!(strip("a\r\r\nb"), "a\r\nb");
        assert_eq!(strip("é€ 日本 🙂"), "é€ 日本 🙂");
        assert_eq!(strip("é€ 日本"), "é€ 日本");
    }

    #[test]
    fn state_survives_chunk_boundaries() {
        assert_eq!(chunks(&["x\u{1b}", "[3", "8;5;1", "mred\r", "\n"]), "xred\n");
        assert_eq!(chunks(&["a\r", "\u{1b}[K\nb"]), "a\nb", "a sequence between CR and LF");
        assert_eq!(chunks(&["\u{1b}]0;ti", "tle\u{1b}", "\\done"]), "done");
        assert_eq!(chunks(&["a\u{1b}]0;title\u{7}b", "c\u{1b}]8;;http://x\u{1b}\\d"]), "abcd");
        assert_eq!(chunks(&["end\r"]), "end\r");
    }

    #[test]
    fn broken_sequences_give_back_their_character() {
        assert_eq!(strip("\u{1b}[12\nz"), "\nz");
        assert_eq!(strip("\u{1b}(\nz"), "\nz");
        assert_eq!(strip("\u{1b}\u{7f}é"), "é");
        assert_eq!(strip("\u{1b}"), "");
    }
}
