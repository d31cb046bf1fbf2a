//! Port forwarding (wire contract §3): one broker stream carries one TCP connection.
//!
//! After `Dial` the agent checks the allow-list, resolves, connects and answers `Started` (or
//! `Close{Refused | ConnectFailed}`). Then two pumps run side by side, each copying straight
//! from one socket to the other with no queue in between, so backpressure reaches both ends.
//! Half-close is kept: each direction ends on its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use airlock_proto::{
    CloseReason, Control, Frame, FrameCodec, FrameKind, FramedStream, ProtoError, SessionId,
};
use bytes::{BufMut, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use super::{control_name, refuse, send_within, SessionLimits};
use crate::allow::{is_link_local, AllowList, Precheck};
use crate::error::Error;

/// Largest TCP read, hence largest Data frame we send (the contract's 64 KiB chunking).
const CHUNK: usize = 64 * 1024;

/// How the agent forwards ports.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// Which targets may be dialled.
    pub allow: Arc<AllowList>,
    /// Deadline for resolving the target host.
    pub resolve_timeout: Duration,
    /// Deadline for connecting, over all resolved addresses together.
    pub connect_timeout: Duration,
    /// Cancelled when the link the streams came on is gone: a connection whose broker side
    /// already finished would otherwise wait on its TCP peer forever.
    pub link_gone: CancellationToken,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            allow: Arc::new(AllowList::allow_all()),
            resolve_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            link_gone: CancellationToken::new(),
        }
    }
}

/// How one forwarded connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardEnd {
    /// The allow-list refused the target; the message is what the broker was told.
    Refused(String),
    /// Resolving or connecting failed; the message is what the broker was told.
    ConnectFailed(String),
    /// Both directions reached their end of stream.
    Finished,
    /// The broker sent `Close`.
    Closed {
        /// The broker's reason.
        reason: CloseReason,
        /// The broker's message.
        message: String,
    },
    /// The TCP connection, the stream or the link broke mid-way; the text says how.
    Broken(String),
}

/// What happened to one forwarded connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardReport {
    /// The port session the connection belongs to.
    pub session_id: SessionId,
    /// `host:port` as the broker asked for it.
    pub target: String,
    /// How it ended.
    pub end: ForwardEnd,
    /// Bytes read from the TCP connection and sent to the broker.
    pub to_broker: u64,
    /// Bytes received from the broker and written to the TCP connection.
    pub from_broker: u64,
}

/// Why the relay stopped before both directions ended.
#[derive(Debug)]
enum Stop {
    /// Both directions ended cleanly.
    Done,
    /// The broker sent `Close`.
    Closed(CloseReason, String),
    /// The link went away.
    LinkGone,
    /// The stream broke; there is nobody to tell.
    PeerGone(String),
    /// The TCP connection failed: the broker hears `ConnectFailed`.
    Tcp(String),
    /// The broker broke the protocol: it hears `ProtocolError`.
    Protocol(String),
}

/// Why no connection was made; the message is for the broker.
enum Denied {
    /// The allow-list said no: `Close{Refused}`.
    Refused(String),
    /// Resolving or connecting failed: `Close{ConnectFailed}`.
    Failed(String),
}

/// Longest host we try to resolve: a DNS name is at most 253 bytes, and a longer string is
/// not worth a lookup nor a place in our messages.
const MAX_HOST_LEN: usize = 255;

/// Serves a stream whose first frame was `Dial{host, port}`.
pub(super) async fn run<R, W>(
    mut stream: FramedStream<R, W>,
    session_id: SessionId,
    host: String,
    port: u16,
    limits: &SessionLimits,
    config: &ForwardConfig,
) -> Result<ForwardReport, Error>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let target = display_target(&host, port);
    let mut report =
        ForwardReport { session_id, target, end: ForwardEnd::Finished, to_broker: 0, from_broker: 0 };
    let tcp = match open(&host, port, &report.target, config).await {
        Ok(tcp) => tcp,
        Err(denied) => {
            let (reason, message) = match &denied {
                Denied::Refused(message) => (CloseReason::Refused, message),
                Denied::Failed(message) => (CloseReason::ConnectFailed, message),
            };
            refuse(stream.writer, reason, message, limits.send_timeout).await;
            report.end = match denied {
                Denied::Refused(message) => ForwardEnd::Refused(message),
                Denied::Failed(message) => ForwardEnd::ConnectFailed(message),
            };
            log(&report);
            return Ok(report);
        }
    };
    send_within(&mut stream.writer, Frame::control(&Control::Started), limits.send_timeout).await?;
    let (reader, writer) = stream.split();
    relay(reader, writer, tcp, &mut report, limits, &config.link_gone).await;
    log(&report);
    Ok(report)
}

