//! The browser's terminal protocol on the console WebSocket (docs/wire.md §2.5): binary
//! messages whose first byte is the kind. Terminal bytes are carried raw; integers are
//! big-endian. Decoding never trusts a length: every field is checked against the message.

use bytes::{BufMut, Bytes, BytesMut};

/// The WebSocket subprotocol the page asks for (it names the protocol, carries no secret).
pub const SUBPROTOCOL: &str = "airlock.terminal.v1";

/// Browser → broker: the first message of a new session's socket.
pub const HELLO: u8 = 0x01;
/// Browser → broker: the first message of a resumed session's socket.
pub const RESUME: u8 = 0x02;
/// Browser → broker: keystrokes or pasted bytes.
pub const INPUT: u8 = 0x10;
/// Browser → broker: the terminal's new size.
pub const RESIZE: u8 = 0x11;
/// Browser → broker: every output frame below `next` is written to the terminal.
pub const ACK: u8 = 0x12;
/// Browser → broker: a latency probe, echoed as [`PONG`].
pub const PING: u8 = 0x13;
/// Browser → broker: end the session on purpose.
pub const TERMINATE: u8 = 0x14;

/// Broker → browser: the session runs (payload: its id).
pub const READY: u8 = 0x81;
/// Broker → browser: the session is attached again after a resume.
pub const RESUMED: u8 = 0x82;
/// Broker → browser: output frame `seq` (u64) and its bytes.
pub const OUTPUT: u8 = 0x90;
/// Broker → browser: the echo of a [`PING`].
pub const PONG: u8 = 0x93;
/// Broker → browser: the remote process ended with this code (i32).
pub const EXIT: u8 = 0x94;
/// Broker → browser: the session's stream ended (payload: why, for humans).
pub const CLOSED: u8 = 0x95;

/// The opening message of a socket.
#[derive(Debug, PartialEq, Eq)]
pub struct Opening {
    /// The console session's CSRF token (proves the page, not just the cookie, opened it).
    pub csrf: String,
    /// The StartSession or ResumeSession token.
    pub token: String,
    /// Terminal width.
    pub cols: u16,
    /// Terminal height.
    pub rows: u16,
    /// For a resume: the first output frame the page has not received.
    pub resume_from: Option<u64>,
}

/// A message from the page after the opening.
#[derive(Debug, PartialEq, Eq)]
pub enum Up {
    /// Keystrokes.
    Input(Bytes),
    /// New terminal size.
    Resize {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// Output frames below `next` are on the screen.
    Ack(u64),
    /// A probe to echo (8 opaque bytes).
    Ping([u8; 8]),
    /// End the session.
    Terminate,
}

/// Why a message from the page was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BadMessage {
    /// Too short for its kind, or a length runs past the end.
    #[error("message of kind {0:#04x} is malformed")]
    Malformed(u8),
    /// An unknown kind, or an opening kind after the opening.
    #[error("unexpected message kind {0:#04x}")]
    Kind(u8),
    /// The tokens are not UTF-8.
    #[error("tokens must be UTF-8")]
    NotUtf8,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Decodes the opening: `kind | cols u16 | rows u16 | csrf_len u16 | csrf | [next u64] | token`.
pub fn opening(b: &[u8]) -> Result<Opening, BadMessage> {
    let kind = *b.first().ok_or(BadMessage::Malformed(0))?;
    if kind != HELLO && kind != RESUME {
        return Err(BadMessage::Kind(kind));
    }
    let bad = BadMessage::Malformed(kind);
    let cols = u16_at(b, 1).ok_or(bad.clone())?;
    let rows = u16_at(b, 3).ok_or(bad.clone())?;
    let csrf_len = usize::from(u16_at(b, 5).ok_or(bad.clone())?);
    let csrf = b.get(7..7 + csrf_len).ok_or(bad.clone())?;
    let mut at = 7 + csrf_len;
    let resume_from = if kind == RESUME {
        let n = u64_at(b, at).ok_or(bad)?;
        at += 8;
        Some(n)
    } else {
        None
    };
    let token = b.get(at..).unwrap_or_default();
    let text = |v: &[u8]| String::from_utf8(v.to_vec()).map_err(|_| BadMessage::NotUtf8);
    Ok(Opening { csrf: text(csrf)?, token: text(token)?, cols, rows, resume_from })
}

/// Decodes a message after the opening.
pub fn up(b: Bytes) -> Result<Up, BadMessage> {
    let kind = *b.first().ok_or(BadMessage::Malformed(0))?;
    let bad = BadMessage::Malformed(kind);
    match kind {
        INPUT => Ok(Up::Input(b.slice(1..))),
        RESIZE if b.len() == 5 => {
            Ok(Up::Resize { cols: u16_at(&b, 1).ok_or(bad.clone())?, rows: u16_at(&b, 3).ok_or(bad)? })
        }
        ACK if b.len() == 9 => Ok(Up::Ack(u64_at(&b, 1).ok_or(bad)?)),
        PING if b.len() == 9 => {
            let mut p = [0u8; 8];
            p.copy_from_slice(&b[1..9]);
            Ok(Up::Ping(p))
        }
        TERMINATE if b.len() == 1 => Ok(Up::Terminate),
        RESIZE | ACK | PING | TERMINATE => Err(bad),
        other => Err(BadMessage::Kind(other)),
    }
}

/// An output message: `OUTPUT | seq u64 | bytes`.
pub fn output(seq: u64, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(9 + payload.len());
    b.put_u8(OUTPUT);
    b.put_u64(seq);
    b.put_slice(payload);
    b.freeze()
}

/// A message of `kind` with a text payload.
pub fn text(kind: u8, text: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + text.len());
    b.put_u8(kind);
    b.put_slice(text.as_bytes());
    b.freeze()
}

