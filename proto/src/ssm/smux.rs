//! smux protocol v1 frames (`github.com/xtaci/smux`), as carried inside the Output payloads of
//! `LocalPortForwarding` sessions (spec §4.2).
//!
//! Frame = 8-byte header then data: version u8 (1), cmd u8, length u16 **little-endian**,
//! stream id u32 little-endian. Client-opened stream ids are odd and start at 3.
//!
//! Keepalive rule (§4.2): smux's default keepalive (NOP every 10 s, mux closed after 30 s
//! without a received frame) is turned **off** by the agent (smux server) when the client
//! version is > 1.2.331.0, and by the plugin when the agent version is > 3.1.1511.0. Both ends
//! must agree, so a server must mirror [`server_keepalive_enabled`]; the captured 1.2.677.0
//! plugin sent no NOPs.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::SsmError;

/// Size of the smux frame header.
pub const HEADER_LEN: usize = 8;
/// The only protocol version the SSM peers speak.
pub const VERSION: u8 = 1;
/// smux `DefaultConfig().MaxFrameSize`: the largest data part either SSM peer sends.
pub const MAX_FRAME_SIZE: usize = 32_768;

/// An smux command byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Cmd {
    /// 0: open a stream.
    Syn = 0,
    /// 1: close a stream (half-close of the sender's side).
    Fin = 1,
    /// 2: stream data.
    Psh = 2,
    /// 3: keepalive.
    Nop = 3,
    /// 4: window update; protocol v2 only, so refused here.
    Upd = 4,
}

/// One smux frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmuxFrame {
    /// The command.
    pub cmd: Cmd,
    /// Stream id.
    pub stream_id: u32,
    /// Data (non-empty only for PSH).
    pub data: Bytes,
}

impl SmuxFrame {
    /// A frame without data (SYN, FIN, NOP).
    pub fn control(cmd: Cmd, stream_id: u32) -> SmuxFrame {
        SmuxFrame { cmd, stream_id, data: Bytes::new() }
    }

    /// Appends the encoded frame; refuses data longer than [`MAX_FRAME_SIZE`].
    pub fn encode_into(&self, out: &mut BytesMut) -> Result<(), SsmError> {
        if self.data.len() > MAX_FRAME_SIZE {
            return Err(SsmError::Smux("data longer than the maximum frame size"));
        }
        if self.cmd == Cmd::Upd {
            return Err(SsmError::Smux("UPD exists only in protocol v2"));
        }
        if self.cmd != Cmd::Psh && !self.data.is_empty() {
            return Err(SsmError::Smux("only PSH frames carry data"));
        }
        out.reserve(HEADER_LEN + self.data.len());
        out.put_u8(VERSION);
        out.put_u8(self.cmd as u8);
        // Bounded by MAX_FRAME_SIZE above, so it fits a u16.
        out.put_u16_le(self.data.len() as u16);
        out.put_u32_le(self.stream_id);
        out.put_slice(&self.data);
        Ok(())
    }

    /// The encoded frame.
    pub fn encode(&self) -> Result<Bytes, SsmError> {
        let mut out = BytesMut::new();
        self.encode_into(&mut out)?;
        Ok(out.freeze())
    }
}

/// Incremental decoder: smux frames do not align with SSM messages (the plugin ships raw
/// 1 024-byte reads), so bytes are buffered until a frame is complete.
#[derive(Debug)]
pub struct SmuxDecoder {
    buf: BytesMut,
    max_data_len: usize,
}

impl Default for SmuxDecoder {
    fn default() -> Self {
        SmuxDecoder::new(MAX_FRAME_SIZE)
    }
}

impl SmuxDecoder {
    /// A decoder refusing frames whose data exceeds `max_data_len` (at most 65 535).
    pub fn new(max_data_len: usize) -> SmuxDecoder {
        SmuxDecoder { buf: BytesMut::new(), max_data_len }
    }

    /// Appends bytes received from the peer.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet decoded (at most one partial frame after `next_frame`
    /// has returned `Ok(None)`, so bounded by the header plus `max_data_len`).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed; an error is fatal for
    /// the mux (the byte stream can no longer be framed).
    pub fn next_frame(&mut self) -> Result<Option<SmuxFrame>, SsmError> {
        let Some(header) = self.buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        if header[0] != VERSION {
            return Err(SsmError::Smux("unsupported protocol version"));
        }
        let cmd = match header[1] {
            0 => Cmd::Syn,
            1 => Cmd::Fin,
            2 => Cmd::Psh,
            3 => Cmd::Nop,
            // UPD (4) only exists in protocol v2.
            _ => return Err(SsmError::Smux("unknown command")),
        };
        let len = usize::from(u16::from_le_bytes([header[2], header[3]]));
        let stream_id = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > self.max_data_len {
            return Err(SsmError::Smux("frame longer than the limit"));
        }
        if cmd != Cmd::Psh && len != 0 {
            return Err(SsmError::Smux("non-PSH frame with data"));
        }
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        let data = self.buf.split_to(len).freeze();
        Ok(Some(SmuxFrame { cmd, stream_id, data }))
    }
}

