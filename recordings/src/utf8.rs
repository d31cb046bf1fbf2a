//! Turns a byte stream cut at arbitrary places into valid UTF-8 text, as asciicast needs.

/// Holds back an incomplete trailing UTF-8 sequence until the next chunk completes it.
#[derive(Debug, Default)]
pub struct Utf8Carry {
    pending: Vec<u8>,
}

impl Utf8Carry {
    /// Returns the text of `pending + chunk` up to the last complete character; invalid
    /// bytes become U+FFFD so the recording stays valid JSON text.
    pub fn push(&mut self, chunk: &[u8]) -> String {
        self.pending.extend_from_slice(chunk);
        let keep = incomplete_tail(&self.pending);
        let cut = self.pending.len() - keep;
        let text = String::from_utf8_lossy(&self.pending[..cut]).into_owned();
        self.pending.drain(..cut);
        text
    }

    /// The bytes held back (at most 3), for a checkpoint of a resumable recording.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// A carry holding `bytes` back, as a checkpoint saved them.
    pub fn with_pending(bytes: &[u8]) -> Self {
        Utf8Carry { pending: bytes.to_vec() }
    }

    /// Whatever is left at the end of the stream (an incomplete sequence, made lossy).
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// Length of a trailing, possibly valid but incomplete UTF-8 sequence (0 to 3 bytes).
fn incomplete_tail(bytes: &[u8]) -> usize {
    let n = bytes.len();
    for back in 1..=3.min(n) {
        let b = bytes[n - back];
        if b & 0xC0 != 0x80 {
            // A lead byte: how long should its sequence be?
            let want = match b {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => return 0,
            };
            return if want > back { back } else { 0 };
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_multibyte_characters_survive() {
        let text = "héllo → 世界 🚀 done";
        let bytes = text.as_bytes();
        for cut in 0..bytes.len() {
            let mut carry = Utf8Carry::default();
            let mut out = carry.push(&bytes[..cut]);
            out.push_str(&carry.push(&bytes[cut..]));
            out.push_str(&carry.finish());
            assert_eq!(out, text, "cut at {cut}");
        }
    }

    #[test]
    fn byte_at_a_time() {
        let text = "a€b𝄞c";
        let mut carry = Utf8Carry::default();
        let out: String = text.as_bytes().iter().map(|b| carry.push(&[*b])).collect();
        assert_eq!(out + &carry.finish(), text);
    }

    #[test]
    fn invalid_bytes_become_replacement() {
        let mut carry = Utf8Carry::default();
        assert_eq!(carry.push(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(carry.push(b"\xe2\x82"), "");
        assert_eq!(carry.finish(), "\u{fffd}");
    }
}
