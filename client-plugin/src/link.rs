//! The QUIC connection from the CLI to the broker (wire contract §2.3).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use airlock_proto::FrameCodec;
use futures_util::SinkExt;
use tokio_util::codec::FramedWrite;

use crate::config::Endpoint;
use crate::error::{chain, Error};

/// Deadline for resolving the broker's name.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for the QUIC and TLS handshakes.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for our CONNECTION_CLOSE to go out before exiting.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How often a settled close checks whether its CONNECTION_CLOSE has gone out.
const CLOSE_POLL: Duration = Duration::from_millis(1);

/// An open QUIC connection to the broker.
#[derive(Debug)]
pub struct Link {
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    settled: AtomicBool,
}

impl Link {
    /// Connects to the broker's QUIC listener on the endpoint's host and port, trusting only
    /// `ca_pem`. `prefer` is the address the API answered from, tried first when the name
    /// resolves to several addresses, so `localhost` reaches the same socket as HTTP did.
    pub async fn connect(target: &Endpoint, ca_pem: &[u8], prefer: Option<IpAddr>) -> Result<Self, Error> {
        let addr = resolve(target, prefer).await?;
        let where_ = format!("udp://{addr} ({})", target.host());
        let config = airlock_proto::quic::client_config(ca_pem, None)?;
        let endpoint = airlock_proto::quic::client_endpoint(addr, config)?;
        let connecting = endpoint
            .connect(addr, target.host())
            .map_err(|e| Error::Connect(format!("cannot connect to the broker at {where_}: {e}")))?;
        let connection = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(Error::Connect(format!(
                    "cannot connect to the broker at {where_}: {}",
                    chain(&e)
                )))
            }
            Err(_) => {
                return Err(Error::Connect(format!(
                "cannot connect to the broker at {where_}: no QUIC handshake within {} s (is UDP blocked?)",
                CONNECT_TIMEOUT.as_secs()
            )))
            }
        };
        Ok(Link { endpoint, connection, settled: AtomicBool::new(false) })
    }

    /// Whether the connection was lost (timed out or reset by the network or a restarted
    /// peer) rather than closed: then the session may be resumed.
    pub fn lost(&self) -> bool {
        matches!(
            self.connection.close_reason(),
            Some(quinn::ConnectionError::TimedOut | quinn::ConnectionError::Reset)
        )
    }

    /// Opens the session's bidirectional stream.
    pub async fn open_stream(&self) -> Result<(quinn::SendStream, quinn::RecvStream), Error> {
        self.opener().open().await
    }

    /// A handle that opens further streams on this connection from other tasks.
    pub fn opener(&self) -> Opener {
        Opener { connection: self.connection.clone() }
    }

    /// Records that the session ended on the broker's word (its `Close` arrived), so nothing
    /// we sent is still needed: [`Link::close`] may then exit as soon as its
    /// CONNECTION_CLOSE is on the wire instead of draining.
    pub fn settle(&self) {
        self.settled.store(true, Ordering::Relaxed);
    }

    /// Closes the connection so the broker learns at once that we left. A settled link returns
    /// once the CONNECTION_CLOSE datagram is handed to the socket (about a millisecond);
    /// otherwise we wait (at most [`CLOSE_GRACE`]) for the draining period, three probe
    /// timeouts (~70 ms on loopback), in which quinn repeats the close if the broker still
    /// sends, in case the first was lost.
    pub async fn close(self, reason: &str) {
        let before = self.connection.stats().udp_tx.datagrams;
        self.connection.close(quinn::VarInt::from_u32(0), reason.as_bytes());
        let after = self.connection.stats().udp_tx.datagrams;
        // Once closed, quinn sends nothing but CONNECTION_CLOSE, so the first datagram after
        // `before` is it -- unless one (an ACK) went out between the two reads, when we cannot
        // tell which it was and drain as for an unsettled link.
        let settled = self.settled.load(Ordering::Relaxed) && after == before;
        let sent = async {
            while self.connection.stats().udp_tx.datagrams == before {
                tokio::time::sleep(CLOSE_POLL).await;
            }
        };
        let idle = self.endpoint.wait_idle();
        let waited = async {
            if settled {
                // Quinn may also drain without ever sending the close (seen on loopback): then
                // the end of the drain ends the wait, as it always did.
                tokio::select! {
                    _ = sent => tracing::debug!("CONNECTION_CLOSE sent; not draining"),
                    _ = idle => tracing::debug!("drained before CONNECTION_CLOSE was seen sent"),
                }
            } else {
                idle.await
            }
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, waited).await;
    }
}

