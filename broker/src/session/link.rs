//! A client's connection to the session core, whatever carries it: the CLI's QUIC
//! connection, or an edge inside the broker (the stock plugin's WebSocket, the browser
//! console) that translates its own dialect into the CLI's framed protocol over an
//! in-process pipe.
//!
//! The core asks a link for streams (the first is the session's, each further one a port
//! session's TCP connection), whether it was lost (the session then waits for a resume) or
//! closed (the session ends), and closes it when the session is over.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use airlock_proto::{FramedStream, MAX_FRAME_LEN};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

use crate::app::App;

/// A boxed future, for the object-safe [`ClientLink`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// The read half of a client stream.
pub type ClientRead = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a client stream.
pub type ClientWrite = Box<dyn AsyncWrite + Send + Unpin>;
/// One framed stream from a client (the CLI's protocol, docs/wire.md §2).
pub type ClientStream = FramedStream<ClientRead, ClientWrite>;

/// Bytes buffered in each direction of an in-process pipe: a few frames, so an edge that
/// stops reading holds the session back instead of filling memory.
const PIPE_BUFFER: usize = 256 * 1024;
/// Streams an edge may have opened that the core has not taken yet.
const PENDING_STREAMS: usize = 16;
/// How long the client has to read the final frames before the link is closed.
const LINGER: Duration = Duration::from_secs(5);

/// A client's connection, as the session core sees it.
pub trait ClientLink: Send + Sync + 'static {
    /// The client's address, for logs and recordings.
    fn remote(&self) -> SocketAddr;
    /// The next stream the client opens; `Err` once the connection is gone.
    fn accept_stream(&self) -> BoxFuture<'_, Result<ClientStream, String>>;
    /// The client's hello was accepted: the connection leaves the unauthenticated limits.
    fn admitted(&self);
    /// Whether the connection was lost (timed out, reset, dropped) rather than closed by the
    /// client: only then does a session wait for the client to resume.
    fn lost(&self) -> bool;
    /// Closes the connection.
    fn close(&self, reason: &str);
    /// Resolves when the connection is closed, by either side.
    fn closed(&self) -> BoxFuture<'_, ()>;
}

/// Gives the client time to read what was sent, then closes.
pub async fn linger(link: &dyn ClientLink) {
    let _ = tokio::time::timeout(LINGER, link.closed()).await;
    link.close("done");
}

/// Frames one byte stream as a client stream.
pub fn client_stream<R, W>(read: R, write: W) -> ClientStream
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    FramedStream::new(Box::new(read) as ClientRead, Box::new(write) as ClientWrite, MAX_FRAME_LEN)
}

/// The link was closed; no stream can be opened on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the session's link is closed")]
pub struct LinkClosed;

/// Starts serving one in-process client connection (as a CLI's QUIC connection is served)
/// and returns the edge's end of it.
pub fn serve_edge(app: Arc<App>, remote: SocketAddr) -> EdgeHandle {
    let (streams_tx, streams_rx) = mpsc::channel(PENDING_STREAMS);
    let state = Arc::new(EdgeState { lost: AtomicBool::new(false), closed: CancellationToken::new() });
    let link = EdgeLink { remote, streams: Mutex::new(streams_rx), state: state.clone() };
    tokio::spawn(super::serve(app, Arc::new(link)));
    EdgeHandle { streams: streams_tx, state }
}

/// What an edge and the core share about one in-process link.
struct EdgeState {
    lost: AtomicBool,
    closed: CancellationToken,
}

/// The core's end of an in-process link.
struct EdgeLink {
    remote: SocketAddr,
    streams: Mutex<mpsc::Receiver<DuplexStream>>,
    state: Arc<EdgeState>,
}

impl ClientLink for EdgeLink {
    fn remote(&self) -> SocketAddr {
        self.remote
    }

    fn accept_stream(&self) -> BoxFuture<'_, Result<ClientStream, String>> {
        Box::pin(async move {
            let mut streams = self.streams.lock().await;
            tokio::select! {
                stream = streams.recv() => match stream {
                    Some(s) => {
                        let (read, write) = tokio::io::split(s);
                        Ok(client_stream(EdgeRead { inner: read, state: self.state.clone() }, write))
                    }
                    None => Err("the edge closed the connection".to_owned()),
                },
                _ = self.state.closed.cancelled() => Err("the connection is closed".to_owned()),
            }
        })
    }

    fn admitted(&self) {}

    fn lost(&self) -> bool {
        self.state.lost.load(Ordering::Acquire)
    }

    fn close(&self, _reason: &str) {
        self.state.closed.cancel();
    }

    fn closed(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.state.closed.cancelled())
    }
}

/// An edge's end of an in-process link: it opens streams on which it speaks the CLI's
/// framed protocol, and says how its own transport ended.
///
/// Dropping the handle without [`EdgeHandle::lost`] or [`EdgeHandle::close`] counts as a
/// close once its streams end.
pub struct EdgeHandle {
    streams: mpsc::Sender<DuplexStream>,
    state: Arc<EdgeState>,
}

impl EdgeHandle {
    /// Opens a stream to the session core: the first carries the session, each further one
    /// a port session's TCP connection (as the CLI's QUIC streams do).
    pub async fn open_stream(&self) -> Result<DuplexStream, LinkClosed> {
        if self.state.closed.is_cancelled() {
            return Err(LinkClosed);
        }
        let (edge, core) = tokio::io::duplex(PIPE_BUFFER);
        self.streams.send(core).await.map_err(|_| LinkClosed)?;
        Ok(edge)
    }

    /// The client's transport dropped without closing: the session waits (its resume
    /// window) for the client to come back. Call it before dropping the streams.
    pub fn lost(&self) {
        self.state.lost.store(true, Ordering::Release);
        self.state.closed.cancel();
    }

    /// The client closed on purpose: the session ends.
    pub fn close(&self) {
        self.state.closed.cancel();
    }

    /// Resolves when the link is closed (the broker closes it when the session is over).
    pub async fn closed(&self) {
        self.state.closed.cancelled().await
    }
}

/// The core's read half of an edge stream: once the edge said its transport was lost, the
/// pipe's end reads as a broken connection, not a clean close, so the session waits for a
/// resume as it does when a CLI's QUIC connection dies.
struct EdgeRead {
    inner: tokio::io::ReadHalf<DuplexStream>,
    state: Arc<EdgeState>,
}

impl AsyncRead for EdgeRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            std::task::Poll::Ready(Ok(()))
                if buf.filled().len() == before
                    && buf.remaining() > 0
                    && self.state.lost.load(Ordering::Acquire) =>
            {
                std::task::Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "the client's connection was lost",
                )))
            }
            other => other,
        }
    }
}
