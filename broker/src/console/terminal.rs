//! `GET /console/api/terminal`: a browser terminal over a WebSocket, plugged into the session
//! core as an in-process client ([`crate::session::link`]): on the edge's stream it speaks
//! exactly what the CLI speaks on its QUIC stream (`ClientHello`/`ClientResume`, numbered
//! `Data`, `Ack`, `Resize`, `Exit`, `Close`), so the session is authorized, recorded and
//! resumed by the same code as a CLI's.
//!
//! The upgrade needs the console cookie and the console's own `Origin` (a cross-site page
//! cannot open it); the first message carries the session's CSRF token and the StartSession
//! (or ResumeSession) token, so no secret is ever in a URL. Flow control: output frames the
//! page has not yet written to its terminal (its `ACK`) are counted, and past [`WINDOW`]
//! bytes the broker stops reading the session, so the agent's buffer, not the page, absorbs
//! a flood; acknowledgements are passed on to the agent as the CLI's `Ack`.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use airlock_proto::control::{ClientRequest, Control};
use airlock_proto::{FrameKind, FramedStream, MAX_FRAME_LEN};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};

use super::terminal_proto::{self as wire, Opening, Up};
use super::{forbidden, refuse, same_origin, same_secret, session_of, SessionKey};
use crate::app::App;
use crate::session::link::serve_edge;

/// Output bytes sent to the page and not yet written to its terminal, past which the broker
/// stops reading the session.
pub(crate) const WINDOW: usize = 1 << 20;
/// Input bytes kept until the agent acknowledges them (resent after the agent re-attaches).
const INPUT_KEPT: usize = 1 << 20;
/// The largest message the page may send (it chunks pastes below this).
const MAX_MESSAGE: usize = 64 * 1024;
/// How long the page has to send its opening message.
const OPENING_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the session core has to answer the hello.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one message may take to be accepted by the socket or the stream.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// `GET /console/api/terminal` (a WebSocket upgrade).
pub(super) async fn terminal(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    // Browsers always send Origin on a WebSocket handshake; a page of another site must not
    // open a terminal with the user's cookie.
    if headers.get(axum::http::header::ORIGIN).is_none() || !same_origin(&app, &headers, &uri) {
        tracing::info!(%peer, "console terminal: cross-origin upgrade refused");
        return refuse(forbidden("Cross-origin request refused."));
    }
    let key = match session_of(&app, &headers, &uri, false) {
        Ok((key, _)) => key,
        Err(e) => return refuse(e),
    };
    upgrade
        .protocols([wire::SUBPROTOCOL])
        .max_message_size(MAX_MESSAGE + 16)
        .max_frame_size(MAX_MESSAGE + 16)
        .on_upgrade(move |socket| run(app, peer, key, socket))
        .into_response()
}

/// Why the bridge ended: the edge is closed on purpose, or left for a resume.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The session is over or the page ended it: close the edge.
    Close,
    /// The socket dropped: the session waits for a resume.
    Lost,
}

async fn run(app: Arc<App>, peer: SocketAddr, key: SessionKey, socket: WebSocket) {
    let (mut sink, mut source) = socket.split();
    let opening = match first_message(&app, &key, &mut source).await {
        Ok(o) => o,
        Err(why) => {
            tracing::info!(%peer, why, "console terminal refused");
            let _ = send(&mut sink, wire::text(wire::CLOSED, why)).await;
            let _ = sink.send(Message::Close(Some(CloseFrame { code: 1008, reason: why.into() }))).await;
            return;
        }
    };
    let edge = serve_edge(app.clone(), peer);
    let Ok(duplex) = edge.open_stream().await else {
        let _ = send(&mut sink, wire::text(wire::CLOSED, "The session service is not available.")).await;
        edge.close();
        return;
    };
    let (r, w) = tokio::io::split(duplex);
    let mut bridge = Bridge::new(sink, source, FramedStream::new(r, w, MAX_FRAME_LEN));
    let end = bridge.run(edge.closed(), opening).await;
    // Told before the stream drops (with the bridge), so the core knows a lost page from a
    // closed one.
    match end {
        End::Close => edge.close(),
        End::Lost => edge.lost(),
    }
    drop(bridge);
}

/// Reads and checks the opening message: the CSRF token must be the cookie session's.
async fn first_message<S>(app: &App, key: &SessionKey, source: &mut S) -> Result<Opening, &'static str>
where
    S: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let msg = tokio::time::timeout(OPENING_TIMEOUT, source.next())
        .await
        .map_err(|_| "No opening message in time.")?
        .ok_or("The socket closed before the opening message.")?
        .map_err(|_| "The socket failed before the opening message.")?;
    let Message::Binary(bytes) = msg else { return Err("The opening message must be binary.") };
    let opening = wire::opening(&bytes).map_err(|_| "Malformed opening message.")?;
    let session = app.console.touch(key).ok_or("Sign in first.")?;
    if !same_secret(opening.csrf.as_bytes(), session.csrf.as_bytes()) {
        return Err("Missing or wrong CSRF token.");
    }
    Ok(opening)
}

