//! Port sessions at the edge. `AWS-StartSSHSession` carries one connection as a plain byte
//! stream; `LocalPortForwarding` carries smux v1 (the plugin is the smux client, this edge the
//! server), each smux stream one TCP connection: one further stream of the session core's
//! link with `Connect`, as the CLI opens one QUIC stream per connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use airlock_proto::ssm::smux::{Cmd, SmuxDecoder, SmuxFrame, MAX_FRAME_SIZE};
use airlock_proto::{Control, Frame, FrameKind, FramedStream, MAX_FRAME_LEN};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::core::EdgeHandle;
use super::state::Kind;

/// Connections one session carries at once; further smux streams are closed at once.
pub const MAX_STREAMS: usize = 256;
/// Chunks queued towards one connection before the mux waits for it.
const STREAM_QUEUE: usize = 64;
/// Chunks queued from all connections towards the plugin.
const EVENT_QUEUE: usize = 256;
/// How long the core and agent have to answer `Connect` (the agent dials for up to 10 s).
const CONNECT_DEADLINE: Duration = Duration::from_secs(15);
/// The stdio connection's id.
const STDIO: u32 = 0;

/// What the pump sends to the plugin for the port session.
#[derive(Debug)]
pub enum PortEvent {
    /// Bytes for an `Output` message (raw for stdio, smux frames for forwarding).
    Output(Bytes),
    /// The ssh session's one connection ended: so does the session.
    StdioEnded,
}

enum Inner {
    Data(u32, Bytes),
    Fin(u32),
}

/// The connections of one port session.
pub struct Ports {
    mux: bool,
    link: Arc<EdgeHandle>,
    events_tx: mpsc::Sender<Inner>,
    events_rx: mpsc::Receiver<Inner>,
    streams: HashMap<u32, mpsc::Sender<Bytes>>,
    decoder: SmuxDecoder,
    started: bool,
}

impl Ports {
    /// The port state of a session, if it is a port session.
    pub fn new(kind: &Kind, link: Arc<EdgeHandle>) -> Option<Ports> {
        let mux = match kind {
            Kind::Stdio { .. } => false,
            Kind::Forward { .. } => true,
            Kind::Shell | Kind::Command(_) | Kind::InteractiveCommand(_) => return None,
        };
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        Some(Ports {
            mux,
            link,
            events_tx,
            events_rx,
            streams: HashMap::new(),
            decoder: SmuxDecoder::default(),
            started: false,
        })
    }

    /// The handshake is done: an ssh session opens its one connection now.
    pub fn ready(&mut self) {
        if !self.mux && !self.started {
            self.started = true;
            self.open(STDIO);
        }
    }

    fn open(&mut self, id: u32) {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        self.streams.insert(id, tx);
        tokio::spawn(connection(self.link.clone(), id, rx, self.events_tx.clone()));
    }

    /// `Output` bytes from the plugin.
    pub async fn input(&mut self, bytes: Bytes) -> Result<(), String> {
        if !self.mux {
            if let Some(tx) = self.streams.get(&STDIO) {
                // A connection that ended takes no more input; the session ends with it.
                let _ = tx.send(bytes).await;
            }
            return Ok(());
        }
        self.decoder.extend(&bytes);
        while let Some(frame) = self.decoder.next_frame().map_err(|e| e.to_string())? {
            match frame.cmd {
                Cmd::Syn => {
                    if self.streams.contains_key(&frame.stream_id) {
                        return Err(format!("smux stream {} opened twice", frame.stream_id));
                    }
                    if self.streams.len() >= MAX_STREAMS {
                        tracing::warn!(max = MAX_STREAMS, "too many forwarded connections; refusing one");
                        let _ = self.events_tx.send(Inner::Fin(frame.stream_id)).await;
                        continue;
                    }
                    self.open(frame.stream_id);
                }
                Cmd::Psh => {
                    if let Some(tx) = self.streams.get(&frame.stream_id) {
                        let _ = tx.send(frame.data).await;
                    }
                }
                Cmd::Fin => {
                    // Dropping the sender half-closes the connection towards the target.
                    self.streams.remove(&frame.stream_id);
                }
                Cmd::Nop | Cmd::Upd => {}
            }
        }
        Ok(())
    }

    /// Flag `DisconnectToPort`: the local client of a basic-mode session went away.
    pub fn disconnect(&mut self) {
        if !self.mux {
            self.streams.remove(&STDIO);
        }
    }

    /// The next bytes for the plugin.
    pub async fn next(&mut self) -> Option<PortEvent> {
        let inner = self.events_rx.recv().await?;
        Some(match (self.mux, inner) {
            (false, Inner::Data(_, bytes)) => PortEvent::Output(bytes),
            (false, Inner::Fin(_)) => PortEvent::StdioEnded,
            (true, Inner::Data(id, bytes)) => {
                let mut out = BytesMut::with_capacity(bytes.len() + 16);
                let mut rest = bytes;
                while !rest.is_empty() {
                    let data = rest.split_to(rest.len().min(MAX_FRAME_SIZE));
                    // Bounded by MAX_FRAME_SIZE, so encoding cannot fail.
                    let _ = SmuxFrame { cmd: Cmd::Psh, stream_id: id, data }.encode_into(&mut out);
                }
                PortEvent::Output(out.freeze())
            }
            (true, Inner::Fin(id)) => {
                let mut out = BytesMut::new();
                let _ = SmuxFrame::control(Cmd::Fin, id).encode_into(&mut out);
                PortEvent::Output(out.freeze())
            }
        })
    }
}

/// One TCP connection: a stream of the core's link, `Connect` to the session's first target,
/// then bytes both ways; each direction ends on its own.
async fn connection(
    link: Arc<EdgeHandle>,
    id: u32,
    mut input: mpsc::Receiver<Bytes>,
    events: mpsc::Sender<Inner>,
) {
    let stream = match link.open_stream().await {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(stream = id, error = %e, "cannot open a forwarded connection");
            let _ = events.send(Inner::Fin(id)).await;
            return;
        }
    };
    let (r, w) = tokio::io::split(stream);
    let mut framed = FramedStream::new(r, w, MAX_FRAME_LEN);
    let connected = match framed.send_control(&Control::Connect { target: 0 }).await {
        Ok(()) => framed.recv_control(CONNECT_DEADLINE).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match connected {
        Ok(Control::Started) => {}
        other => {
            tracing::info!(stream = id, answer = ?other, "forwarded connection refused");
            let _ = events.send(Inner::Fin(id)).await;
            return;
        }
    }
    let (mut reader, mut writer) = framed.split();
    let up = async move {
        let mut seq = 0u64;
        while let Some(bytes) = input.recv().await {
            if writer.send(Frame::data(seq, bytes)).await.is_err() {
                return;
            }
            seq += 1;
        }
        // The plugin's FIN: half-close towards the target.
        let _ = writer.close().await;
    };
    let down = async {
        while let Some(Ok(frame)) = reader.next().await {
            match frame.kind {
                FrameKind::Data => {
                    let Ok(()) = events.send(Inner::Data(id, frame.payload)).await else { return };
                }
                FrameKind::Control if matches!(frame.to_control(), Ok(Control::Close { .. })) => break,
                _ => {}
            }
        }
        let _ = events.send(Inner::Fin(id)).await;
    };
    tokio::join!(up, down);
}
