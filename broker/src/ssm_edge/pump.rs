//! One WebSocket attached to its session: the plugin's AgentMessages in, Airlock frames to
//! the session core, and back.
//!
//! The edge plays the agent towards the plugin (proto's `DataChannel` on `Side::Agent`): it
//! sends the handshake, acknowledges each input message once, re-acknowledges duplicates,
//! drops bad digests (the plugin resends), holds out-of-order input, and resends its own
//! output until acknowledged. Towards the core it is a CLI: numbered `Data` input frames kept
//! until the agent's `Ack`, `Resize`, and it acknowledges output as soon as it is in the
//! channel's retransmit buffer (which survives the WebSocket).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use airlock_proto::ssm::message::PayloadType;
use airlock_proto::ssm::payload::{
    encode_exit_code, ChannelClosed, Flag, HandshakeComplete, HandshakeRequest, HandshakeResponse,
    RequestedClientAction, SessionTypeParameters, SizeData,
};
use airlock_proto::ssm::{ChannelEvent, DataChannel, MessageType};
use airlock_proto::{
    ClientRequest, CloseReason, Control, Frame, FrameCodec, FrameKind, FramedStream, MAX_FRAME_LEN,
};
use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{DuplexStream, ReadHalf, WriteHalf};
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use super::accept::{close, CLOSE_INTERNAL, CLOSE_NORMAL, CLOSE_REFUSED};
use super::core::{serve_edge, EdgeHandle};
use super::port::{PortEvent, Ports};
use super::state::{Kind, SessionState, INPUT_KEPT};
use super::{clock_us, Edge, OUTPUT_CHUNK};
use crate::registry::PendingSession;

/// The agent version the handshake reports: new enough that the plugin multiplexes port
/// forwarding and turns its smux keepalive off (§4.2).
pub const AGENT_VERSION: &str = "3.3.0.0";
/// How long the core has to answer `ClientHello` / `ClientResume`.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long the plugin has to answer the handshake (the agent's own limit).
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(15);
/// Pings keep NATs open and find a dead peer; a peer silent this many intervals is lost.
const PING_EVERY: Duration = Duration::from_secs(20);
const SILENT_PINGS: u32 = 3;
/// How long one write to the WebSocket may take before the peer counts as lost.
const SEND_DEADLINE: Duration = Duration::from_secs(30);
/// How long output may wait for the plugin's acknowledgement before `channel_closed`.
const DRAIN_DEADLINE: Duration = Duration::from_secs(2);
/// Output messages in flight to the plugin before the core's output waits.
const OUTPUT_WINDOW: usize = 192;

type CoreStream = FramedStream<ReadHalf<DuplexStream>, WriteHalf<DuplexStream>>;
type CoreRead = FramedRead<ReadHalf<DuplexStream>, FrameCodec>;
type CoreWrite = FramedWrite<WriteHalf<DuplexStream>, FrameCodec>;
type WsTx = SplitSink<WebSocket, Message>;
type WsRx = SplitStream<WebSocket>;

/// How one attachment ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The session is over; `channel_closed` was sent.
    Over,
    /// The WebSocket went away without the session ending: it may resume.
    Lost,
    /// The plugin closed the WebSocket on purpose.
    ClientClosed,
    /// A newer WebSocket of the same session took over.
    Replaced,
}

/// A fresh session: `ClientHello`, `Ready`, handshake, then the pump.
pub async fn start(
    edge: &Arc<Edge>,
    mut socket: WebSocket,
    pending: PendingSession,
    token: String,
    version: String,
    peer: SocketAddr,
) {
    let id = pending.session_id.clone();
    let (mut held, kick) = match edge.sessions.start(SessionState::new(&pending, version.clone())) {
        Ok(h) => h,
        Err(e) => return close(&mut socket, CLOSE_INTERNAL, &e.to_string()).await,
    };
    let link = Arc::new(serve_edge(edge.app.clone(), peer));
    let hello = Control::ClientHello(ClientRequest {
        token,
        client_version: format!("session-manager-plugin {version}"),
        cols: 0,
        rows: 0,
        term: "xterm-256color".to_owned(),
    });
    let core = match open(&link, hello).await {
        Ok((core, Control::Ready { .. })) => core,
        Ok((_, reply)) => {
            let message = match reply {
                Control::Close { message, .. } => message,
                other => format!("unexpected answer from the session core: {other:?}"),
            };
            tracing::warn!(session = %id, %message, "session did not start");
            let Some(st) = held.as_ref() else { return };
            closed_message(&mut socket, st, &message).await;
            close(&mut socket, CLOSE_REFUSED, &message).await;
            edge.sessions.remove(&id);
            link.close();
            return;
        }
        Err(message) => {
            close(&mut socket, CLOSE_INTERNAL, &message).await;
            edge.sessions.remove(&id);
            link.close();
            return;
        }
    };
    tracing::info!(session = %id, %peer, plugin = %version, "plugin attached");
    let Some(st) = held.as_mut() else { return };
    attach(edge, socket, st, link, core, kick).await;
}

