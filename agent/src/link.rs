//! `airlock-agent run`: keep a QUIC link to the broker up forever (wire contract §2.1) and
//! serve the session streams the broker opens on it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use airlock_proto::endpoint::Endpoint;
use airlock_proto::{quic, Control, Frame, FrameKind, FramedStream, PeerVersion, MAX_FRAME_LEN};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

use crate::backoff::Backoff;
use crate::endpoint;
use crate::error::Error;
use crate::host;
use crate::renew::{self, Validity};
use crate::run_command::Commands;
use crate::session::{self, ForwardConfig, LiveSessions, SessionLimits, StreamReport};
use crate::state::{Registration, StateDir};

/// Timings of the link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// How often a heartbeat goes out on the control stream.
    pub heartbeat_interval: Duration,
    /// Silence from the broker after which the link is dropped and redialled.
    pub heartbeat_timeout: Duration,
    /// Deadline for resolving, the handshake, and opening the control stream.
    pub connect_timeout: Duration,
    /// First reconnect delay ceiling (it doubles per failure).
    pub backoff_base: Duration,
    /// Largest reconnect delay ceiling.
    pub backoff_cap: Duration,
    /// A link that stayed up this long resets the backoff.
    pub stable_after: Duration,
    /// On shutdown, how long sessions get to stop their processes.
    pub shutdown_grace: Duration,
    /// Limits applied to every session.
    pub session: SessionLimits,
    /// Port forwarding: allow-list and deadlines; cancelling its `link_gone` ends every
    /// forwarded connection.
    pub forward: ForwardConfig,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            heartbeat_interval: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(5),
            session: SessionLimits::default(),
            forward: ForwardConfig::default(),
        }
    }
}

/// QUIC application close code for an orderly agent shutdown.
const CLOSE_SHUTDOWN: u32 = 0;
/// QUIC application close code for a link the agent gave up on (e.g. heartbeats unanswered).
const CLOSE_LINK_LOST: u32 = 1;

/// An established link: the endpoint, the connection and its control stream.
struct Link {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    control: FramedStream<quinn::RecvStream, quinn::SendStream>,
}

/// How a link ended.
enum LinkEnd {
    /// Shutdown was asked for; the connection is closed.
    Shutdown,
    /// The link broke, or never came up.
    Lost(Failure),
}

/// What an operator should make of a failure: it decides how loudly it is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// Network trouble or a broker restart; retrying is all there is to do.
    Transient,
    /// The broker rejected this agent (TLS alert, or a non-zero application close).
    Refused,
    /// We rejected the broker: its certificate does not chain to ca.pem, or similar.
    Untrusted,
}

/// Kills the process groups of running commands when the agent's run loop ends.
struct KillOnDrop(Commands);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.kill_all();
    }
}

/// A failed or lost link.
#[derive(Debug)]
struct Failure {
    detail: String,
    cause: Cause,
}

impl Failure {
    fn transient(detail: impl Into<String>) -> Self {
        Failure { detail: detail.into(), cause: Cause::Transient }
    }

    fn log(&self) {
        let detail = &self.detail;
        match self.cause {
            Cause::Transient => tracing::warn!("broker link down: {detail}"),
            Cause::Refused => tracing::error!(
                "the broker refused this agent: {detail}. If the instance was deregistered or its \
                 certificate revoked, register again; retrying with backoff"
            ),
            Cause::Untrusted => tracing::error!(
                "the broker's certificate is not trusted: {detail}. Check that ca.pem in the data \
                 directory is the broker's CA; retrying with backoff"
            ),
        }
    }
}

