//! A framed, bidirectional stream over any async reader/writer pair (a QUIC stream, or an
//! in-memory pipe in tests).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::control::Control;
use crate::frame::{Frame, FrameCodec, ProtoError};

/// Reads and writes [`Frame`]s.
pub struct FramedStream<R, W> {
    /// Decodes frames from the receiving half.
    pub reader: FramedRead<R, FrameCodec>,
    /// Encodes frames onto the sending half.
    pub writer: FramedWrite<W, FrameCodec>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> FramedStream<R, W> {
    /// Wraps a reader and a writer; frames longer than `max_len` are refused both ways.
    pub fn new(reader: R, writer: W, max_len: usize) -> Self {
        FramedStream {
            reader: FramedRead::new(reader, FrameCodec::new(max_len)),
            writer: FramedWrite::new(writer, FrameCodec::new(max_len)),
        }
    }

    /// Sends one frame and flushes it.
    pub async fn send(&mut self, frame: Frame) -> Result<(), ProtoError> {
        self.writer.send(frame).await
    }

    /// Sends one control message.
    pub async fn send_control(&mut self, msg: &Control) -> Result<(), ProtoError> {
        self.send(Frame::control(msg)).await
    }

    /// The next frame, or `None` at a clean end of stream.
    pub async fn recv(&mut self) -> Result<Option<Frame>, ProtoError> {
        self.reader.next().await.transpose()
    }

    /// The next frame, which must be a control message arriving within `deadline`.
    pub async fn recv_control(&mut self, deadline: Duration) -> Result<Control, ProtoError> {
        match tokio::time::timeout(deadline, self.recv()).await {
            Err(_) => Err(ProtoError::Timeout),
            Ok(Ok(None)) => Err(ProtoError::Closed),
            Ok(Ok(Some(frame))) => frame.to_control(),
            Ok(Err(e)) => Err(e),
        }
    }

    /// Splits into the read and write halves.
    pub fn split(self) -> (FramedRead<R, FrameCodec>, FramedWrite<W, FrameCodec>) {
        (self.reader, self.writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::CloseReason;
    use bytes::Bytes;

    #[tokio::test]
    async fn frames_cross_a_pipe() {
        let (a, b) = tokio::io::duplex(64);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        let mut left = FramedStream::new(ar, aw, 1024);
        let mut right = FramedStream::new(br, bw, 1024);
        let big = Bytes::from(vec![7u8; 1000]);
        let sender = tokio::spawn(async move {
            left.send(Frame::data(1, big)).await.unwrap();
            left.send_control(&Control::Exit { code: 3 }).await.unwrap();
            left
        });
        // Bounded waits: a sender that sends nothing fails here rather than hanging.
        let frame =
            tokio::time::timeout(Duration::from_secs(5), right.recv()).await.unwrap().unwrap().unwrap();
        assert_eq!(frame.payload.len(), 1000);
        assert_eq!(right.recv_control(Duration::from_secs(5)).await.unwrap(), Control::Exit { code: 3 });
        drop(sender.await.unwrap());
        assert!(matches!(right.recv_control(Duration::from_secs(5)).await, Err(ProtoError::Closed)));
    }

    #[tokio::test]
    async fn recv_control_times_out() {
        let (a, _keep) = tokio::io::duplex(64);
        let (r, w) = tokio::io::split(a);
        let mut s = FramedStream::new(r, w, 1024);
        let err = s.recv_control(Duration::from_millis(20)).await.unwrap_err();
        assert!(matches!(err, ProtoError::Timeout));
    }

    #[tokio::test]
    async fn oversized_frame_from_peer_is_refused() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        let mut big_sender = FramedStream::new(ar, aw, 1 << 20);
        let mut strict = FramedStream::new(br, bw, 100);
        big_sender.send(Frame::data(0, Bytes::from(vec![0u8; 101]))).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), strict.recv()).await.unwrap();
        assert!(matches!(got, Err(ProtoError::TooLong { len: 101, max: 100 })));
        let _ = CloseReason::ProtocolError;
    }
}
