//! The binary frame: `kind u8 | flags u8 | reserved u16 | length u32 | seq u64 | payload`.
//!
//! All integers are big-endian. The length is checked against the codec's limit before any
//! payload buffer is reserved, so a hostile peer cannot make us allocate.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::control::Control;

/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 16;
/// Default upper bound on a frame's payload (1 MiB).
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Terminal or TCP bytes: input towards the agent, output (stdout) towards the client.
    Data = 1,
    /// Standard error of a non-interactive command (agent → client).
    Stderr = 2,
    /// A postcard-encoded [`Control`] message.
    Control = 3,
}

impl TryFrom<u8> for FrameKind {
    type Error = ProtoError;
    fn try_from(v: u8) -> Result<Self, ProtoError> {
        match v {
            1 => Ok(FrameKind::Data),
            2 => Ok(FrameKind::Stderr),
            3 => Ok(FrameKind::Control),
            other => Err(ProtoError::UnknownKind(other)),
        }
    }
}

/// Errors of the wire layer.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLong { len: usize, max: usize },
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("reserved header bits set: {0:#06x}")]
    Reserved(u16),
    #[error("stream ended inside a frame ({0} bytes buffered)")]
    Truncated(usize),
    #[error("malformed control message: {0}")]
    BadControl(#[from] postcard::Error),
    #[error("expected a control frame, got {0:?}")]
    NotControl(FrameKind),
    #[error("timed out waiting for the peer")]
    Timeout,
    #[error("stream closed by the peer")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// One frame on a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub flags: u8,
    /// Per-direction sequence number of data frames (0 for control frames).
    pub seq: u64,
    pub payload: Bytes,
}

impl Frame {
    /// A data frame carrying `payload` with sequence number `seq`.
    pub fn data(seq: u64, payload: Bytes) -> Self {
        Frame { kind: FrameKind::Data, flags: 0, seq, payload }
    }

    /// A stderr frame carrying `payload` with sequence number `seq`.
    pub fn stderr(seq: u64, payload: Bytes) -> Self {
        Frame { kind: FrameKind::Stderr, flags: 0, seq, payload }
    }

    /// A control frame holding `msg`.
    pub fn control(msg: &Control) -> Self {
        // Serializing our own enum into a Vec cannot fail.
        let bytes = postcard::to_allocvec(msg).unwrap_or_default();
        Frame { kind: FrameKind::Control, flags: 0, seq: 0, payload: Bytes::from(bytes) }
    }

    /// Decodes the control message of a control frame.
    pub fn to_control(&self) -> Result<Control, ProtoError> {
        if self.kind != FrameKind::Control {
            return Err(ProtoError::NotControl(self.kind));
        }
        Ok(postcard::from_bytes(&self.payload)?)
    }
}

/// tokio-util codec for [`Frame`]s with a payload limit.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_len: usize,
}