fn log(report: &ForwardReport) {
    let ForwardReport { session_id, target, end, to_broker, from_broker } = report;
    match end {
        ForwardEnd::Refused(message) => tracing::info!(session = %session_id, %target, "refused: {message}"),
        _ => {
            tracing::debug!(session = %session_id, %target, to_broker, from_broker, ?end, "forwarded connection done")
        }
    }
}

/// `host:port`, with IPv6 literals in brackets.
fn display_target(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Allow-list, resolution and connect: a connected socket, or the answer for the broker.
async fn open(host: &str, port: u16, target: &str, config: &ForwardConfig) -> Result<TcpStream, Denied> {
    if host.is_empty() || host.len() > MAX_HOST_LEN {
        return Err(Denied::Failed(format!("invalid host name of {} bytes", host.len())));
    }
    let allow = &config.allow;
    let precheck = allow.precheck(host, port);
    if precheck == Precheck::Refused {
        return Err(Denied::Refused(not_allowed(target)));
    }
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let found: Vec<SocketAddr> =
        match timeout(config.resolve_timeout, tokio::net::lookup_host((bare, port))).await {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(e)) => return Err(Denied::Failed(format!("resolving {host} failed: {e}"))),
            Err(_) => {
                let secs = config.resolve_timeout.as_secs_f32();
                return Err(Denied::Failed(format!("resolving {host} failed: timed out after {secs}s")));
            }
        };
    if found.is_empty() {
        return Err(Denied::Failed(format!("resolving {host} failed: no addresses")));
    }
    let allowed: Vec<SocketAddr> =
        found.iter().copied().filter(|a| allow.permits(precheck, a.ip(), port)).collect();
    if allowed.is_empty() {
        return Err(Denied::Refused(if found.iter().all(|a| is_link_local(a.ip())) {
            let addrs: Vec<String> = found.iter().map(|a| a.ip().to_string()).collect();
            format!(
                "{target} is a link-local or metadata address ({}); this agent refuses those unless its \
                 allow-list names the address itself (--allow-port)",
                addrs.join(", ")
            )
        } else {
            not_allowed(target)
        }));
    }
    connect(&allowed, target, config.connect_timeout).await.map_err(Denied::Failed)
}

fn not_allowed(target: &str) -> String {
    format!("{target} is not in this agent's allow-list (--allow-port)")
}

/// Tries each address in turn within one overall deadline.
async fn connect(addrs: &[SocketAddr], target: &str, deadline: Duration) -> Result<TcpStream, String> {
    let attempts = async {
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(tcp) => return Ok(tcp),
                Err(e) => {
                    tracing::debug!(%addr, "connect failed: {e}");
                    last = Some(e);
                }
            }
        }
        Err(last.map_or_else(|| "no address to try".to_owned(), |e| e.to_string()))
    };
    let tcp = match timeout(deadline, attempts).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(format!("connect to {target} failed: {e}")),
        Err(_) => {
            return Err(format!("connect to {target} failed: timed out after {}s", deadline.as_secs_f32()))
        }
    };
    // Interactive protocols (ssh) suffer from Nagle's delay far more than bulk ones gain.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY: {e}");
    }
    Ok(tcp)
}