/// Runs the agent until `shutdown` turns true: connect, serve, reconnect with backoff.
pub async fn run(
    data_dir: &Path,
    config: &LinkConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let dir = StateDir::new(data_dir);
    let registration = dir.load()?;
    let target = endpoint::parse(&registration.state.endpoint)?;
    let mut quic_config = tls_config(&registration)?;
    let validity = Validity::of_pem(&registration.cert_pem)?;
    tracing::info!(
        instance = %registration.state.instance_id,
        broker = %format!("{}:{}", target.host(), target.port()),
        cert_expires_in_s = validity.not_after_s.saturating_sub(renew::now_s()),
        "agent starting"
    );
    let mut renewal = Renewal { dir, registration, validity, next_try: None, renewed: false };
    // Run Command invocations outlive links; their process groups die with the agent.
    let (commands, mut command_out) = Commands::open(data_dir)?;
    let _kill_commands = KillOnDrop(commands.clone());

    let mut backoff = Backoff::new(config.backoff_base, config.backoff_cap);
    // Sessions outlive the link they came on just long enough to stop their processes.
    let mut sessions = JoinSet::new();
    // Shells and commands whose link dropped wait here for the broker to re-attach them.
    let live = LiveSessions::default();
    loop {
        let attempt = tokio::select! {
            attempt = connect(&target, &quic_config, config) => attempt,
            _ = stopped(&mut shutdown) => return stop_sessions(sessions, config).await,
        };
        match attempt {
            Ok(link) => {
                let up_since = Instant::now();
                tracing::info!(remote = %link.conn.remote_address(), "connected to the broker");
                let end = serve(
                    link,
                    config,
                    &mut shutdown,
                    (&mut sessions, &live),
                    &mut renewal,
                    (&commands, &mut command_out),
                )
                .await;
                if std::mem::take(&mut renewal.renewed) {
                    // The renewed certificate is for the next connect; this link keeps the one
                    // it authenticated with, which the broker accepts until its expiry.
                    match tls_config(&renewal.registration) {
                        Ok(c) => quic_config = c,
                        Err(e) => tracing::error!("cannot use the renewed certificate: {e}"),
                    }
                }
                match end {
                    LinkEnd::Shutdown => return stop_sessions(sessions, config).await,
                    LinkEnd::Lost(failure) => failure.log(),
                }
                if up_since.elapsed() >= config.stable_after {
                    backoff.reset();
                }
            }
            Err(failure) => failure.log(),
        }
        let delay = backoff.next_delay();
        tracing::info!(delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "reconnecting");
        let wake = tokio::time::sleep(delay);
        tokio::pin!(wake);
        loop {
            tokio::select! {
                _ = &mut wake => break,
                _ = stopped(&mut shutdown) => return stop_sessions(sessions, config).await,
                Some(done) = sessions.join_next(), if !sessions.is_empty() => log_session_task(done),
            }
        }
    }
}

/// The link's TLS configuration with the registration's key and certificate.
fn tls_config(registration: &Registration) -> Result<quinn::ClientConfig, Error> {
    let chain = quic::certs_from_pem(registration.cert_pem.as_bytes(), "agent.crt")?;
    let key = quic::key_from_pem(registration.key_pem.as_bytes(), "agent.key")?;
    Ok(quic::client_config(registration.ca_pem.as_bytes(), Some((chain, key)))?)
}

/// The agent's certificate and when to renew it.
struct Renewal {
    dir: StateDir,
    registration: Registration,
    validity: Validity,
    /// Set after a failed renewal: the next try, instead of two thirds into the lifetime.
    next_try: Option<Instant>,
    /// A renewed certificate was saved since the last connect.
    renewed: bool,
}

impl Renewal {
    /// When the next renewal is due (now, if it is overdue).
    fn due(&self) -> Instant {
        self.next_try.unwrap_or_else(|| Instant::now() + self.validity.renew_in(renew::now_s()))
    }

    fn retry_later(&mut self) {
        self.next_try = Some(Instant::now() + self.validity.retry_in(renew::now_s()));
    }

    /// Saves the renewed certificate for the pending key.
    fn finish(&mut self, pending: renew::Pending, cert_pem: String) -> Result<(), Error> {
        let registration = renew::finish(&self.dir, &self.registration, pending, cert_pem)?;
        self.validity = Validity::of_pem(&registration.cert_pem)?;
        self.registration = registration;
        self.next_try = None;
        self.renewed = true;
        if self.validity.renew_in(renew::now_s()).is_zero() {
            // A certificate due for renewal the moment it arrives (a lifetime shorter than
            // its clock-skew allowance) must not turn into a renewal loop.
            self.retry_later();
        }
        Ok(())
    }
}