/// A plugin back after `ResumeSession`: `ClientResume`, resend the input the agent lacks.
pub async fn resume(edge: &Arc<Edge>, mut socket: WebSocket, id: String, token: String, peer: SocketAddr) {
    let (mut held, kick) = match edge.sessions.resume(&id).await {
        Ok(h) => h,
        Err(e) => return close(&mut socket, CLOSE_REFUSED, &e.to_string()).await,
    };
    let Some(st) = held.as_mut() else { return };
    let link = Arc::new(serve_edge(edge.app.clone(), peer));
    let hello = Control::ClientResume { token, output_next: st.output_next };
    let (mut core, input_next) = match open(&link, hello).await {
        Ok((core, Control::Resumed { input_next })) => (core, input_next),
        Ok((_, reply)) => {
            let message = match reply {
                Control::Close { message, .. } => message,
                other => format!("unexpected answer from the session core: {other:?}"),
            };
            closed_message(&mut socket, st, &message).await;
            close(&mut socket, CLOSE_REFUSED, &message).await;
            edge.sessions.remove(&id);
            link.close();
            return;
        }
        Err(message) => {
            close(&mut socket, CLOSE_INTERNAL, &message).await;
            link.lost();
            return;
        }
    };
    tracing::info!(session = %id, %peer, input_next, "plugin resumed");
    // The agent has the input before `input_next`; the kept frames cover the rest.
    st.input_acknowledged(input_next);
    for f in st.kept.clone() {
        if core.send(f).await.is_err() {
            break;
        }
    }
    attach(edge, socket, st, link, core, kick).await;
}

/// Opens the session stream and sends the first message; returns the stream and the answer.
async fn open(link: &EdgeHandle, first: Control) -> Result<(CoreStream, Control), String> {
    let stream = link.open_stream().await.map_err(|e| format!("session core unavailable: {e}"))?;
    let (r, w) = tokio::io::split(stream);
    let mut core = FramedStream::new(r, w, MAX_FRAME_LEN);
    core.send_control(&first).await.map_err(|e| format!("session core unavailable: {e}"))?;
    let reply = core.recv_control(READY_DEADLINE).await.map_err(|e| format!("session core: {e}"))?;
    Ok((core, reply))
}

/// Runs the pump and settles the session's state by how it ended.
async fn attach(
    edge: &Arc<Edge>,
    socket: WebSocket,
    st: &mut SessionState,
    link: Arc<EdgeHandle>,
    core: CoreStream,
    kick: CancellationToken,
) {
    let id = st.session_id.clone();
    let (core_rx, core_tx) = core.split();
    let (ws_tx, ws_rx) = socket.split();
    let ports = Ports::new(&st.kind, link.clone());
    let mut pump = Pump { st, ws_tx, core_tx, ports, core_gone: false, unflushed: false };
    let end = pump.run(ws_rx, core_rx, &kick).await;
    tracing::info!(session = %id, ?end, "plugin detached");
    match end {
        End::Over => edge.sessions.remove(&id),
        End::ClientClosed => {
            link.close();
            edge.sessions.remove(&id);
        }
        End::Lost | End::Replaced => link.lost(),
    }
}

/// `channel_closed` with SSM's text (shown by the plugin as `SessionId: <id> : <Output>`).
async fn closed_message(socket: &mut WebSocket, st: &SessionState, output: &str) {
    let frame = channel_closed(st, output);
    let _ = tokio::time::timeout(SEND_DEADLINE, socket.send(Message::Binary(frame))).await;
}

fn channel_closed(st: &SessionState, output: &str) -> Bytes {
    let payload = ChannelClosed {
        message_id: uuid::Uuid::new_v4().to_string(),
        created_date: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        destination_id: st.target.clone(),
        session_id: st.session_id.clone(),
        message_type: "channel_closed".to_owned(),
        schema_version: 1,
        output: output.to_owned(),
    };
    let json = serde_json::to_vec(&payload).unwrap_or_default();
    DataChannel::unsequenced(MessageType::ChannelClosed, Bytes::from(json), clock_us())
}

