//! `start-session`: StartSession, then the QUIC session with the local terminal attached,
//! local ports forwarded, or stdin/stdout relayed for ssh.

use std::future::pending;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use airlock_proto::stream::FramedStream;
use airlock_proto::MAX_FRAME_LEN;
use serde_json::{json, Map, Value};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::api::Client;
use crate::error::Error;
use crate::forward::{self, Listener, Note};
use crate::link::Link;
use crate::params::{parameters_json, Parameters};
use crate::ports::SessionKind;
use crate::resume;
use crate::session::{self, Outcome};
use crate::stdio;
use crate::terminal::{self, note, RawMode};

/// The document that runs one command without a terminal.
pub const NON_INTERACTIVE_DOCUMENT: &str = "AWS-StartNonInteractiveCommand";
/// How long the best-effort TerminateSession after a failed start may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Stdin chunks waiting to be sent; small, so a stalled link stops reading stdin soon.
const STDIN_QUEUE: usize = 16;
/// Lines for the user waiting to be printed in a port session.
const NOTE_QUEUE: usize = 64;
/// How long the last lines of a port session may take to reach a slow stdout or stderr.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// The user's `start-session` arguments.
#[derive(Debug, Clone, Default)]
pub struct StartSessionRequest {
    /// The managed instance (`mi-…`).
    pub target: String,
    /// The session document; the broker's default shell document when absent.
    pub document_name: Option<String>,
    /// Document parameters, e.g. `command` for non-interactive commands.
    pub parameters: Option<Parameters>,
    /// Free text recorded with the session.
    pub reason: Option<String>,
    /// What the local side does; see [`crate::ports::prepare`].
    pub kind: SessionKind,
}

impl StartSessionRequest {
    /// The StartSession request body (SSM member names).
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("Target".to_owned(), json!(self.target));
        if let Some(d) = &self.document_name {
            body.insert("DocumentName".to_owned(), json!(d));
        }
        if let Some(p) = &self.parameters {
            body.insert("Parameters".to_owned(), parameters_json(p));
        }
        if let Some(r) = &self.reason {
            body.insert("Reason".to_owned(), json!(r));
        }
        Value::Object(body)
    }

    /// Whether this document runs a command rather than a shell.
    pub fn is_non_interactive(&self) -> bool {
        self.document_name.as_deref() == Some(NON_INTERACTIVE_DOCUMENT)
    }
}

/// What runs once the session is ready.
enum Job {
    Terminal(Mode),
    Forward(Vec<Listener>),
    Stdio { port: u16 },
}

/// How the local terminal is wired up for a session.
#[derive(Debug, Clone, Copy)]
struct Mode {
    /// Raw terminal, keystrokes forwarded as typed.
    interactive: bool,
    /// Stdin is a terminal: report its size and follow SIGWINCH.
    stdin_tty: bool,
    /// Print the start/exit banners on stderr.
    banner: bool,
}