/// Parses a dotted version (`1.2.677.0`, 1–4 numeric parts) for the version rules below.
pub fn parse_version(v: &str) -> Option<[u64; 4]> {
    let mut out = [0u64; 4];
    for (n, part) in v.trim().split('.').enumerate() {
        *out.get_mut(n)? = part.parse().ok()?;
    }
    Some(out)
}

fn greater_than(version: &str, threshold: [u64; 4]) -> Option<bool> {
    parse_version(version).map(|v| v > threshold)
}

/// Whether the smux **server** (agent side, i.e. this edge) keeps keepalive on for a client of
/// this version: only for clients ≤ 1.2.331.0. An unparsable version is treated like an old
/// client (the agent only disables keepalive when the comparison says "greater").
pub fn server_keepalive_enabled(client_version: &str) -> bool {
    !greater_than(client_version, [1, 2, 331, 0]).unwrap_or(false)
}

/// Whether the plugin (smux client) keeps keepalive on for an agent of this version: only for
/// agents ≤ 3.1.1511.0.
pub fn client_keepalive_enabled(agent_version: &str) -> bool {
    !greater_than(agent_version, [3, 1, 1511, 0]).unwrap_or(false)
}

/// Whether the agent uses smux for `LocalPortForwarding` with this client (≥ 1.1.70).
pub fn agent_uses_mux(client_version: &str) -> bool {
    parse_version(client_version).is_some_and(|v| v >= [1, 1, 70, 0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn captured_headers_decode() {
        let mut d = SmuxDecoder::default();
        d.extend(&hex::decode("0100000003000000").unwrap());
        d.extend(&hex::decode("01020300030000006162").unwrap());
        assert_eq!(d.next_frame().unwrap(), Some(SmuxFrame::control(Cmd::Syn, 3)));
        // PSH of 3 bytes with only 2 present: wait.
        assert_eq!(d.next_frame().unwrap(), None);
        d.extend(b"c");
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!((f.cmd, f.stream_id, &f.data[..]), (Cmd::Psh, 3, &b"abc"[..]));
        assert_eq!(d.buffered(), 0);
        assert_eq!(hex::encode(f.encode().unwrap()), "0102030003000000616263");
    }

    #[test]
    fn limits_and_bad_frames() {
        for bad in [
            "0200000003000000", // version 2
            "0104080003000000", // UPD
            "0109000003000000", // unknown cmd
            "0101010003000000", // FIN with data
        ] {
            let mut d = SmuxDecoder::default();
            d.extend(&hex::decode(bad).unwrap());
            assert!(d.next_frame().is_err(), "{bad}");
        }
        let mut d = SmuxDecoder::new(16);
        d.extend(&hex::decode("0102110003000000").unwrap());
        assert!(d.next_frame().is_err());
        let big = SmuxFrame { cmd: Cmd::Psh, stream_id: 3, data: Bytes::from(vec![0; MAX_FRAME_SIZE + 1]) };
        assert!(big.encode().is_err());
        assert!(SmuxFrame::control(Cmd::Upd, 3).encode().is_err());
        assert!(SmuxFrame { cmd: Cmd::Fin, stream_id: 3, data: Bytes::from_static(b"x") }.encode().is_err());
    }

    #[test]
    fn keepalive_rules_by_version() {
        assert!(!server_keepalive_enabled("1.2.677.0"));
        assert!(!server_keepalive_enabled("1.2.332.0"));
        assert!(server_keepalive_enabled("1.2.331.0"));
        assert!(server_keepalive_enabled("1.1.70.0"));
        assert!(!client_keepalive_enabled("3.3.1142.0"));
        assert!(client_keepalive_enabled("3.1.1511.0"));
        assert!(agent_uses_mux("1.1.70.0"));
        assert!(!agent_uses_mux("1.1.69.0"));
        assert_eq!(parse_version("1.2.x.0"), None);
        assert_eq!(parse_version("1.2.3.4.5"), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..64), 0..8)) {
            let mut d = SmuxDecoder::new(64);
            for c in chunks {
                d.extend(&c);
                while let Ok(Some(f)) = d.next_frame() {
                    prop_assert!(f.data.len() <= 64);
                }
            }
        }
    }
}