/// Opens bidirectional streams on a link; cheap to clone, one per forwarded connection.
#[derive(Debug, Clone)]
pub struct Opener {
    connection: quinn::Connection,
}

impl Opener {
    /// Opens a bidirectional stream, waiting (bounded) while the broker's stream limit is reached.
    pub async fn open(&self) -> Result<(quinn::SendStream, quinn::RecvStream), Error> {
        match tokio::time::timeout(CONNECT_TIMEOUT, self.connection.open_bi()).await {
            Ok(Ok(pair)) => Ok(pair),
            Ok(Err(e)) => Err(Error::Connect(format!("cannot open a stream: {}", chain(&e)))),
            Err(_) => Err(Error::Connect("the broker did not allow another stream in time".to_owned())),
        }
    }
}

/// Finishes a stream and waits (at most [`CLOSE_GRACE`]) until the peer has acknowledged all
/// of it, so closing the connection right afterwards cannot overtake the end of the stream.
pub async fn finish(writer: &mut FramedWrite<quinn::SendStream, FrameCodec>) {
    let done = async {
        if writer.close().await.is_ok() {
            let _ = writer.get_ref().stopped().await;
        }
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, done).await;
}

async fn resolve(target: &Endpoint, prefer: Option<IpAddr>) -> Result<SocketAddr, Error> {
    let fail = |detail: String| Error::Connect(format!("cannot resolve {}: {detail}", target.host()));
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((target.host(), target.port())))
            .await
        {
            Ok(Ok(iter)) => iter.collect(),
            Ok(Err(e)) => return Err(fail(e.to_string())),
            Err(_) => return Err(fail(format!("no answer within {} s", RESOLVE_TIMEOUT.as_secs()))),
        };
    pick_address(&addrs, prefer).ok_or_else(|| fail("no addresses".to_owned()))
}