impl FrameCodec {
    /// A codec refusing payloads longer than `max_len`.
    pub fn new(max_len: usize) -> Self {
        FrameCodec { max_len }
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(MAX_FRAME_LEN)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = ProtoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtoError> {
        if src.len() < HEADER_LEN {
            src.reserve(HEADER_LEN - src.len());
            return Ok(None);
        }
        let kind = FrameKind::try_from(src[0])?;
        let flags = src[1];
        let reserved = u16::from_be_bytes([src[2], src[3]]);
        if reserved != 0 {
            return Err(ProtoError::Reserved(reserved));
        }
        let len = u32::from_be_bytes([src[4], src[5], src[6], src[7]]) as usize;
        if len > self.max_len {
            return Err(ProtoError::TooLong { len, max: self.max_len });
        }
        if src.len() < HEADER_LEN + len {
            src.reserve(HEADER_LEN + len - src.len());
            return Ok(None);
        }
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(&src[8..16]);
        src.advance(HEADER_LEN);
        let payload = src.split_to(len).freeze();
        Ok(Some(Frame { kind, flags, seq: u64::from_be_bytes(seq_bytes), payload }))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtoError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(ProtoError::Truncated(src.len())),
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = ProtoError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), ProtoError> {
        let len = frame.payload.len();
        if len > self.max_len {
            return Err(ProtoError::TooLong { len, max: self.max_len });
        }
        dst.reserve(HEADER_LEN + len);
        dst.put_u8(frame.kind as u8);
        dst.put_u8(frame.flags);
        dst.put_u16(0);
        dst.put_u32(len as u32);
        dst.put_u64(frame.seq);
        dst.extend_from_slice(&frame.payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{CloseReason, Control};

    fn encode(frame: Frame) -> BytesMut {
        let mut buf = BytesMut::new();
        FrameCodec::default().encode(frame, &mut buf).unwrap();
        buf
    }

    #[test]
    fn round_trip_data() {
        let frame = Frame::data(42, Bytes::from_static(b"hello"));
        let mut buf = encode(frame.clone());
        assert_eq!(buf.len(), HEADER_LEN + 5);
        assert_eq!(&buf[..8], &[1, 0, 0, 0, 0, 0, 0, 5]);
        let got = FrameCodec::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(got, frame);
        assert!(buf.is_empty());
    }

    #[test]
    fn round_trip_control() {
        let msg = Control::Close { reason: CloseReason::Terminated, message: "bye".into() };
        let mut buf = encode(Frame::control(&msg));
        let got = FrameCodec::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(got.to_control().unwrap(), msg);
    }

    #[test]
    fn partial_input_waits_for_more() {
        let full = encode(Frame::data(1, Bytes::from_static(b"abcdef")));
        let mut codec = FrameCodec::default();
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert!(codec.decode(&mut part).unwrap().is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn truncated_at_eof_is_an_error() {
        let full = encode(Frame::data(1, Bytes::from_static(b"abcdef")));
        let mut part = BytesMut::from(&full[..full.len() - 1]);
        let err = FrameCodec::default().decode_eof(&mut part).unwrap_err();
        assert!(matches!(err, ProtoError::Truncated(21)), "{err}");
        let mut empty = BytesMut::new();
        assert!(FrameCodec::default().decode_eof(&mut empty).unwrap().is_none());
    }

    #[test]
    fn oversized_length_rejected_before_allocation() {
        let mut buf = BytesMut::from(&[1u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0][..]);
        let before = buf.capacity();
        let err = FrameCodec::new(1024).decode(&mut buf).unwrap_err();
        assert!(matches!(err, ProtoError::TooLong { len: 0xffff_ffff, max: 1024 }));
        assert_eq!(buf.capacity(), before, "no buffer was reserved for the bogus length");
    }

    #[test]
    fn encoder_refuses_oversized_payload() {
        let mut buf = BytesMut::new();
        let err = FrameCodec::new(4).encode(Frame::data(0, Bytes::from_static(b"12345")), &mut buf);
        assert!(matches!(err, Err(ProtoError::TooLong { len: 5, max: 4 })));
    }

    #[test]
    fn unknown_kind_and_reserved_bits_rejected() {
        let mut buf = encode(Frame::data(0, Bytes::new()));
        buf[0] = 9;
        assert!(matches!(FrameCodec::default().decode(&mut buf), Err(ProtoError::UnknownKind(9))));
        let mut buf = encode(Frame::data(0, Bytes::new()));
        buf[3] = 1;
        assert!(matches!(FrameCodec::default().decode(&mut buf), Err(ProtoError::Reserved(1))));
    }

    #[test]
    fn malformed_control_payload_rejected() {
        let frame = Frame {
            kind: FrameKind::Control,
            flags: 0,
            seq: 0,
            payload: Bytes::from_static(&[0xff, 0xff, 0xff]),
        };
        assert!(matches!(frame.to_control(), Err(ProtoError::BadControl(_))));
        assert!(matches!(Frame::data(0, Bytes::new()).to_control(), Err(ProtoError::NotControl(_))));
    }

    #[test]
    fn several_frames_in_one_buffer() {
        let mut buf = encode(Frame::data(1, Bytes::from_static(b"a")));
        buf.extend_from_slice(&encode(Frame::stderr(2, Bytes::from_static(b"bc"))));
        let mut codec = FrameCodec::default();
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap().seq, 1);
        let second = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!((second.kind, second.seq, &second.payload[..]), (FrameKind::Stderr, 2, &b"bc"[..]));
        assert!(codec.decode(&mut buf).unwrap().is_none());
    }
}
