//! `AWS-StartSSHSession`: one connection carried over stdin and stdout, for ssh's
//! `ProxyCommand`. Stdout belongs to ssh, so nothing but relayed bytes is written there.

use std::future::{pending, Future};

use airlock_proto::control::CloseReason;
use airlock_proto::stream::FramedStream;
use airlock_proto::MAX_FRAME_LEN;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::forward::{session_end, watch_session};
use crate::link::{self, Opener};
use crate::session::End;
use crate::tunnel::{self, Fault, CONNECT_ANSWER_TIMEOUT};

/// How the relay part ended.
enum Ended {
    /// The far side finished its stream: everything it sent is on stdout.
    Done,
    /// The connection failed or was closed by the far side.
    Fault(Fault),
    /// The broker ended the session.
    Session(End),
    /// A signal asked us to stop.
    Stopped,
}

/// Runs a ready SSH session: connects target 0 (the document's `portNumber`, shown as `port`
/// in messages), then relays `input` → stream and stream → `output` until the far side
/// finishes. Returns the exit status and a message for stderr. The session stream is
/// finished on the way out; the caller closes the connection.
pub async fn run<I, O, S>(
    opener: Opener,
    session: FramedStream<quinn::RecvStream, quinn::SendStream>,
    session_id: &str,
    port: u16,
    mut input: I,
    mut output: O,
    stop: S,
) -> (i32, Option<String>)
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
    S: Future<Output = ()>,
{
    let (session_reader, mut session_writer) = session.split();
    let mut watcher = tokio::spawn(watch_session(session_reader));
    tokio::pin!(stop);
    let failed =
        |text: String| (crate::EXIT_FAILURE, Some(format!("Connection to port {port} failed: {text}")));

    let opened = tokio::select! {
        opened = open(&opener) => opened,
        joined = &mut watcher => Err(Ended::Session(joined.unwrap_or_else(|e| End::Failed(e.to_string())))),
        () = &mut stop => Err(Ended::Stopped),
    };
    let result = match opened {
        Err(Ended::Fault(f)) => failed(f.to_string()),
        Err(ended) => conclude(ended, session_id, port),
        Ok(stream) => {
            let (mut reader, mut writer) = stream.split();
            let ended = {
                let up = async {
                    match tunnel::upstream(&mut input, &mut writer).await {
                        // Stdin is done; the far side decides when the connection ends.
                        Ok(()) => pending().await,
                        Err(fault) => fault,
                    }
                };
                tokio::select! {
                    r = tunnel::downstream(&mut reader, &mut output) => match r {
                        Ok(()) => Ended::Done,
                        Err(fault) => Ended::Fault(fault),
                    },
                    fault = up => Ended::Fault(fault),
                    joined = &mut watcher => Ended::Session(joined.unwrap_or_else(|e| End::Failed(e.to_string()))),
                    () = &mut stop => Ended::Stopped,
                }
            };
            if let Ended::Fault(fault) = &ended {
                tunnel::goodbye(&mut writer, fault).await;
            }
            conclude(ended, session_id, port)
        }
    };
    watcher.abort();
    link::finish(&mut session_writer).await;
    result
}

/// Opens the connection stream and asks for target 0.
async fn open(opener: &Opener) -> Result<FramedStream<quinn::RecvStream, quinn::SendStream>, Ended> {
    let (send, recv) = opener.open().await.map_err(|e| Ended::Fault(Fault::Remote(e.to_string())))?;
    let mut stream = FramedStream::new(recv, send, MAX_FRAME_LEN);
    match tunnel::connect(&mut stream, 0, CONNECT_ANSWER_TIMEOUT).await {
        Ok(()) => Ok(stream),
        Err(message) => Err(Ended::Fault(Fault::Remote(message))),
    }
}

