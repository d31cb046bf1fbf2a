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
    /// A frame's payload is longer than the limit.
    TooLong {
        /// Length the header announced.
        len: usize,
        /// The largest payload allowed.
        max: usize,
    },
    /// The header's kind byte is not a known [`FrameKind`].
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The header's reserved bits are not zero.
    #[error("reserved header bits set: {0:#06x}")]
    Reserved(u16),
    /// The stream ended part-way through a frame.
    #[error("stream ended inside a frame ({0} bytes buffered)")]
    Truncated(usize),
    /// A control frame's payload does not decode as a [`crate::Control`].
    #[error("malformed control message: {0}")]
    BadControl(#[from] postcard::Error),
    /// A data frame came where a control frame was expected.
    #[error("expected a control frame, got {0:?}")]
    NotControl(FrameKind),
    /// The peer did not send in time.
    #[error("timed out waiting for the peer")]
    Timeout,
    /// The peer closed the stream.
    #[error("stream closed by the peer")]
    Closed,
    /// Reading or writing the stream failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// One frame on a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the payload is.
    pub kind: FrameKind,
    /// Header flag bits; none are defined yet, senders put 0.
    pub flags: u8,
    /// Per-direction sequence number of data frames (0 for control frames).
    pub seq: u64,
    /// The frame's bytes after the header.
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

    #[test]
    fn a_payload_of_exactly_the_limit_passes_both_ways() {
        let mut codec = FrameCodec::new(4);
        let mut buf = BytesMut::new();
        codec.encode(Frame::data(7, Bytes::from_static(b"1234")), &mut buf).unwrap();
        let got = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!((got.seq, &got.payload[..]), (7, &b"1234"[..]));
        // The header alone, with an empty payload, is a whole frame.
        let mut empty = encode(Frame::stderr(3, Bytes::new()));
        assert_eq!(empty.len(), HEADER_LEN);
        let got = codec.decode(&mut empty).unwrap().unwrap();
        assert_eq!((got.kind, got.seq, got.payload.len()), (FrameKind::Stderr, 3, 0));
    }

    #[test]
    fn the_decoder_reserves_what_the_frame_lacks_and_no_more() {
        const LEN: usize = 1 << 16;
        let full = encode(Frame::data(1, Bytes::from(vec![5u8; LEN])));
        let mut codec = FrameCodec::default();
        // Half a header: room for the rest of the header.
        let mut buf = BytesMut::with_capacity(HEADER_LEN);
        buf.extend_from_slice(&full[..HEADER_LEN / 2]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() >= HEADER_LEN && buf.capacity() < 2 * HEADER_LEN, "{}", buf.capacity());
        // A whole header: room for the whole frame, at once, and not for two.
        let mut buf = BytesMut::from(&full[..HEADER_LEN]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() >= HEADER_LEN + LEN, "{}", buf.capacity());
        assert!(buf.capacity() < 2 * (HEADER_LEN + LEN), "{}", buf.capacity());
        // One byte short: the buffer already has room; nothing more is reserved.
        let mut buf = BytesMut::with_capacity(full.len());
        buf.extend_from_slice(&full[..full.len() - 1]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert_eq!(buf.capacity(), full.len());
        // The encoder reserves one frame's worth too.
        let mut out = BytesMut::new();
        codec.encode(Frame::data(1, Bytes::from(vec![5u8; LEN])), &mut out).unwrap();
        assert!(out.capacity() < 2 * (HEADER_LEN + LEN), "{}", out.capacity());
    }
}

/// Property tests: whatever a peer sends, the decoder neither panics nor allocates beyond
/// the frame limit. Case count: proptest's default (256), or `PROPTEST_CASES`.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// A small limit, so near-limit and over-limit lengths are common.
    const LIMIT: usize = 4096;

    /// Feeds `input` to a decoder in pieces cut at `cuts`, checking the bounds on the way;
    /// returns the frames and whether decoding stopped at an error.
    fn feed(input: &[u8], cuts: &[usize]) -> (Vec<Frame>, bool) {
        let mut codec = FrameCodec::new(LIMIT);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        let mut fed = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        points.push(input.len());
        points.sort_unstable();
        for end in points {
            if end < fed {
                continue;
            }
            buf.extend_from_slice(&input[fed..end]);
            fed = end;
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        assert!(frame.payload.len() <= LIMIT);
                        frames.push(frame);
                    }
                    Ok(None) => break,
                    Err(_) => return (frames, true),
                }
                // Never more than the input so far plus one frame, give or take BytesMut's
                // doubling.
                assert!(buf.capacity() <= 2 * (fed + HEADER_LEN + LIMIT), "capacity {}", buf.capacity());
            }
            assert!(buf.capacity() <= 2 * (fed + HEADER_LEN + LIMIT), "capacity {}", buf.capacity());
        }
        match codec.decode_eof(&mut buf) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => {}
            Err(_) => return (frames, true),
        }
        (frames, false)
    }

    fn frame() -> impl Strategy<Value = Frame> {
        (1u8..=3, any::<u8>(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(
            |(kind, flags, seq, payload)| Frame {
                kind: FrameKind::try_from(kind).unwrap_or(FrameKind::Data),
                flags,
                seq,
                payload: Bytes::from(payload),
            },
        )
    }

    fn encode_all(frames: &[Frame]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        for f in frames {
            FrameCodec::new(LIMIT).encode(f.clone(), &mut buf).unwrap();
        }
        buf.to_vec()
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            input in proptest::collection::vec(any::<u8>(), 0..2048),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let (frames, _) = feed(&input, &cuts);
            for f in frames {
                let _ = f.to_control();
            }
        }

        #[test]
        fn valid_frames_round_trip_however_split(
            frames in proptest::collection::vec(frame(), 0..6),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let (got, failed) = feed(&encode_all(&frames), &cuts);
            prop_assert!(!failed);
            prop_assert_eq!(got, frames);
        }

        #[test]
        fn mutated_frames_never_panic(
            frames in proptest::collection::vec(frame(), 1..4),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cuts in proptest::collection::vec(any::<usize>(), 0..4),
        ) {
            let mut bytes = encode_all(&frames);
            for (at, value) in edits {
                let at = at % bytes.len();
                bytes[at] = value;
            }
            feed(&bytes, &cuts);
        }

        #[test]
        fn any_claimed_length_is_checked_before_allocation(kind in 1u8..=3, len in any::<u32>()) {
            let mut header = [0u8; HEADER_LEN];
            header[0] = kind;
            header[4..8].copy_from_slice(&len.to_be_bytes());
            let mut buf = BytesMut::from(&header[..]);
            let before = buf.capacity();
            match FrameCodec::new(LIMIT).decode(&mut buf) {
                Err(ProtoError::TooLong { len: l, max }) => {
                    prop_assert!(l > LIMIT && max == LIMIT);
                    prop_assert_eq!(buf.capacity(), before);
                }
                Ok(None) => {
                    prop_assert!(len as usize <= LIMIT);
                    prop_assert!(buf.capacity() <= 2 * (HEADER_LEN + LIMIT));
                }
                Ok(Some(f)) => prop_assert_eq!(f.payload.len(), 0),
                Err(e) => prop_assert!(false, "unexpected {}", e),
            }
        }
    }
}