/// The answer to a ping.
pub fn pong(probe: [u8; 8]) -> Bytes {
    let mut b = BytesMut::with_capacity(9);
    b.put_u8(PONG);
    b.put_slice(&probe);
    b.freeze()
}

/// The exit message.
pub fn exit(code: i32) -> Bytes {
    let mut b = BytesMut::with_capacity(5);
    b.put_u8(EXIT);
    b.put_i32(code);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opening_bytes(kind: u8, csrf: &str, next: Option<u64>, token: &str) -> Vec<u8> {
        let mut b = vec![kind, 0, 120, 0, 40];
        b.extend_from_slice(&u16::try_from(csrf.len()).unwrap().to_be_bytes());
        b.extend_from_slice(csrf.as_bytes());
        if let Some(n) = next {
            b.extend_from_slice(&n.to_be_bytes());
        }
        b.extend_from_slice(token.as_bytes());
        b
    }

    #[test]
    fn openings_decode() {
        let o = opening(&opening_bytes(HELLO, "csrf", None, "tok")).unwrap();
        assert_eq!(
            o,
            Opening { csrf: "csrf".into(), token: "tok".into(), cols: 120, rows: 40, resume_from: None }
        );
        let o = opening(&opening_bytes(RESUME, "c", Some(7), "t2")).unwrap();
        assert_eq!((o.csrf.as_str(), o.token.as_str(), o.resume_from), ("c", "t2", Some(7)));
    }

    #[test]
    fn short_or_lying_openings_are_refused() {
        let full = opening_bytes(HELLO, "csrf", None, "tok");
        for cut in 0..7 {
            assert!(opening(&full[..cut]).is_err(), "cut at {cut}");
        }
        let mut lying = opening_bytes(HELLO, "csrf", None, "");
        lying[6] = 200; // csrf_len past the end
        assert_eq!(opening(&lying), Err(BadMessage::Malformed(HELLO)));
        assert_eq!(opening(&opening_bytes(RESUME, "c", None, "")), Err(BadMessage::Malformed(RESUME)));
        assert_eq!(opening(&[INPUT, 1]), Err(BadMessage::Kind(INPUT)));
        assert!(opening(&opening_bytes(HELLO, "c", None, "\u{0}\u{fffd}")).is_ok());
        let mut bad = opening_bytes(HELLO, "c", None, "");
        bad.push(0xff);
        assert_eq!(opening(&bad), Err(BadMessage::NotUtf8));
    }

    #[test]
    fn messages_decode() {
        assert_eq!(up(Bytes::from_static(b"\x10ls\r")), Ok(Up::Input(Bytes::from_static(b"ls\r"))));
        assert_eq!(up(Bytes::from_static(&[RESIZE, 0, 80, 0, 24])), Ok(Up::Resize { cols: 80, rows: 24 }));
        assert_eq!(up(Bytes::from_static(&[ACK, 0, 0, 0, 0, 0, 0, 1, 2])), Ok(Up::Ack(258)));
        assert_eq!(
            up(Bytes::from_static(&[PING, 1, 2, 3, 4, 5, 6, 7, 8])),
            Ok(Up::Ping([1, 2, 3, 4, 5, 6, 7, 8]))
        );
        assert_eq!(up(Bytes::from_static(&[TERMINATE])), Ok(Up::Terminate));
        assert_eq!(up(Bytes::from_static(&[RESIZE, 0, 80])), Err(BadMessage::Malformed(RESIZE)));
        assert_eq!(up(Bytes::from_static(&[ACK, 1])), Err(BadMessage::Malformed(ACK)));
        assert_eq!(up(Bytes::from_static(&[HELLO, 0, 0])), Err(BadMessage::Kind(HELLO)));
        assert_eq!(up(Bytes::new()), Err(BadMessage::Malformed(0)));
    }

    #[test]
    fn output_messages_encode() {
        assert_eq!(&output(2, b"hi")[..], &[OUTPUT, 0, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']);
        assert_eq!(&exit(-1)[..], &[EXIT, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(&pong([9; 8])[..], &[PONG, 9, 9, 9, 9, 9, 9, 9, 9]);
        assert_eq!(&text(CLOSED, "bye")[..], b"\x95bye");
    }
}