/// Runs a whole session and returns the process exit status.
///
/// Stdin is read by a detached thread that may still be blocked in `read` when this returns;
/// the binary exits right after, which ends it. Once the session is ready, SIGINT, SIGTERM
/// and SIGHUP are handled by tokio for the rest of the process's life.
pub async fn start_session(
    client: &Client,
    ca_pem: Option<&[u8]>,
    request: &StartSessionRequest,
) -> Result<i32, Error> {
    // Bound before the session exists, so a port already in use costs no session.
    let listeners = match &request.kind {
        SessionKind::Forward(targets) => forward::bind(targets).await?,
        _ => Vec::new(),
    };
    let response = client.call_with_peer("StartSession", &request.body()).await?;
    let field = |name: &str| response.body.get(name).and_then(Value::as_str).map(str::to_owned);
    let (Some(session_id), Some(token)) = (field("SessionId"), field("TokenValue")) else {
        return Err(Error::Protocol("the StartSession response lacks SessionId or TokenValue".to_owned()));
    };
    let job = match &request.kind {
        SessionKind::Forward(_) => Job::Forward(listeners),
        SessionKind::Stdio { port } => Job::Stdio { port: *port },
        SessionKind::Terminal => {
            let stdin_tty = terminal::stdin_is_tty();
            let interactive = stdin_tty && !request.is_non_interactive();
            let mode = Mode { interactive, stdin_tty, banner: interactive || terminal::stderr_is_tty() };
            if mode.banner {
                note(&format!("\r\nStarting session with SessionId: {session_id}\r\n")).await;
            }
            Job::Terminal(mode)
        }
    };
    let peer = response.peer.map(|p| p.ip());
    match connect_and_run(client, ca_pem, &session_id, &token, peer, job).await {
        Ok(code) => Ok(code),
        Err(e @ Error::Rejected { .. }) => Err(e),
        Err(e) => {
            // The broker would otherwise keep the session waiting for a client that never comes.
            let body = json!({ "SessionId": session_id });
            let _ = tokio::time::timeout(CLEANUP_TIMEOUT, client.call("TerminateSession", &body)).await;
            Err(e)
        }
    }
}

async fn connect_and_run(
    client: &Client,
    ca_pem: Option<&[u8]>,
    session_id: &str,
    token: &str,
    peer: Option<IpAddr>,
    job: Job,
) -> Result<i32, Error> {
    let fetched;
    let ca = match ca_pem {
        Some(pem) => pem,
        None => {
            fetched = client.fetch_ca().await?;
            &fetched
        }
    };
    let link = Link::connect(client.endpoint(), ca, peer).await?;
    let result = match job {
        Job::Terminal(mode) => run((client, ca, peer), &link, session_id, token, mode).await,
        Job::Forward(listeners) => run_forward(&link, session_id, token, listeners).await,
        Job::Stdio { port } => run_stdio(&link, session_id, token, port).await,
    };
    link.close("client done").await;
    let (code, message) = result?;
    if let Some(message) = message {
        note(&format!("{message}\r\n")).await;
    }
    Ok(code)
}

/// Process-wide signals a session reacts to.
struct Signals {
    terminate: Signal,
    hangup: Signal,
    interrupt: Signal,
    winch: Option<Signal>,
}

impl Signals {
    fn install(winch: bool) -> Result<Self, Error> {
        let io = |source| Error::Io { what: "installing signal handlers", source };
        Ok(Signals {
            terminate: signal(SignalKind::terminate()).map_err(io)?,
            hangup: signal(SignalKind::hangup()).map_err(io)?,
            interrupt: signal(SignalKind::interrupt()).map_err(io)?,
            winch: if winch { Some(signal(SignalKind::window_change()).map_err(io)?) } else { None },
        })
    }

    /// Resolves at the first SIGTERM, SIGHUP or SIGINT.
    async fn stopped(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.hangup.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// Opens the session stream and waits for `Ready`.
async fn open_session(
    link: &Link,
    token: &str,
    session_id: &str,
    size: Option<(u16, u16)>,
) -> Result<FramedStream<quinn::RecvStream, quinn::SendStream>, Error> {
    let (send, recv) = link.open_stream().await?;
    let mut stream = FramedStream::new(recv, send, MAX_FRAME_LEN);
    session::handshake(&mut stream, session::client_hello(token, size, terminal::term_name()), session_id)
        .await?;
    Ok(stream)
}

/// A ready port-forwarding session, its banner and per-connection messages printed in order.
async fn run_forward(
    link: &Link,
    session_id: &str,
    token: &str,
    listeners: Vec<Listener>,
) -> Result<(i32, Option<String>), Error> {
    let stream = open_session(link, token, session_id, None).await?;
    let mut signals = Signals::install(false)?;
    let (notes, queue) = mpsc::channel(NOTE_QUEUE);
    let (done, finished) = oneshot::channel();
    // Printing in its own task: a stdout nobody reads must not hold up the session or Ctrl-C.
    let mut printer = tokio::spawn(print_notes(queue, finished));
    let result = forward::run(link.opener(), stream, session_id, listeners, notes, signals.stopped()).await;
    let _ = done.send(());
    if tokio::time::timeout(DRAIN_TIMEOUT, &mut printer).await.is_err() {
        printer.abort();
    }
    Ok(result)
}

/// Prints notes in order until `finished`, then whatever is still queued.
async fn print_notes(mut queue: mpsc::Receiver<Note>, mut finished: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            biased;
            Some(line) = queue.recv() => print_note(line).await,
            _ = &mut finished => break,
        }
    }
    while let Ok(line) = queue.try_recv() {
        print_note(line).await;
    }
}