/// Runs both directions until both ended or one failed, then tells the broker what it
/// needs to know and drops the TCP connection.
async fn relay<R, W>(
    mut reader: FramedRead<R, FrameCodec>,
    mut writer: FramedWrite<W, FrameCodec>,
    tcp: TcpStream,
    report: &mut ForwardReport,
    limits: &SessionLimits,
    link_gone: &CancellationToken,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let (mut tcp_read, mut tcp_write) = tcp.into_split();
    let (stop, sending) = {
        let outbound = tcp_to_broker(&mut tcp_read, &mut writer, &mut report.to_broker);
        let inbound = broker_to_tcp(&mut reader, &mut tcp_write, &mut report.from_broker);
        tokio::pin!(outbound, inbound);
        let (mut out_done, mut in_done) = (false, false);
        let stop = loop {
            tokio::select! {
                sent = &mut outbound, if !out_done => match sent {
                    Ok(()) => out_done = true,
                    Err(stop) => break stop,
                },
                received = &mut inbound, if !in_done => match received {
                    Ok(()) => in_done = true,
                    Err(stop) => break stop,
                },
                _ = link_gone.cancelled() => break Stop::LinkGone,
            }
            if out_done && in_done {
                break Stop::Done;
            }
        };
        // Our send side is finished once the outbound pump is done; nothing can follow.
        (stop, !out_done)
    };
    // The TCP peer learns first; what follows may wait on the broker.
    drop((tcp_read, tcp_write));
    report.end = match &stop {
        Stop::Done => ForwardEnd::Finished,
        Stop::Closed(reason, message) => ForwardEnd::Closed { reason: *reason, message: message.clone() },
        Stop::LinkGone => ForwardEnd::Broken("the link to the broker is gone".into()),
        Stop::PeerGone(why) | Stop::Tcp(why) | Stop::Protocol(why) => ForwardEnd::Broken(why.clone()),
    };
    if !sending {
        return;
    }
    match stop {
        Stop::Tcp(message) => {
            let message = format!("connection to {}: {message}", report.target);
            refuse(writer, CloseReason::ConnectFailed, &message, limits.send_timeout).await
        }
        Stop::Protocol(message) => {
            refuse(writer, CloseReason::ProtocolError, &message, limits.send_timeout).await
        }
        Stop::Closed(..) | Stop::PeerGone(_) => {
            if let Ok(Err(e)) = timeout(limits.send_timeout, writer.close()).await {
                tracing::debug!("finishing the stream: {e}");
            }
        }
        Stop::Done | Stop::LinkGone => {}
    }
}

/// TCP → broker: Data frames numbered from 0; the TCP end of stream finishes the QUIC stream.
async fn tcp_to_broker<W: AsyncWrite + Unpin>(
    tcp: &mut OwnedReadHalf,
    writer: &mut FramedWrite<W, FrameCodec>,
    sent: &mut u64,
) -> Result<(), Stop> {
    let mut buf = BytesMut::new();
    let mut seq = 0u64;
    loop {
        // Reuses the allocation once the previous frame has been written out and dropped.
        buf.reserve(CHUNK);
        let n = match tcp.read_buf(&mut (&mut buf).limit(CHUNK)).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return Err(Stop::Tcp(format!("reading failed: {e}"))),
        };
        *sent += n as u64;
        let frame = Frame::data(seq, buf.split().freeze());
        seq += 1;
        writer.send(frame).await.map_err(|e| Stop::PeerGone(format!("sending to the broker: {e}")))?;
    }
    writer.close().await.map_err(|e| Stop::PeerGone(format!("finishing the stream: {e}")))
}

/// Broker → TCP: Data frames in sequence; the broker's end of stream shuts down our TCP
/// write half while the other direction carries on.
async fn broker_to_tcp<R: AsyncRead + Unpin>(
    reader: &mut FramedRead<R, FrameCodec>,
    tcp: &mut OwnedWriteHalf,
    received: &mut u64,
) -> Result<(), Stop> {
    let tcp_failed = |e: std::io::Error| Stop::Tcp(format!("writing failed: {e}"));
    let mut next_seq = 0u64;
    loop {
        let frame = match reader.next().await {
            None => return tcp.shutdown().await.map_err(tcp_failed),
            Some(Err(ProtoError::Io(e))) => {
                return Err(Stop::PeerGone(format!("receiving from the broker: {e}")))
            }
            Some(Err(e)) => return Err(Stop::Protocol(e.to_string())),
            Some(Ok(frame)) => frame,
        };
        match frame.kind {
            FrameKind::Data => {
                if frame.seq != next_seq {
                    return Err(Stop::Protocol(format!(
                        "data frame {} arrived where {next_seq} was due",
                        frame.seq
                    )));
                }
                next_seq = next_seq.wrapping_add(1);
                tcp.write_all(&frame.payload).await.map_err(tcp_failed)?;
                *received += frame.payload.len() as u64;
            }
            FrameKind::Stderr => return Err(Stop::Protocol("a Stderr frame on a port stream".into())),
            FrameKind::Control => match frame.to_control() {
                Ok(Control::Close { reason, message }) => return Err(Stop::Closed(reason, message)),
                Ok(other) => tracing::debug!("ignoring {} on a port stream", control_name(&other)),
                Err(e) => return Err(Stop::Protocol(e.to_string())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_bracket_ipv6() {
        assert_eq!(display_target("::1", 22), "[::1]:22");
        assert_eq!(display_target("[::1]", 22), "[::1]:22");
        assert_eq!(display_target("db.internal", 5432), "db.internal:5432");
    }
}