struct Pump<'a> {
    st: &'a mut SessionState,
    ws_tx: WsTx,
    core_tx: CoreWrite,
    ports: Option<Ports>,
    /// The core stopped taking frames.
    core_gone: bool,
    /// Frames queued on the WebSocket and not flushed yet.
    unflushed: bool,
}

/// What the loop saw.
enum Step {
    Plugin(Option<Result<Message, axum::Error>>),
    Core(Option<Result<Frame, airlock_proto::ProtoError>>),
    Port(PortEvent),
    Resend,
    Ping,
    HandshakeLate,
    Kicked,
}

/// What one step decided: go on, the session is over (with `channel_closed`'s text), or the
/// attachment ends.
type Flow = Result<Option<String>, End>;

impl Pump<'_> {
    async fn run(&mut self, mut ws_rx: WsRx, mut core_rx: CoreRead, kick: &CancellationToken) -> End {
        if !self.st.handshake_done {
            if let Err(end) = self.send_handshake().await {
                return end;
            }
        } else if let Some(ports) = self.ports.as_mut() {
            ports.ready();
        }
        let handshake_by = Instant::now() + HANDSHAKE_DEADLINE;
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        let mut silent = 0u32;
        loop {
            let resend_at = self.resend_at();
            // Output waits while the plugin has not acknowledged enough (back-pressure).
            let room = self.st.handshake_done && self.st.channel.unacknowledged() < OUTPUT_WINDOW;
            if let Err(end) = self.flush().await {
                return end;
            }
            let step = tokio::select! {
                biased;
                _ = kick.cancelled() => Step::Kicked,
                m = ws_rx.next() => Step::Plugin(m),
                f = core_rx.next(), if room => Step::Core(f),
                Some(e) = next_port(&mut self.ports), if room => Step::Port(e),
                _ = tokio::time::sleep_until(resend_at.unwrap_or(handshake_by)), if resend_at.is_some() => Step::Resend,
                _ = ping.tick() => Step::Ping,
                _ = tokio::time::sleep_until(handshake_by), if !self.st.handshake_done => Step::HandshakeLate,
            };
            let flow: Flow = match step {
                Step::Kicked => return End::Replaced,
                Step::Plugin(m) => {
                    silent = 0;
                    match m {
                        None | Some(Err(_)) => return End::Lost,
                        Some(Ok(Message::Close(_))) => return End::ClientClosed,
                        Some(Ok(Message::Binary(frame))) => self.on_plugin(&frame).await,
                        Some(Ok(_)) => Ok(None),
                    }
                }
                Step::Core(f) => self.on_core(f).await,
                Step::Port(e) => self.on_port(e).await,
                Step::Resend => self.resend().await,
                Step::Ping => {
                    silent += 1;
                    if silent > SILENT_PINGS {
                        return End::Lost;
                    }
                    self.ws_tx_send(Message::Ping(Bytes::from_static(b"keepalive"))).await.map(|_| None)
                }
                Step::HandshakeLate => {
                    let _ =
                        self.core_send(close_frame("the client did not answer the session handshake")).await;
                    Ok(Some("the client did not answer the session handshake".to_owned()))
                }
            };
            match flow {
                Ok(None) => {}
                Ok(Some(text)) => {
                    self.finish(&mut ws_rx, &text).await;
                    return End::Over;
                }
                Err(end) => return end,
            }
        }
    }

    fn resend_at(&self) -> Option<Instant> {
        let at = self.st.channel.next_resend_at_us()?;
        Some(Instant::now() + Duration::from_micros(at.saturating_sub(clock_us())))
    }

    async fn resend(&mut self) -> Flow {
        match self.st.channel.poll_resend(clock_us()) {
            Ok(Some(frame)) => self.ws_send(frame).await.map(|_| None),
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::warn!(session = %self.st.session_id, error = %e, "plugin stopped acknowledging");
                Err(End::Lost)
            }
        }
    }

    /// Ends the session towards the plugin: the exit code (commands, as SSM's
    /// `NonInteractiveCommands` sends it), up to [`DRAIN_DEADLINE`] for the plugin to
    /// acknowledge what is in flight, `channel_closed` with `text`, and the close frame.
    async fn finish(&mut self, ws_rx: &mut WsRx, text: &str) {
        if let (Kind::Command(_), Some(code)) = (&self.st.kind, self.st.exit) {
            let _ = self.send_output(PayloadType::ExitCode, Bytes::from(encode_exit_code(code))).await;
        }
        let by = Instant::now() + DRAIN_DEADLINE;
        while self.st.channel.unacknowledged() > 0 {
            if self.flush().await.is_err() {
                return;
            }
            let resend_at = self.resend_at().unwrap_or(by).min(by);
            tokio::select! {
                m = ws_rx.next() => match m {
                    Some(Ok(Message::Binary(frame))) => {
                        let _ = self.on_plugin(&frame).await;
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                    Some(Ok(_)) => {}
                },
                _ = tokio::time::sleep_until(resend_at) => {
                    if Instant::now() >= by || self.resend().await.is_err() {
                        break;
                    }
                }
            }
        }
        let frame = channel_closed(self.st, text);
        let _ = self.ws_send(frame).await;
        let close = axum::extract::ws::CloseFrame { code: CLOSE_NORMAL, reason: "session ended".into() };
        let _ = tokio::time::timeout(SEND_DEADLINE, self.ws_tx.send(Message::Close(Some(close)))).await;
    }

    async fn send_handshake(&mut self) -> Result<(), End> {
        let (session_type, properties) = self.st.kind.session_type();
        let request = HandshakeRequest {
            agent_version: AGENT_VERSION.to_owned(),
            requested_client_actions: vec![RequestedClientAction::SessionType(SessionTypeParameters {
                session_type: session_type.to_owned(),
                properties,
            })],
        };
        let json = serde_json::to_vec(&request).unwrap_or_default();
        self.send_output(PayloadType::HandshakeRequest, Bytes::from(json)).await
    }

    /// Sends stream data to the plugin, split into [`OUTPUT_CHUNK`]s.
    async fn send_output(&mut self, payload_type: PayloadType, payload: Bytes) -> Result<(), End> {
        let mut rest = payload;
        loop {
            let chunk = rest.split_to(rest.len().min(OUTPUT_CHUNK));
            let frame = match self.st.channel.send(payload_type, chunk, clock_us()) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(session = %self.st.session_id, error = %e, "cannot queue output");
                    return Err(End::Lost);
                }
            };
            self.ws_send(frame).await?;
            if rest.is_empty() {
                return Ok(());
            }
        }
    }

    /// Queues a frame for the plugin; [`Self::flush`] sends what is queued before the loop
    /// waits again, so a burst of acknowledgements and output goes out in few writes.
    async fn ws_send(&mut self, frame: Bytes) -> Result<(), End> {
        match tokio::time::timeout(SEND_DEADLINE, self.ws_tx.feed(Message::Binary(frame))).await {
            Ok(Ok(())) => {
                self.unflushed = true;
                Ok(())
            }
            _ => Err(End::Lost),
        }
    }

    async fn flush(&mut self) -> Result<(), End> {
        if !self.unflushed {
            return Ok(());
        }
        self.unflushed = false;
        match tokio::time::timeout(SEND_DEADLINE, self.ws_tx.flush()).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::Lost),
        }
    }

    async fn ws_tx_send(&mut self, m: Message) -> Result<(), End> {
        match tokio::time::timeout(SEND_DEADLINE, self.ws_tx.send(m)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::Lost),
        }
    }

    /// Sends to the core. A core that stopped reading has ended the session (or is ending
    /// it): what it sent before is still read, and its end comes through the read side.
    async fn core_send(&mut self, frame: Frame) -> Result<(), End> {
        if self.core_gone {
            return Ok(());
        }
        match tokio::time::timeout(SEND_DEADLINE, self.core_tx.send(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(session = %self.st.session_id, error = %e, "the session core stopped reading");
                self.core_gone = true;
            }
            Err(_) => {
                tracing::warn!(session = %self.st.session_id, "the session core did not take input in time");
                self.core_gone = true;
            }
        }
        Ok(())
    }

    /// One binary frame from the plugin.
    async fn on_plugin(&mut self, frame: &[u8]) -> Flow {
        let room = if self.st.kept_bytes < INPUT_KEPT { usize::MAX } else { 0 };
        let receipt = self.st.channel.receive_with_room(frame, clock_us(), room);
        for ack in receipt.transmit {
            self.ws_send(ack).await?;
        }
        for event in receipt.events {
            match event {
                ChannelEvent::Data { payload_type, payload } => {
                    self.plugin_data(payload_type, payload).await?
                }
                ChannelEvent::Dropped(reason) => {
                    tracing::debug!(session = %self.st.session_id, ?reason, "plugin message dropped")
                }
                _ => {}
            }
        }
        Ok(None)
    }

    async fn plugin_data(&mut self, payload_type: PayloadType, payload: Bytes) -> Result<(), End> {
        match payload_type {
            PayloadType::Output => {
                if let Some(ports) = self.ports.as_mut() {
                    if let Err(e) = ports.input(payload).await {
                        tracing::info!(session = %self.st.session_id, error = %e, "port input refused");
                        self.core_send(close_frame("the client broke the port protocol")).await?;
                    }
                    return Ok(());
                }
                let f = Frame::data(self.st.input_next, payload);
                self.st.input_next += 1;
                self.st.kept_bytes += f.payload.len();
                self.st.kept.push_back(f.clone());
                self.core_send(f).await
            }
            PayloadType::Size => match serde_json::from_slice::<SizeData>(&payload) {
                Ok(s) if s.cols > 0 && s.rows > 0 => {
                    let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
                    let resize = Control::Resize { cols: clamp(s.cols), rows: clamp(s.rows) };
                    self.core_send(Frame::control(&resize)).await
                }
                _ => Ok(()),
            },
            PayloadType::HandshakeResponse => {
                if let Ok(r) = serde_json::from_slice::<HandshakeResponse>(&payload) {
                    self.st.client_version = r.client_version.chars().take(32).collect();
                }
                if !self.st.handshake_done {
                    self.st.handshake_done = true;
                    let done =
                        HandshakeComplete { handshake_time_to_complete: 0, customer_message: String::new() };
                    let json = serde_json::to_vec(&done).unwrap_or_default();
                    self.send_output(PayloadType::HandshakeComplete, Bytes::from(json)).await?;
                    if let Some(ports) = self.ports.as_mut() {
                        ports.ready();
                    }
                }
                Ok(())
            }
            PayloadType::Flag => match Flag::decode(&payload) {
                Ok(Flag::TerminateSession) => {
                    self.core_send(close_frame("the client ended the session")).await
                }
                Ok(Flag::DisconnectToPort) => {
                    if let Some(ports) = self.ports.as_mut() {
                        ports.disconnect();
                    }
                    Ok(())
                }
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// One frame from the session core.
    async fn on_core(&mut self, f: Option<Result<Frame, airlock_proto::ProtoError>>) -> Flow {
        let frame = match f {
            Some(Ok(f)) => f,
            None | Some(Err(_)) => return Ok(Some("the session ended".to_owned())),
        };
        match frame.kind {
            FrameKind::Data | FrameKind::Stderr => {
                self.st.output_next = frame.seq + 1;
                let kind =
                    if frame.kind == FrameKind::Data { PayloadType::Output } else { PayloadType::StdErr };
                self.send_output(kind, frame.payload).await?;
                let ack = Control::Ack { next: self.st.output_next };
                self.core_send(Frame::control(&ack)).await?;
                Ok(None)
            }
            FrameKind::Control => match frame.to_control() {
                Ok(Control::Exit { code }) => {
                    self.st.exit = Some(code);
                    Ok(None)
                }
                Ok(Control::Ack { next }) => {
                    self.st.input_acknowledged(next);
                    Ok(None)
                }
                Ok(Control::Resumed { input_next }) => {
                    self.st.input_acknowledged(input_next);
                    for f in self.st.kept.clone() {
                        self.core_send(f).await?;
                    }
                    Ok(None)
                }
                Ok(Control::Close { reason, message }) => Ok(Some(self.closing_text(reason, &message))),
                Ok(_) => Ok(None),
                Err(e) => {
                    tracing::warn!(session = %self.st.session_id, error = %e, "bad frame from the session core");
                    Ok(None)
                }
            },
        }
    }

    async fn on_port(&mut self, e: PortEvent) -> Flow {
        match e {
            PortEvent::Output(bytes) => self.send_output(PayloadType::Output, bytes).await.map(|_| None),
            PortEvent::StdioEnded => {
                // The one connection of an ssh session is the session.
                self.core_send(close_frame("the connection ended")).await.map(|_| None)
            }
        }
    }

    /// SSM's `Output` text for the end of a session.
    fn closing_text(&self, reason: CloseReason, message: &str) -> String {
        match (reason, self.st.exit) {
            (CloseReason::Exited, Some(0) | None) => String::new(),
            (CloseReason::Exited, Some(code)) => format!("the remote process exited with code {code}"),
            (_, _) if !message.is_empty() => message.to_owned(),
            (r, _) => format!("{r:?}"),
        }
    }
}

fn close_frame(message: &str) -> Frame {
    Frame::control(&Control::Close { reason: CloseReason::ClientLost, message: message.to_owned() })
}

async fn next_port(ports: &mut Option<Ports>) -> Option<PortEvent> {
    match ports {
        Some(p) => p.next().await,
        None => std::future::pending().await,
    }
}