async fn send<P: Sink<Message> + Unpin>(sink: &mut P, msg: Bytes) -> Result<(), ()> {
    match tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Binary(msg))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// One socket's pumps between the page (`sink`, `source`) and the session stream.
struct Bridge<P, S, R, W> {
    sink: P,
    source: S,
    stream: FramedStream<R, W>,
    /// The next input frame's number.
    input_seq: u64,
    /// Input frames the agent has not acknowledged, for a resend after it re-attaches.
    kept: VecDeque<(u64, Bytes)>,
    kept_bytes: usize,
    /// Output frames sent to the page and not yet on its screen: (seq, bytes).
    in_flight: VecDeque<(u64, usize)>,
    in_flight_bytes: usize,
}

impl<P, S, R, W> Bridge<P, S, R, W>
where
    P: Sink<Message> + Unpin,
    S: Stream<Item = Result<Message, axum::Error>> + Unpin,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    fn new(sink: P, source: S, stream: FramedStream<R, W>) -> Self {
        Bridge {
            sink,
            source,
            stream,
            input_seq: 0,
            kept: VecDeque::new(),
            kept_bytes: 0,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
        }
    }

    async fn send_page(&mut self, msg: Bytes) -> Result<(), End> {
        send(&mut self.sink, msg).await.map_err(|_| End::Lost)
    }

    async fn send_session(&mut self, msg: &Control) -> Result<(), End> {
        match tokio::time::timeout(SEND_TIMEOUT, self.stream.send_control(msg)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::Close),
        }
    }

    /// Hello (or resume), the session's answer, then the pumps.
    async fn run(&mut self, closed: impl Future<Output = ()>, o: Opening) -> End {
        let hello = match o.resume_from {
            None => Control::ClientHello(ClientRequest {
                token: o.token,
                client_version: format!("console/{}", env!("CARGO_PKG_VERSION")),
                cols: o.cols,
                rows: o.rows,
                term: "xterm-256color".to_owned(),
            }),
            Some(output_next) => Control::ClientResume { token: o.token, output_next },
        };
        if self.send_session(&hello).await.is_err() {
            let _ = self.send_page(wire::text(wire::CLOSED, "The session service did not answer.")).await;
            return End::Close;
        }
        let answer = match self.stream.recv_control(READY_TIMEOUT).await {
            Ok(Control::Ready { session_id }) => wire::text(wire::READY, &session_id),
            Ok(Control::Resumed { input_next }) => {
                self.input_seq = input_next;
                wire::text(wire::RESUMED, "")
            }
            Ok(Control::Close { reason, message }) => {
                let why = if message.is_empty() { format!("{reason:?}") } else { message };
                let _ = self.send_page(wire::text(wire::CLOSED, &why)).await;
                return End::Close;
            }
            Ok(_) | Err(_) => {
                let _ = self.send_page(wire::text(wire::CLOSED, "The session did not start.")).await;
                return End::Close;
            }
        };
        if let Err(end) = self.send_page(answer).await {
            return end;
        }
        // The page has everything below its resume point: the agent may drop it.
        if let Some(next) = o.resume_from.filter(|n| *n > 0) {
            if let Err(end) = self.send_session(&Control::Ack { next }).await {
                return end;
            }
        }
        match self.pump(closed).await {
            Ok(()) => End::Close,
            Err(end) => end,
        }
    }

    async fn pump(&mut self, closed: impl Future<Output = ()>) -> Result<(), End> {
        let mut closed = std::pin::pin!(closed);
        loop {
            let room = self.in_flight_bytes < WINDOW;
            tokio::select! {
                _ = &mut closed => {
                    let _ = self.send_page(wire::text(wire::CLOSED, "The broker closed the session.")).await;
                    return Err(End::Close);
                }
                // The page is always read: its ACKs are what opens the window again.
                msg = self.source.next() => match msg {
                    Some(Ok(Message::Binary(b))) => self.on_page(b).await?,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Err(End::Lost),
                    // Text is not part of the protocol; ping/pong are the socket's own.
                    Some(Ok(Message::Text(_))) => {
                        let _ = self.send_page(wire::text(wire::CLOSED, "Text messages are not accepted.")).await;
                        return Err(End::Close);
                    }
                    Some(Ok(_)) => {}
                },
                frame = self.stream.recv(), if room => match frame {
                    Ok(Some(f)) => {
                        if self.on_session(f).await? {
                            return Ok(());
                        }
                    }
                    Ok(None) => {
                        let _ = self.send_page(wire::text(wire::CLOSED, "The session ended.")).await;
                        return Ok(());
                    }
                    Err(e) => {
                        let _ = self.send_page(wire::text(wire::CLOSED, &format!("Session stream failed: {e}"))).await;
                        return Ok(());
                    }
                },
            }
        }
    }

    /// One message from the page.
    async fn on_page(&mut self, b: Bytes) -> Result<(), End> {
        let msg = match wire::up(b) {
            Ok(m) => m,
            Err(e) => {
                let _ = self.send_page(wire::text(wire::CLOSED, &e.to_string())).await;
                return Err(End::Close);
            }
        };
        match msg {
            Up::Input(bytes) if bytes.is_empty() => Ok(()),
            Up::Input(bytes) => {
                let seq = self.input_seq;
                self.input_seq += 1;
                self.kept_bytes += bytes.len();
                self.kept.push_back((seq, bytes.clone()));
                // Bounded: past the limit the oldest go (a resend that needs them fails below).
                while self.kept_bytes > INPUT_KEPT {
                    if let Some((_, b)) = self.kept.pop_front() {
                        self.kept_bytes -= b.len();
                    }
                }
                let frame = airlock_proto::Frame::data(seq, bytes);
                match tokio::time::timeout(SEND_TIMEOUT, self.stream.send(frame)).await {
                    Ok(Ok(())) => Ok(()),
                    _ => Err(End::Close),
                }
            }
            Up::Resize { cols, rows } => self.send_session(&Control::Resize { cols, rows }).await,
            Up::Ack(next) => {
                while self.in_flight.front().is_some_and(|(seq, _)| *seq < next) {
                    if let Some((_, len)) = self.in_flight.pop_front() {
                        self.in_flight_bytes -= len;
                    }
                }
                self.send_session(&Control::Ack { next }).await
            }
            Up::Ping(probe) => self.send_page(wire::pong(probe)).await,
            Up::Terminate => {
                let _ = self.send_page(wire::text(wire::CLOSED, "Terminated.")).await;
                Err(End::Close)
            }
        }
    }

    /// One frame from the session; true when the session is over.
    async fn on_session(&mut self, f: airlock_proto::Frame) -> Result<bool, End> {
        match f.kind {
            FrameKind::Data | FrameKind::Stderr => {
                let len = f.payload.len();
                self.in_flight.push_back((f.seq, len));
                self.in_flight_bytes += len;
                self.send_page(wire::output(f.seq, &f.payload)).await?;
                Ok(false)
            }
            FrameKind::Control => match f.to_control() {
                Ok(Control::Exit { code }) => {
                    self.send_page(wire::exit(code)).await?;
                    Ok(false)
                }
                Ok(Control::Close { reason, message }) => {
                    let why =
                        if message.is_empty() { format!("Session closed: {reason:?}.") } else { message };
                    let _ = self.send_page(wire::text(wire::CLOSED, &why)).await;
                    Ok(true)
                }
                Ok(Control::Ack { next }) => {
                    while self.kept.front().is_some_and(|(seq, _)| *seq < next) {
                        if let Some((_, b)) = self.kept.pop_front() {
                            self.kept_bytes -= b.len();
                        }
                    }
                    Ok(false)
                }
                Ok(Control::Resumed { input_next }) => {
                    // The agent came back: resend the input it lacks, in order.
                    if input_next < self.input_seq
                        && self.kept.front().is_none_or(|(seq, _)| *seq > input_next)
                    {
                        let _ = self
                            .send_page(wire::text(wire::CLOSED, "Input was lost while the host was away."))
                            .await;
                        return Err(End::Close);
                    }
                    let resend: Vec<(u64, Bytes)> =
                        self.kept.iter().filter(|(seq, _)| *seq >= input_next).cloned().collect();
                    for (seq, bytes) in resend {
                        let frame = airlock_proto::Frame::data(seq, bytes);
                        if !matches!(
                            tokio::time::timeout(SEND_TIMEOUT, self.stream.send(frame)).await,
                            Ok(Ok(()))
                        ) {
                            return Err(End::Close);
                        }
                    }
                    Ok(false)
                }
                Ok(_) => Ok(false),
                Err(e) => {
                    let _ = self
                        .send_page(wire::text(wire::CLOSED, &format!("Session protocol error: {e}")))
                        .await;
                    Ok(true)
                }
            },
        }
    }
}

#[cfg(test)]
#[path = "terminal_tests.rs"]
mod tests;