async fn print_note(line: Note) {
    match line {
        Note::Out(text) => terminal::say(&format!("{text}\n")).await,
        Note::Err(text) => note(&format!("{text}\n")).await,
    }
}

/// A ready ssh session: stdin and stdout carry the connection, nothing else touches stdout.
async fn run_stdio(
    link: &Link,
    session_id: &str,
    token: &str,
    port: u16,
) -> Result<(i32, Option<String>), Error> {
    let stream = open_session(link, token, session_id, None).await?;
    // ssh sends SIGHUP to its ProxyCommand when it is done; that is a normal end.
    let mut signals = Signals::install(false)?;
    let input = terminal::stdin_stream(STDIN_QUEUE)?;
    let output = tokio::io::stdout();
    Ok(stdio::run(link.opener(), stream, session_id, port, input, output, signals.stopped()).await)
}

/// Hello, Ready, then pumps until the session ends or a signal stops us. Returns the exit
/// status and the message to print once the terminal is restored.
async fn run(
    (client, ca, peer): (&Client, &[u8], Option<IpAddr>),
    link: &Link,
    session_id: &str,
    token: &str,
    mode: Mode,
) -> Result<(i32, Option<String>), Error> {
    let size = if mode.stdin_tty { terminal::window_size() } else { None };
    let mut stream = open_session(link, token, session_id, size).await?;

    // Handlers first: a SIGTERM arriving after raw mode is on must find them in place.
    let mut signals = Signals::install(mode.stdin_tty)?;
    let raw = if mode.interactive { Some(RawMode::enter()?) } else { None };

    let (stdin_tx, stdin_rx) = mpsc::channel(STDIN_QUEUE);
    terminal::spawn_stdin_reader(stdin_tx)?;
    let (size_tx, size_rx) = watch::channel(size.unwrap_or((0, 0)));
    let feedback = Arc::new(watch::channel(session::Feedback::default()).0);
    let mut input = Some(session::Input::new(Some(stdin_rx), Some(size_rx), Some(feedback.subscribe())));
    // After a resume: the link the stream runs on, and where the input resumes.
    let mut resumed_link: Option<Link> = None;
    let mut resend_from: Option<u64> = None;
    let ended = 'session: loop {
        let (reader, writer) = stream.split();
        let stop = CancellationToken::new();
        let mut state = input.take().ok_or_else(|| Error::Protocol("input state lost".to_owned()))?;
        let input_task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut writer = writer;
                let pumped = async {
                    if let Some(from) = resend_from {
                        state.acknowledge(&mut writer).await?;
                        state.resend(&mut writer, from).await?;
                    }
                    state.pump(&mut writer, &stop).await
                };
                if let Err(e) = pumped.await {
                    tracing::debug!(error = %e, "input stopped");
                }
                // Keep the stream open (not finished) until the session ends or detaches.
                stop.cancelled().await;
                state
            }
        });
        let mut output = tokio::spawn({
            let feedback = feedback.clone();
            async move {
                let mut reader = reader;
                session::pump_output(
                    &mut reader,
                    &mut tokio::io::stdout(),
                    &mut tokio::io::stderr(),
                    &feedback,
                )
                .await
            }
        });
        let ended = loop {
            tokio::select! {
                joined = &mut output => break Ended::Outcome(joined.unwrap_or_else(|e| Outcome {
                    exit: None,
                    end: session::End::Failed(format!("output task failed: {e}")),
                })),
                _ = signals.terminate.recv() => break Ended::Signal(libc::SIGTERM),
                _ = signals.hangup.recv() => break Ended::Signal(libc::SIGHUP),
                _ = signals.interrupt.recv() => break Ended::Signal(libc::SIGINT),
                Some(()) = recv_opt(&mut signals.winch) => {
                    if let Some(size) = terminal::window_size() {
                        size_tx.send_replace(size);
                    }
                }
            }
        };
        output.abort();
        stop.cancel();
        let current = resumed_link.as_ref().unwrap_or(link);
        let lost = matches!(&ended, Ended::Outcome(o) if o.exit.is_none() && matches!(o.end, session::End::Failed(_)))
            && current.lost();
        if !lost {
            input_task.abort();
            break 'session ended;
        }
        input = input_task.await.ok();
        note("\r\nconnection lost \u{2014} resuming\u{2026}\r\n").await;
        let since = tokio::time::Instant::now();
        let output_next = feedback.borrow().output_next;
        let back = tokio::select! {
            back = resume::resume(client, ca, peer, session_id, output_next) => back,
            _ = signals.terminate.recv() => break 'session Ended::Signal(libc::SIGTERM),
            _ = signals.hangup.recv() => break 'session Ended::Signal(libc::SIGHUP),
        };
        match back {
            Ok(resume::Resumed { link: next, stream: s, input_next }) => {
                note(&format!("resumed after {} s\r\n", since.elapsed().as_secs())).await;
                if let Some(old) = resumed_link.replace(next) {
                    old.close("resumed elsewhere").await;
                }
                stream = s;
                resend_from = Some(input_next);
            }
            Err(Error::Rejected { reason, message, .. }) => {
                break 'session Ended::Outcome(Outcome {
                    exit: None,
                    end: session::End::Closed { reason, message },
                })
            }
            Err(e) => {
                break 'session Ended::Outcome(Outcome {
                    exit: None,
                    end: session::End::Failed(format!("the session could not be resumed: {e}")),
                })
            }
        }
    };
    if let Ended::Outcome(Outcome { end: session::End::Closed { .. }, .. }) = &ended {
        // The broker ended the session: nothing we sent is still needed, exit without a drain.
        resumed_link.as_ref().unwrap_or(link).settle();
    }
    if let Some(l) = resumed_link {
        l.close("client done").await;
    }
    drop(raw);
    Ok(match ended {
        Ended::Outcome(outcome) => match session::conclude(&outcome, session_id) {
            (code, None) if mode.banner => {
                (code, Some(format!("\r\nExiting session with sessionId: {session_id}.\r\n")))
            }
            other => other,
        },
        Ended::Signal(signo) => (128 + signo, None),
    })
}

enum Ended {
    Outcome(Outcome),
    Signal(i32),
}

async fn recv_opt(sig: &mut Option<Signal>) -> Option<()> {
    match sig {
        Some(s) => s.recv().await,
        None => pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_uses_ssm_member_names() {
        let req = StartSessionRequest {
            target: "mi-0123456789abcdef0".into(),
            document_name: Some(NON_INTERACTIVE_DOCUMENT.into()),
            parameters: Some(Parameters::from([("command".to_owned(), vec!["uname -a".to_owned()])])),
            reason: Some("debugging".into()),
            kind: SessionKind::Terminal,
        };
        assert_eq!(
            req.body(),
            json!({
                "Target": "mi-0123456789abcdef0",
                "DocumentName": "AWS-StartNonInteractiveCommand",
                "Parameters": {"command": ["uname -a"]},
                "Reason": "debugging"
            })
        );
        assert!(req.is_non_interactive());
        let bare = StartSessionRequest { target: "mi-1".into(), ..Default::default() };
        assert_eq!(bare.body(), json!({"Target": "mi-1"}));
        assert!(!bare.is_non_interactive());
    }
}