/// The address to dial: the preferred one if the name resolves to it, else the first.
pub fn pick_address(addrs: &[SocketAddr], prefer: Option<IpAddr>) -> Option<SocketAddr> {
    prefer.and_then(|ip| addrs.iter().find(|a| a.ip() == ip)).or_else(|| addrs.first()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_endpoint;

    #[test]
    fn preferred_address_wins_when_resolved() {
        let v6: SocketAddr = "[::1]:443".parse().unwrap();
        let v4: SocketAddr = "127.0.0.1:443".parse().unwrap();
        assert_eq!(pick_address(&[v6, v4], Some(v4.ip())), Some(v4));
        assert_eq!(pick_address(&[v6, v4], None), Some(v6));
        assert_eq!(pick_address(&[v6], Some("10.0.0.1".parse().unwrap())), Some(v6));
        assert_eq!(pick_address(&[], None), None);
    }

    #[tokio::test]
    async fn resolves_literals_with_the_endpoint_port() {
        let e = parse_endpoint("http://127.0.0.1:4443").unwrap();
        assert_eq!(resolve(&e, None).await.unwrap(), "127.0.0.1:4443".parse().unwrap());
        let e = parse_endpoint("https://[::1]").unwrap();
        assert_eq!(resolve(&e, None).await.unwrap(), "[::1]:443".parse().unwrap());
    }
}

#[cfg(test)]
mod quic_tests {
    use super::*;
    use crate::config::parse_endpoint;
    use crate::session::{client_hello, handshake, pump_input, pump_output, End};
    use crate::testutil::fake_broker;
    use airlock_proto::control::{CloseReason, Control};
    use airlock_proto::frame::{Frame, FrameKind};
    use airlock_proto::stream::FramedStream;
    use airlock_proto::MAX_FRAME_LEN;
    use bytes::Bytes;
    use tokio::sync::mpsc;

    #[tokio::test]
    async fn session_over_real_quic() {
        let broker = fake_broker(&["localhost", "127.0.0.1"]);
        let server = broker.endpoint.clone();
        let served = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            let (send, recv) = conn.accept_bi().await.unwrap();
            let mut s = FramedStream::new(recv, send, MAX_FRAME_LEN);
            let Control::ClientHelloVersioned { request: hello, .. } =
                s.recv_control(Duration::from_secs(5)).await.unwrap()
            else {
                panic!("expected ClientHello")
            };
            assert_eq!(hello.token, "tok-1");
            s.send_control(&Control::Ready { session_id: "alice-1".into() }).await.unwrap();
            let input = s.recv().await.unwrap().unwrap();
            assert_eq!((input.kind, input.seq), (FrameKind::Data, 0));
            s.send(Frame::data(0, input.payload)).await.unwrap();
            s.send_control(&Control::Exit { code: 42 }).await.unwrap();
            s.send_control(&Control::Close { reason: CloseReason::Exited, message: String::new() })
                .await
                .unwrap();
            s.writer.get_mut().finish().unwrap();
            // Wait for the client to close the connection.
            conn.closed().await
        });

        let target = parse_endpoint(&format!("http://localhost:{}", broker.addr.port())).unwrap();
        let link = Link::connect(&target, broker.ca_pem.as_bytes(), Some(broker.addr.ip())).await.unwrap();
        let (send, recv) = link.open_stream().await.unwrap();
        let mut stream = FramedStream::new(recv, send, MAX_FRAME_LEN);
        handshake(&mut stream, client_hello("tok-1", Some((80, 24)), "xterm".into()), "alice-1")
            .await
            .unwrap();
        let (mut reader, mut writer) = stream.split();
        let (tx, rx) = mpsc::channel(1);
        tx.send(Bytes::from_static(b"echo me")).await.unwrap();
        drop(tx);
        pump_input(&mut writer, Some(rx), None, None).await.unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let outcome = pump_output(
            &mut reader,
            &mut out,
            &mut err,
            &tokio::sync::watch::channel(crate::session::Feedback::default()).0,
        )
        .await;
        assert_eq!(out, b"echo me");
        assert_eq!(outcome.exit, Some(42));
        assert_eq!(outcome.end, End::Closed { reason: CloseReason::Exited, message: String::new() });
        link.close("done").await;
        let closed = tokio::time::timeout(Duration::from_secs(5), served).await.unwrap().unwrap();
        assert!(matches!(closed, quinn::ConnectionError::ApplicationClosed(_)), "{closed:?}");
    }

    #[tokio::test]
    async fn settled_close_still_tells_the_broker() {
        let broker = fake_broker(&["127.0.0.1"]);
        let server = broker.endpoint.clone();
        let served = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            conn.closed().await
        });
        let target = parse_endpoint(&format!("https://127.0.0.1:{}", broker.addr.port())).unwrap();
        let link = Link::connect(&target, broker.ca_pem.as_bytes(), None).await.unwrap();
        link.settle();
        // Returns without draining, once the CONNECTION_CLOSE is out: the broker must get it.
        link.close("client done").await;
        let closed = tokio::time::timeout(Duration::from_secs(5), served).await.unwrap().unwrap();
        let quinn::ConnectionError::ApplicationClosed(close) = closed else { panic!("{closed:?}") };
        assert_eq!(&close.reason[..], b"client done");
    }

    #[tokio::test]
    async fn wrong_ca_is_refused() {
        let broker = fake_broker(&["127.0.0.1"]);
        let other = fake_broker(&["127.0.0.1"]);
        let server = broker.endpoint.clone();
        tokio::spawn(async move {
            if let Some(incoming) = server.accept().await {
                let _ = incoming.await;
            }
        });
        let target = parse_endpoint(&format!("https://127.0.0.1:{}", broker.addr.port())).unwrap();
        let err = Link::connect(&target, other.ca_pem.as_bytes(), None).await.unwrap_err();
        assert!(matches!(err, Error::Connect(_)), "{err}");
        assert!(err.to_string().contains("cannot connect to the broker"), "{err}");
    }
}