fn conclude(ended: Ended, session_id: &str, port: u16) -> (i32, Option<String>) {
    match ended {
        Ended::Done | Ended::Stopped => (0, None),
        Ended::Fault(Fault::Closed { reason, message }) => {
            // TerminateSession may reach us on this stream before the session stream.
            let code = if reason == CloseReason::Terminated { 0 } else { crate::EXIT_FAILURE };
            (code, Some(format!("Connection to port {port} closed: {}", tunnel::describe(reason, &message))))
        }
        Ended::Fault(fault) => {
            (crate::EXIT_FAILURE, Some(format!("Connection to port {port} aborted: {fault}")))
        }
        Ended::Session(end) => session_end(&end, session_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_endpoint;
    use crate::link::Link;
    use crate::session::{client_hello, handshake};
    use crate::testutil::{echo_port_stream, fake_broker, pattern};
    use airlock_proto::control::Control;
    use std::time::Duration;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    const WAIT: Duration = Duration::from_secs(10);

    /// A fake broker whose connection streams echo (target 0 refused when `refuse`); returns
    /// whether the client finished the session stream.
    async fn serve(server: quinn::Endpoint, refuse: bool) -> bool {
        let conn = server.accept().await.unwrap().await.unwrap();
        let (send, recv) = conn.accept_bi().await.unwrap();
        let mut session = FramedStream::new(recv, send, MAX_FRAME_LEN);
        assert!(matches!(session.recv_control(WAIT).await.unwrap(), Control::ClientHelloVersioned { .. }));
        session.send_control(&Control::Ready { session_id: "bob-1".into() }).await.unwrap();
        let (s, r) = conn.accept_bi().await.unwrap();
        let refused: &[u16] = if refuse { &[0] } else { &[] };
        tokio::spawn(async move { echo_port_stream(s, r, refused).await });
        let finished = matches!(tokio::time::timeout(WAIT, session.recv()).await, Ok(Ok(None)));
        let _ = conn.closed().await;
        finished
    }

    async fn session(
        broker: &crate::testutil::FakeBroker,
    ) -> (Link, FramedStream<quinn::RecvStream, quinn::SendStream>) {
        let target = parse_endpoint(&format!("http://127.0.0.1:{}", broker.addr.port())).unwrap();
        let link = Link::connect(&target, broker.ca_pem.as_bytes(), None).await.unwrap();
        let (send, recv) = link.open_stream().await.unwrap();
        let mut stream = FramedStream::new(recv, send, MAX_FRAME_LEN);
        handshake(&mut stream, client_hello("tok", None, "xterm".into()), "bob-1").await.unwrap();
        (link, stream)
    }

    #[tokio::test]
    async fn binary_both_ways_then_exit_0() {
        let broker = fake_broker(&["127.0.0.1"]);
        let served = tokio::spawn(serve(broker.endpoint.clone(), false));
        let (link, stream) = session(&broker).await;
        let (input, mut stdin) = duplex(64 << 10);
        let (output, mut stdout) = duplex(64 << 10);
        let data = pattern(3 << 20, 5);
        let running = tokio::spawn({
            let opener = link.opener();
            async move { run(opener, stream, "bob-1", 22, input, output, pending::<()>()).await }
        });
        let feed = {
            let data = data.clone();
            tokio::spawn(async move {
                stdin.write_all(&data).await.unwrap();
                stdin.shutdown().await.unwrap();
                // Keep stdin open as ssh does: the far side's end decides, not ours.
                stdin
            })
        };
        let mut got = Vec::new();
        tokio::time::timeout(WAIT, stdout.read_to_end(&mut got)).await.unwrap().unwrap();
        assert!(got == data, "{} bytes back for {}", got.len(), data.len());
        assert_eq!(tokio::time::timeout(WAIT, running).await.unwrap().unwrap(), (0, None));
        drop(feed.await.unwrap());
        link.close("done").await;
        assert!(served.await.unwrap(), "the session stream was finished");
    }

    #[tokio::test]
    async fn refused_exits_255_with_the_message() {
        let broker = fake_broker(&["127.0.0.1"]);
        let served = tokio::spawn(serve(broker.endpoint.clone(), true));
        let (link, stream) = session(&broker).await;
        let (input, _stdin) = duplex(1024);
        let (output, mut stdout) = duplex(1024);
        let result = run(link.opener(), stream, "bob-1", 2222, input, output, pending::<()>()).await;
        assert_eq!(result, (255, Some("Connection to port 2222 failed: target 0 is not allowed".into())));
        link.close("done").await;
        assert!(served.await.unwrap());
        let mut nothing = Vec::new();
        stdout.read_to_end(&mut nothing).await.unwrap();
        assert!(nothing.is_empty(), "stdout belongs to ssh: nothing written");
    }

    #[test]
    fn conclusions() {
        assert_eq!(conclude(Ended::Done, "s", 22), (0, None));
        assert_eq!(conclude(Ended::Stopped, "s", 22), (0, None));
        let refused =
            Fault::Closed { reason: CloseReason::Refused, message: "port 22 is not allowed".into() };
        assert_eq!(
            conclude(Ended::Fault(refused), "s", 22),
            (255, Some("Connection to port 22 closed: port 22 is not allowed".into()))
        );
        let terminated = Fault::Closed { reason: CloseReason::Terminated, message: String::new() };
        assert_eq!(conclude(Ended::Fault(terminated), "s", 22).0, 0);
        let (code, msg) = conclude(Ended::Fault(Fault::Local("writing: broken pipe".into())), "s", 2222);
        assert_eq!(code, 255);
        assert_eq!(msg.unwrap(), "Connection to port 2222 aborted: local side: writing: broken pipe");
        let (code, msg) = conclude(
            Ended::Session(End::Closed { reason: CloseReason::Terminated, message: "by alice".into() }),
            "s-1",
            22,
        );
        assert_eq!((code, msg.unwrap().as_str()), (0, "\nSession s-1 ended: by alice"));
    }
}
