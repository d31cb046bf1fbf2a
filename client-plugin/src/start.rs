//! `start-session`: StartSession, then the QUIC session with the local terminal attached.

use std::future::pending;
use std::net::IpAddr;
use std::time::Duration;

use airlock_proto::stream::FramedStream;
use airlock_proto::MAX_FRAME_LEN;
use serde_json::{json, Map, Value};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::api::Client;
use crate::error::Error;
use crate::link::Link;
use crate::params::{parameters_json, Parameters};
use crate::session::{self, Outcome};
use crate::terminal::{self, RawMode};

/// The document that runs one command without a terminal.
pub const NON_INTERACTIVE_DOCUMENT: &str = "AWS-StartNonInteractiveCommand";
/// How long the best-effort TerminateSession after a failed start may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Stdin chunks waiting to be sent; small, so a stalled link stops reading stdin soon.
const STDIN_QUEUE: usize = 16;

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

/// How the local side is wired up for a session.
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
    let response = client.call_with_peer("StartSession", &request.body()).await?;
    let field = |name: &str| response.body.get(name).and_then(Value::as_str).map(str::to_owned);
    let (Some(session_id), Some(token)) = (field("SessionId"), field("TokenValue")) else {
        return Err(Error::Protocol("the StartSession response lacks SessionId or TokenValue".to_owned()));
    };
    let stdin_tty = terminal::stdin_is_tty();
    let interactive = stdin_tty && !request.is_non_interactive();
    let mode = Mode { interactive, stdin_tty, banner: interactive || terminal::stderr_is_tty() };
    if mode.banner {
        note(&format!("\r\nStarting session with SessionId: {session_id}\r\n")).await;
    }
    let peer = response.peer.map(|p| p.ip());
    match connect_and_run(client, ca_pem, &session_id, &token, peer, mode).await {
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
    mode: Mode,
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
    let result = run(&link, session_id, token, mode).await;
    link.close("client done").await;
    let (code, message) = result?;
    if let Some(message) = message {
        note(&format!("{message}\r\n")).await;
    }
    Ok(code)
}

/// Writes a line for the user on stderr without blocking a runtime thread.
async fn note(text: &str) {
    use tokio::io::AsyncWriteExt;
    let mut err = tokio::io::stderr();
    // Nothing sensible to do if stderr is gone; the exit status still tells the story.
    let _ = err.write_all(text.as_bytes()).await;
    let _ = err.flush().await;
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
}

/// Hello, Ready, then pumps until the session ends or a signal stops us. Returns the exit
/// status and the message to print once the terminal is restored.
async fn run(link: &Link, session_id: &str, token: &str, mode: Mode) -> Result<(i32, Option<String>), Error> {
    let (send, recv) = link.open_stream().await?;
    let mut stream = FramedStream::new(recv, send, MAX_FRAME_LEN);
    let size = if mode.stdin_tty { terminal::window_size() } else { None };
    session::handshake(&mut stream, session::client_hello(token, size, terminal::term_name()), session_id)
        .await?;

    // Handlers first: a SIGTERM arriving after raw mode is on must find them in place.
    let mut signals = Signals::install(mode.stdin_tty)?;
    let raw = if mode.interactive { Some(RawMode::enter()?) } else { None };

    let (reader, writer) = stream.split();
    let (stdin_tx, stdin_rx) = mpsc::channel(STDIN_QUEUE);
    terminal::spawn_stdin_reader(stdin_tx)?;
    let (size_tx, size_rx) = watch::channel(size.unwrap_or((0, 0)));
    let input = tokio::spawn(async move {
        let mut writer = writer;
        if let Err(e) = session::pump_input(&mut writer, Some(stdin_rx), Some(size_rx)).await {
            tracing::debug!(error = %e, "input stopped");
        }
        // Keep the stream open (not finished) until the session ends and this is aborted.
        pending::<()>().await;
    });
    let mut output = tokio::spawn(async move {
        let mut reader = reader;
        session::pump_output(&mut reader, &mut tokio::io::stdout(), &mut tokio::io::stderr()).await
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
    input.abort();
    output.abort();
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
