//! Resuming a session after its connection was lost (wire contract §2.4): a fresh token
//! from ResumeSession, a new QUIC link, `ClientResume` with the output we have, and
//! `Resumed` with the input the agent has. Retried with jittered backoff for the resume
//! window, so a laptop waking up or a network coming back finds its shell.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use airlock_proto::control::Control;
use airlock_proto::stream::FramedStream;
use airlock_proto::MAX_FRAME_LEN;
use serde_json::{json, Value};

use crate::api::{ApiErrorKind, Client};
use crate::error::Error;
use crate::link::Link;
use crate::session::{READY_TIMEOUT, SEND_TIMEOUT};

/// How long we keep trying: the broker's resume window.
pub const RESUME_WINDOW: Duration = Duration::from_secs(600);
/// First and largest pause between attempts (full jitter in between).
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// A resumed session: its new link, stream, and the input frame to resend from.
pub struct Resumed {
    /// The new connection (keep it alive as long as the stream).
    pub link: Link,
    /// The session's new stream.
    pub stream: FramedStream<quinn::RecvStream, quinn::SendStream>,
    /// The number of the first input frame the agent has not received.
    pub input_next: u64,
}

/// Resumes `session_id`, retrying until it works, the broker says it cannot, or the window
/// passes.
pub async fn resume(
    client: &Client,
    ca: &[u8],
    peer: Option<IpAddr>,
    session_id: &str,
    output_next: u64,
) -> Result<Resumed, Error> {
    let started = Instant::now();
    let mut cap = BACKOFF_FIRST;
    loop {
        match attempt(client, ca, peer, session_id, output_next).await {
            Ok(resumed) => return Ok(resumed),
            Err(e @ Error::Rejected { .. }) => return Err(e),
            Err(Error::Api(e)) if e.kind == ApiErrorKind::Service => return Err(Error::Api(e)),
            Err(e) => {
                if started.elapsed() >= RESUME_WINDOW {
                    return Err(e);
                }
                tracing::debug!(error = %e, "resume attempt failed; retrying");
            }
        }
        let cap_ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        tokio::time::sleep(Duration::from_millis(fastrand::u64(50..=cap_ms.max(50)))).await;
        cap = (cap * 2).min(BACKOFF_CAP);
    }
}

async fn attempt(
    client: &Client,
    ca: &[u8],
    peer: Option<IpAddr>,
    session_id: &str,
    output_next: u64,
) -> Result<Resumed, Error> {
    let answer = client.call("ResumeSession", &json!({ "SessionId": session_id })).await?;
    let Some(token) = answer.get("TokenValue").and_then(Value::as_str).filter(|t| !t.is_empty()) else {
        return Err(Error::Protocol("the ResumeSession response lacks a TokenValue".to_owned()));
    };
    let link = Link::connect(client.endpoint(), ca, peer).await?;
    let (send, recv) = link.open_stream().await?;
    let mut stream = FramedStream::new(recv, send, MAX_FRAME_LEN);
    let hello = Control::ClientResume { token: token.to_owned(), output_next };
    match tokio::time::timeout(SEND_TIMEOUT, stream.send_control(&hello)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Error::Connect(format!("cannot send the resume request: {e}"))),
        Err(_) => {
            return Err(Error::Connect("the broker did not take the resume request in time".to_owned()))
        }
    }
    match stream.recv_control(READY_TIMEOUT).await {
        Ok(Control::Resumed { input_next }) => Ok(Resumed { link, stream, input_next }),
        Ok(Control::Close { reason, message }) => {
            Err(Error::Rejected { session_id: session_id.to_owned(), reason, message })
        }
        Ok(other) => Err(Error::Protocol(format!("expected Resumed, got {other:?}"))),
        Err(e) => Err(Error::Connect(format!("resuming: {e}"))),
    }
}
