//! Port forwarding (`AWS-StartPortForwardingSession…`): listen on 127.0.0.1 and carry every
//! accepted TCP connection on its own stream of the session's QUIC connection.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use airlock_proto::stream::FramedStream;
use airlock_proto::MAX_FRAME_LEN;
use futures_util::future::try_join;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::error::Error;
use crate::link::{self, Opener};
use crate::ports::PortTarget;
use crate::session::{self, End};
use crate::tunnel::{self, Fault, CONNECT_ANSWER_TIMEOUT};

/// Connections carried at once per session. The broker allows 1024 concurrent streams per
/// QUIC connection and the session stream is one of them.
pub const MAX_CONNECTIONS: usize = 1023;
/// Pause after a failed `accept` (e.g. out of file descriptors) so we do not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A line for the user; the caller decides where it goes and in what order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// For stdout (the SSM plugin prints its port banner there).
    Out(String),
    /// For stderr.
    Err(String),
}

/// A bound local port for port target `target`.
#[derive(Debug)]
pub struct Listener {
    /// The target number sent in `Connect`.
    pub target: u16,
    /// The socket, already listening.
    pub socket: TcpListener,
    /// The actual port (differs from the requested one when that was 0).
    pub port: u16,
}

/// Binds 127.0.0.1 for every target, before the session exists so a port in use costs no
/// session.
pub async fn bind(targets: &[PortTarget]) -> Result<Vec<Listener>, Error> {
    let mut out = Vec::with_capacity(targets.len());
    for (i, t) in targets.iter().enumerate() {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, t.local_port));
        let socket = TcpListener::bind(addr).await.map_err(|source| Error::Listen { addr, source })?;
        let port = socket.local_addr().map_err(|source| Error::Listen { addr, source })?.port();
        let target = u16::try_from(i).map_err(|_| Error::Usage("too many port mappings".to_owned()))?;
        out.push(Listener { target, socket, port });
    }
    Ok(out)
}

/// Runs a ready port session until the broker ends it or `stop` fires; returns the exit
/// status and a closing message for stderr. The session stream is finished on the way out
/// (that ends the session at the broker); the caller closes the connection.
pub async fn run<S: Future<Output = ()>>(
    opener: Opener,
    session: FramedStream<quinn::RecvStream, quinn::SendStream>,
    session_id: &str,
    listeners: Vec<Listener>,
    notes: mpsc::Sender<Note>,
    stop: S,
) -> (i32, Option<String>) {
    let (reader, mut writer) = session.split();
    let mut watcher = tokio::spawn(watch_session(reader));
    // Never wait for the printer: a stalled stdout must not keep us from noticing a signal.
    // The queue is empty now, so the banner (one note) always fits.
    let _ = notes.try_send(Note::Out(banner(session_id, &listeners)));

    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Ending this set's tasks drops their own sets, which aborts every connection task.
    let mut acceptors = JoinSet::new();
    for l in listeners {
        acceptors.spawn(accept_loop(l, opener.clone(), limit.clone(), notes.clone()));
    }
    tokio::pin!(stop);
    let result = tokio::select! {
        joined = &mut watcher => {
            let end = joined.unwrap_or_else(|e| End::Failed(format!("session watcher failed: {e}")));
            session_end(&end, session_id)
        }
        () = &mut stop => (0, None),
    };
    // Waiting for the accept loops to be gone means the ports are closed when we return.
    acceptors.shutdown().await;
    watcher.abort();
    link::finish(&mut writer).await;
    if result.1.is_none() {
        let _ = notes.try_send(Note::Out(format!("\n\nExiting session with sessionId: {session_id}.\n")));
    }
    result
}

/// The SSM plugin's opening lines: scripts wait for "Waiting for connections...".
fn banner(session_id: &str, listeners: &[Listener]) -> String {
    let mut text = format!("\nStarting session with SessionId: {session_id}\n");
    for l in listeners {
        text.push_str(&format!("Port {} opened for sessionId {session_id}.\n", l.port));
    }
    text.push_str("Waiting for connections...");
    text
}

/// Reads the session stream until the broker ends it; port sessions carry nothing else on it.
pub(crate) async fn watch_session<R: AsyncRead + Unpin>(
    mut reader: tokio_util::codec::FramedRead<R, airlock_proto::FrameCodec>,
) -> End {
    // A port session's own stream carries no output to acknowledge.
    let acks = tokio::sync::watch::channel(session::Feedback::default()).0;
    session::pump_output(&mut reader, &mut tokio::io::sink(), &mut tokio::io::sink(), &acks).await.end
}