/// Resolves once shutdown is asked for; never, if nobody can ask any more.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Resolves the broker and tries each address until one answers.
async fn connect(
    target: &Endpoint,
    quic_config: &quinn::ClientConfig,
    config: &LinkConfig,
) -> Result<Link, Failure> {
    let lookup = tokio::net::lookup_host((target.host(), target.port()));
    let addrs: Vec<SocketAddr> = timeout(config.connect_timeout, lookup)
        .await
        .map_err(|_| Failure::transient(format!("resolving {} timed out", target.host())))?
        .map_err(|e| Failure::transient(format!("resolving {}: {e}", target.host())))?
        .collect();
    let mut last = Failure::transient(format!("{} resolved to no address", target.host()));
    for addr in addrs {
        match connect_to(addr, target.host(), quic_config, config).await {
            Ok(link) => return Ok(link),
            Err(failure) => {
                tracing::debug!(%addr, "connect failed: {}", failure.detail);
                last = failure;
            }
        }
    }
    Err(last)
}

/// Handshake with one address, open the control stream and say hello.
async fn connect_to(
    addr: SocketAddr,
    server_name: &str,
    quic_config: &quinn::ClientConfig,
    config: &LinkConfig,
) -> Result<Link, Failure> {
    let endpoint = quic::client_endpoint(addr, quic_config.clone())
        .map_err(|e| Failure::transient(format!("{addr}: {e}")))?;
    let connecting =
        endpoint.connect(addr, server_name).map_err(|e| Failure::transient(format!("{addr}: {e}")))?;
    let conn = timeout(config.connect_timeout, connecting)
        .await
        .map_err(|_| Failure::transient(format!("{addr}: handshake timed out")))?
        .map_err(|e| classify(&e))?;
    let local_ip = match conn.local_ip() {
        Some(ip) => Some(ip),
        None => host::local_ip_toward(addr).await,
    };
    let hello = host::hello(local_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
    let opened = async {
        let (send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let mut control = FramedStream::new(recv, send, MAX_FRAME_LEN);
        control
            .send_control(&Control::AgentHelloVersioned { version: PeerVersion::current(), hello })
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(control)
    };
    let control = match timeout(config.connect_timeout, opened).await {
        Ok(Ok(control)) => control,
        Ok(Err(e)) => return Err(failure(&conn, format!("sending hello: {e}"))),
        Err(_) => return Err(Failure::transient(format!("{addr}: opening the control stream timed out"))),
    };
    Ok(Link { endpoint, conn, control })
}

/// Heartbeats, session streams and shutdown on one established link.
async fn serve(
    link: Link,
    config: &LinkConfig,
    shutdown: &mut watch::Receiver<bool>,
    (sessions, live): (&mut JoinSet<()>, &LiveSessions),
    renewal: &mut Renewal,
    (commands, command_out): (&Commands, &mut tokio::sync::mpsc::Receiver<Control>),
) -> LinkEnd {
    let Link { endpoint, conn, control } = link;
    let mut renew_due = renewal.due();
    let mut pending: Option<renew::Pending> = None;
    let (mut control_rx, mut control_tx) = control.split();
    let mut ticks =
        tokio::time::interval_at(Instant::now() + config.heartbeat_interval, config.heartbeat_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    let mut last_heard = Instant::now();
    // Streams of this link see it cancelled when serve returns, however it ends.
    let forward =
        ForwardConfig { link_gone: config.forward.link_gone.child_token(), ..config.forward.clone() };
    let _end_forwards = forward.link_gone.clone().drop_guard();
    // Results the broker has not acknowledged go first on every link.
    let mut backlog = commands.unacknowledged().await;

    let end = loop {
        let silence_deadline = last_heard + config.heartbeat_timeout;
        tokio::select! {
            _ = stopped(shutdown) => break LinkEnd::Shutdown,
            _ = tokio::time::sleep_until(silence_deadline) => break LinkEnd::Lost(Failure::transient(
                format!("no heartbeat answer for {:?}", config.heartbeat_timeout),
            )),
            _ = ticks.tick() => {
                seq += 1;
                let beat = Frame::control(&Control::Heartbeat { seq });
                // Bounded so a broker that stopped reading cannot wedge this loop.
                match timeout(config.heartbeat_interval, control_tx.send(beat)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break LinkEnd::Lost(failure(&conn, format!("sending heartbeat: {e}"))),
                    Err(_) => break LinkEnd::Lost(failure(&conn, "sending heartbeat timed out".into())),
                }
            }
            Some(msg) = async { match backlog.pop() { Some(m) => Some(m), None => command_out.recv().await } } => {
                match timeout(config.heartbeat_interval, control_tx.send(Frame::control(&msg))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break LinkEnd::Lost(failure(&conn, format!("sending a command report: {e}"))),
                    Err(_) => break LinkEnd::Lost(failure(&conn, "sending a command report timed out".into())),
                }
            }
            _ = tokio::time::sleep_until(renew_due), if pending.is_none() => match renew::start() {
                Ok((next, csr)) => {
                    let ask = Frame::control(&Control::RenewCertificate { csr });
                    match timeout(config.heartbeat_interval, control_tx.send(ask)).await {
                        Ok(Ok(())) => {
                            tracing::info!("renewing the agent certificate");
                            pending = Some(next);
                        }
                        Ok(Err(e)) => break LinkEnd::Lost(failure(&conn, format!("sending a renewal: {e}"))),
                        Err(_) => break LinkEnd::Lost(failure(&conn, "sending a renewal timed out".into())),
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot make a key for the certificate renewal: {e}");
                    renewal.retry_later();
                    renew_due = renewal.due();
                }
            },
            frame = control_rx.next() => match frame {
                Some(Ok(frame)) if frame.kind == FrameKind::Control => match frame.to_control() {
                    Ok(Control::Heartbeat { .. }) => last_heard = Instant::now(),
                    Ok(Control::CertificateRenewed { certificate }) => {
                        last_heard = Instant::now();
                        match pending.take() {
                            Some(next) => match renewal.finish(next, certificate) {
                                Ok(()) => tracing::info!(
                                    expires_in_s = renewal.validity.not_after_s.saturating_sub(renew::now_s()),
                                    "agent certificate renewed; used from the next connect"
                                ),
                                Err(e) => {
                                    tracing::warn!("the renewed certificate is unusable: {e}");
                                    renewal.retry_later();
                                }
                            },
                            None => tracing::debug!("ignoring a certificate nobody asked for"),
                        }
                        renew_due = renewal.due();
                    }
                    Ok(Control::RenewalRefused { message }) => {
                        last_heard = Instant::now();
                        tracing::warn!("the broker refused to renew the agent certificate: {message}");
                        pending = None;
                        renewal.retry_later();
                        renew_due = renewal.due();
                    }
                    Ok(Control::RunCommand(spec)) => commands.start(spec),
                    Ok(Control::CancelCommand { command_id }) => commands.cancel(&command_id),
                    Ok(Control::CommandResultAck { command_id }) => commands.acknowledged(&command_id),
                    Ok(Control::Close { reason, message }) => break LinkEnd::Lost(Failure {
                        detail: format!("broker closed the control stream: {reason:?}: {message}"),
                        cause: Cause::Refused,
                    }),
                    Ok(_) => tracing::debug!("ignoring an unexpected control message on the control stream"),
                    Err(e) => break LinkEnd::Lost(failure(&conn, format!("bad control frame: {e}"))),
                },
                Some(Ok(_)) => tracing::debug!("ignoring a data frame on the control stream"),
                Some(Err(e)) => break LinkEnd::Lost(failure(&conn, format!("control stream: {e}"))),
                None => break LinkEnd::Lost(failure(&conn, "broker finished the control stream".into())),
            },
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => {
                    let limits = config.session.clone();
                    let forward = forward.clone();
                    let live = live.clone();
                    sessions.spawn(async move {
                        match session::serve(recv, send, &limits, &forward, &live).await {
                            Ok(StreamReport::Session(report)) => tracing::debug!(id = %report.session_id, code = ?report.exit_code, "session done"),
                            // The forwarding code logs its own line per connection.
                            Ok(StreamReport::Forward(_)) => {}
                            Ok(StreamReport::Attached(id)) => tracing::debug!(%id, "re-attach handed over"),
                            Err(e) => tracing::warn!("session failed: {e}"),
                        }
                    });
                }
                Err(e) => break LinkEnd::Lost(classify(&e)),
            },
            Some(done) = sessions.join_next(), if !sessions.is_empty() => log_session_task(done),
        }
    };
    match &end {
        LinkEnd::Shutdown => {
            // End the control stream first and wait (briefly) for the broker to acknowledge
            // it: a stream's end is retransmitted until acknowledged, whereas the lone
            // CONNECTION_CLOSE below was seen not to reach the broker when the agent stopped
            // right after connecting, which left it shown online until the idle timeout.
            let send = control_tx.get_mut();
            if send.finish().is_ok() {
                let _ = timeout(Duration::from_secs(1), send.stopped()).await;
            }
            conn.close(CLOSE_SHUTDOWN.into(), b"agent shutting down");
            // Give the close frame a moment to leave; the broker's idle timeout covers the rest.
            let _ = timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        }
        LinkEnd::Lost(_) => {
            conn.close(CLOSE_LINK_LOST.into(), b"link lost");
            tokio::spawn(async move {
                let _ = timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
            });
        }
    }
    end
}

/// A failure described by the connection's close reason when there is one, which says more
/// than the stream error that revealed it.
fn failure(conn: &quinn::Connection, fallback: String) -> Failure {
    match conn.close_reason() {
        Some(reason) => classify(&reason),
        None => Failure::transient(fallback),
    }
}

/// QUIC carries TLS alerts as transport error codes 0x100 + alert.
fn tls_alert(code: quinn::TransportErrorCode) -> Option<u64> {
    let code = u64::from(code);
    (0x100..0x200).contains(&code).then(|| code - 0x100)
}

fn alert_name(alert: u64) -> &'static str {
    match alert {
        42 => "bad_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        48 => "unknown_ca",
        51 => "decrypt_error",
        116 => "certificate_required",
        120 => "no_application_protocol",
        _ => "TLS alert",
    }
}

/// A readable account of a connection error, and what it means for the operator.
fn classify(e: &quinn::ConnectionError) -> Failure {
    match e {
        quinn::ConnectionError::ConnectionClosed(close) => match tls_alert(close.error_code) {
            Some(alert) => Failure {
                detail: format!("TLS rejected by the broker ({}, alert {alert}): {close}", alert_name(alert)),
                cause: Cause::Refused,
            },
            None => Failure::transient(format!("connection aborted by the broker: {close}")),
        },
        quinn::ConnectionError::ApplicationClosed(close) => Failure {
            detail: format!("connection closed by the broker: {close}"),
            // Code 0 is an orderly close (a broker restart); anything else is a refusal.
            cause: if close.error_code == quinn::VarInt::from_u32(0) {
                Cause::Transient
            } else {
                Cause::Refused
            },
        },
        quinn::ConnectionError::TransportError(te) if tls_alert(te.code).is_some() => {
            Failure { detail: te.to_string(), cause: Cause::Untrusted }
        }
        other => Failure::transient(other.to_string()),
    }
}

fn log_session_task(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            tracing::error!("a session task panicked: {e}");
        }
    }
}

/// Waits (bounded) for sessions to stop their processes after the link closed.
async fn stop_sessions(mut sessions: JoinSet<()>, config: &LinkConfig) -> Result<(), Error> {
    tracing::info!(sessions = sessions.len(), "shutting down");
    let all = async {
        while let Some(done) = sessions.join_next().await {
            log_session_task(done);
        }
    };
    if timeout(config.shutdown_grace, all).await.is_err() {
        // Aborting drops each session's process handle, which SIGKILLs its process group.
        sessions.abort_all();
    }
    Ok(())
}