/// The exit status and message when the broker ends a port session: termination or a plain
/// end of the stream are normal (exit 0), anything else is a failure.
pub fn session_end(end: &End, session_id: &str) -> (i32, Option<String>) {
    let msg = |text: &str| Some(format!("\nSession {session_id} ended: {text}"));
    match end {
        End::Closed { reason: airlock_proto::CloseReason::Terminated, message } => {
            (0, msg(&tunnel::describe(airlock_proto::CloseReason::Terminated, message)))
        }
        End::StreamEnded => (0, msg("the broker ended the session")),
        End::Closed { reason, message } => (crate::EXIT_FAILURE, msg(&tunnel::describe(*reason, message))),
        End::Failed(e) => (crate::EXIT_FAILURE, msg(&format!("connection lost: {e}"))),
        End::LocalOutput(e) => (crate::EXIT_FAILURE, msg(e)),
    }
}

async fn accept_loop(listener: Listener, opener: Opener, limit: Arc<Semaphore>, notes: mpsc::Sender<Note>) {
    let mut connections = JoinSet::new();
    loop {
        // Waiting for a permit before accepting leaves excess clients in the listen backlog.
        let Ok(permit) = limit.clone().acquire_owned().await else { return };
        while connections.try_join_next().is_some() {}
        match listener.socket.accept().await {
            Ok((tcp, _)) => {
                connections.spawn(serve(tcp, listener.target, opener.clone(), notes.clone(), permit));
            }
            Err(e) => {
                let text = format!("Accepting a connection on port {} failed: {e}", listener.port);
                let _ = notes.try_send(Note::Err(text));
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn serve(
    tcp: TcpStream,
    target: u16,
    opener: Opener,
    notes: mpsc::Sender<Note>,
    _permit: OwnedSemaphorePermit,
) {
    let stream = match opener.open().await {
        Ok((send, recv)) => FramedStream::new(recv, send, MAX_FRAME_LEN),
        Err(e) => {
            reset(tcp);
            let _ = notes.try_send(Note::Err(format!("Connection to target {target} failed: {e}")));
            return;
        }
    };
    if let Err(e) = carry(tcp, stream, target, CONNECT_ANSWER_TIMEOUT).await {
        // Dropped when the queue is full: these lines are for humans and a flood helps nobody.
        let _ = notes.try_send(Note::Err(e.to_string()));
    }
}

/// How one forwarded connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The broker or agent did not connect it (refused, far side unreachable, no answer).
    Connect {
        /// 0-based index of the port target.
        target: u16,
        /// Why it was not connected.
        message: String,
    },
    /// It broke after it was established.
    Relay {
        /// 0-based index of the port target.
        target: u16,
        /// What broke.
        fault: Fault,
    },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect { target, message } => {
                write!(f, "Connection to target {target} failed: {message}")
            }
            Failure::Relay { target, fault } => write!(f, "Connection to target {target} aborted: {fault}"),
        }
    }
}

/// Carries one accepted connection on `stream`: `Connect`, then the relay with half-close
/// kept both ways. On any failure the local connection is reset, so its client cannot
/// mistake a cut-off transfer for a complete one.
pub async fn carry<R, W>(
    mut tcp: TcpStream,
    mut stream: FramedStream<R, W>,
    target: u16,
    answer_deadline: Duration,
) -> Result<(), Failure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if let Err(message) = tunnel::connect(&mut stream, target, answer_deadline).await {
        reset(tcp);
        return Err(Failure::Connect { target, message });
    }
    // Interactive protocols suffer from Nagle delays on the small writes we relay.
    let _ = tcp.set_nodelay(true);
    let (mut reader, mut writer) = stream.split();
    let result = {
        let (mut local_read, mut local_write) = tcp.split();
        try_join(
            tunnel::upstream(&mut local_read, &mut writer),
            tunnel::downstream(&mut reader, &mut local_write),
        )
        .await
    };
    match result {
        Ok(((), ())) => Ok(()),
        Err(fault) => {
            tunnel::goodbye(&mut writer, &fault).await;
            reset(tcp);
            Err(Failure::Relay { target, fault })
        }
    }
}

/// Closes with RST rather than FIN.
fn reset(tcp: TcpStream) {
    // Zero linger makes close() send RST without blocking; if it cannot be set, a FIN is
    // the best we can do.
    let _ = tcp.set_zero_linger();
    drop(tcp);
}

#[cfg(test)]
#[path = "forward_tests.rs"]
mod tests;
