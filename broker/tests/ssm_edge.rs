//! The stock session-manager-plugin's data channel, end to end through a real broker and
//! agent: a test client written from the spec (proto's `ssm` module) plays the plugin over a
//! real TLS WebSocket to the `StreamUrl` that StartSession returns.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use airlock_proto::ssm::message::{AgentMessage, MessageType, PayloadType, TypePadding};
use airlock_proto::ssm::payload::{
    decode_exit_code, ChannelClosed, Flag, HandshakeRequest, RequestedClientAction,
};
use airlock_proto::ssm::smux::{Cmd, SmuxDecoder, SmuxFrame};
use airlock_proto::ssm::{ChannelConfig, ChannelEvent, DataChannel, DropReason, Side};
use bytes::Bytes;
use common::Broker;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(20);

/// Prints the broker's log when the test fails.
struct LogOnPanic<'a>(&'a Broker);

impl Drop for LogOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("broker log:\n{}", self.0.log.lock().unwrap());
        }
    }
}

/// StartSession through the API; returns (SessionId, TokenValue, StreamUrl).
fn start_session(broker: &Broker, body: Value) -> (String, String, String) {
    let (status, v) =
        broker.raw_call("StartSession", &body.to_string(), &broker.key_id, &broker.secret, SystemTime::now());
    assert_eq!(status, 200, "{v}");
    let s = |k: &str| v[k].as_str().unwrap().to_owned();
    (s("SessionId"), s("TokenValue"), s("StreamUrl"))
}

fn resume_session(broker: &Broker, id: &str) -> (String, String) {
    let body = json!({ "SessionId": id }).to_string();
    let (status, v) =
        broker.raw_call("ResumeSession", &body, &broker.key_id, &broker.secret, SystemTime::now());
    assert_eq!(status, 200, "{v}");
    (v["TokenValue"].as_str().unwrap().to_owned(), v["StreamUrl"].as_str().unwrap().to_owned())
}

/// Signs a GET of `url` for `ssmmessages` as plugins from 1.2.764 do: header form, or a
/// presigned query. Returns the headers to add and the URL to dial.
fn sign(broker: &Broker, url: &str, secret: &str, presign: bool) -> (Vec<(String, String)>, String) {
    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings};
    let identity = Credentials::new(&broker.key_id, secret, None, None, "test").into();
    let mut settings = SigningSettings::default();
    if presign {
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(Duration::from_secs(60));
    }
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("ssmmessages")
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let https = url.replacen("wss://", "https://", 1);
    let host = https.split("://").nth(1).unwrap().split('/').next().unwrap().to_owned();
    let headers = [("host", host.as_str())];
    let signable =
        SignableRequest::new("GET", &https, headers.iter().copied(), SignableBody::Bytes(b"")).unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut req = http::Request::builder().method("GET").uri(&https).body(()).unwrap();
    instructions.apply_to_request_http1x(&mut req);
    let out: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter(|(k, _)| *k != "host")
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    (out, req.uri().to_string().replacen("https://", "wss://", 1))
}

/// Dials a `wss://` StreamUrl with the broker's CA pinned (no ALPN, as Go's dialer).
async fn dial(broker: &Broker, url: &str, headers: &[(String, String)]) -> Ws {
    let ca = std::fs::read(broker.ca_file()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(airlock_proto::quic::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(airlock_proto::quic::pinned_roots(&ca).unwrap())
        .with_no_client_auth();
    let authority = url.split("://").nth(1).unwrap().split('/').next().unwrap().to_owned();
    let tcp = TcpStream::connect(&authority).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let host = authority.rsplit_once(':').unwrap().0.to_owned();
    let name = rustls_pki_types::ServerName::try_from(host).unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(name, tcp).await.unwrap();
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    let (ws, _) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    ws
}

fn open_frame(token: &str) -> Message {
    let open = json!({
        "MessageSchemaVersion": "1.0",
        "RequestId": uuid::Uuid::new_v4().to_string(),
        "TokenValue": token,
        "ClientId": "7d7a2a53-9a3d-4f8e-9c55-0d2a0b8a1c11",
        "ClientVersion": "1.2.764.0",
    });
    Message::text(open.to_string())
}

/// Reads until the server's close frame; returns its reason.
async fn close_reason(ws: &mut Ws) -> String {
    let got = tokio::time::timeout(WAIT, async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(Some(f))) => return f.reason.to_string(),
                Ok(Message::Close(None)) => return String::new(),
                Ok(_) => continue,
                Err(e) => return format!("error: {e}"),
            }
        }
        "ended without a close frame".to_owned()
    })
    .await;
    got.expect("no close frame in time")
}

/// The plugin's side: its own input numbering (so tests can misbehave on purpose) and
/// proto's `DataChannel` for output (acks, duplicates, ordering).
struct Plugin {
    ws: Ws,
    rx: DataChannel,
    next_in: i64,
    output: Vec<u8>,
    stderr: Vec<u8>,
    exit: Option<i32>,
    handshake: Option<HandshakeRequest>,
    complete: bool,
    closed: Option<ChannelClosed>,
    acked: Vec<i64>,
}

impl Plugin {
    async fn connect(broker: &Broker, url: &str, token: &str) -> Plugin {
        let mut ws = dial(broker, url, &[]).await;
        ws.send(open_frame(token)).await.unwrap();
        Plugin {
            ws,
            rx: DataChannel::new(ChannelConfig::new(Side::Client)),
            next_in: 0,
            output: Vec::new(),
            stderr: Vec::new(),
            exit: None,
            handshake: None,
            complete: false,
            closed: None,
            acked: Vec::new(),
        }
    }

    /// A new WebSocket for the same plugin (after ResumeSession): counters kept.
    async fn reconnect(&mut self, broker: &Broker, url: &str, token: &str) {
        self.ws = dial(broker, url, &[]).await;
        self.ws.send(open_frame(token)).await.unwrap();
    }

    fn input_frame(&mut self, payload_type: PayloadType, payload: &[u8]) -> AgentMessage {
        let m = AgentMessage::new(
            MessageType::InputStreamData,
            now_ms(),
            self.next_in,
            0,
            uuid::Uuid::new_v4(),
            payload_type,
            Bytes::copy_from_slice(payload),
        );
        self.next_in += 1;
        m
    }

    async fn send(&mut self, payload_type: PayloadType, payload: &[u8]) {
        let m = self.input_frame(payload_type, payload);
        self.raw(m.encode()).await;
    }

    async fn raw(&mut self, frame: Bytes) {
        self.ws.send(Message::binary(frame)).await.unwrap();
    }

    async fn type_text(&mut self, text: &str) {
        self.send(PayloadType::Output, text.as_bytes()).await;
    }

    /// Handles one message from the broker; false when the WebSocket ended.
    async fn step(&mut self) -> bool {
        let m = match self.ws.next().await {
            Some(Ok(m)) => m,
            _ => return false,
        };
        let Message::Binary(frame) = m else {
            return !matches!(m, Message::Close(_));
        };
        let decoded = AgentMessage::decode(&frame).unwrap();
        assert!(decoded.message_type != MessageType::AgentSessionState, "agent_session_state leaked");
        let receipt = self.rx.receive(&frame, now_us());
        for ack in receipt.transmit {
            self.raw(ack).await;
        }
        for event in receipt.events {
            match event {
                ChannelEvent::Data { payload_type, payload } => self.data(payload_type, payload).await,
                ChannelEvent::ChannelClosed(c) => self.closed = Some(c),
                ChannelEvent::Other(m) if m.message_type == MessageType::Acknowledge => {}
                // Our input is sent outside the channel: its acks come here.
                ChannelEvent::Dropped(DropReason::UnmatchedAcknowledge { sequence_number }) => {
                    self.acked.push(sequence_number)
                }
                _ => {}
            }
        }
        true
    }

    async fn data(&mut self, payload_type: PayloadType, payload: Bytes) {
        match payload_type {
            PayloadType::HandshakeRequest => {
                let req: HandshakeRequest = serde_json::from_slice(&payload).unwrap();
                self.handshake = Some(req);
                let resp = json!({
                    "ClientVersion": "1.2.764.0",
                    "ProcessedClientActions": [{"ActionType": "SessionType", "ActionStatus": 1, "ActionResult": null, "Error": ""}],
                    "Errors": null,
                });
                self.send(PayloadType::HandshakeResponse, resp.to_string().as_bytes()).await;
            }
            PayloadType::HandshakeComplete => self.complete = true,
            PayloadType::Output => self.output.extend_from_slice(&payload),
            PayloadType::StdErr => self.stderr.extend_from_slice(&payload),
            PayloadType::ExitCode => self.exit = Some(decode_exit_code(&payload).unwrap()),
            _ => {}
        }
    }

    /// Handles whatever comes for `d`.
    async fn pump_for(&mut self, d: Duration) {
        let _ = tokio::time::timeout(d, async { while self.step().await {} }).await;
    }

    /// Steps until `done` holds.
    async fn until(&mut self, what: &str, mut done: impl FnMut(&Plugin) -> bool) {
        let r = tokio::time::timeout(WAIT, async {
            while !done(self) {
                if !self.step().await {
                    break;
                }
            }
        })
        .await;
        assert!(
            r.is_ok() && done(self),
            "{what}: output so far {:?}, closed {:?}",
            String::from_utf8_lossy(&self.output),
            self.closed
        );
    }

    async fn until_output(&mut self, needle: &str) {
        let n = needle.to_owned();
        self.until(&format!("waiting for {needle:?}"), move |p| contains(&p.output, &n)).await;
    }

    /// Handshake and the first terminal size, as the plugin does.
    async fn handshake(&mut self) {
        self.until("handshake", |p| p.complete).await;
        self.send(PayloadType::Size, br#"{"cols":100,"rows":30}"#).await;
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    String::from_utf8_lossy(hay).contains(needle)
}

fn count(hay: &[u8], needle: &str) -> usize {
    String::from_utf8_lossy(hay).matches(needle).count()
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_micros() as u64
}

fn now_ms() -> u64 {
    now_us() / 1000
}

fn session_type(p: &Plugin) -> (String, Value) {
    match &p.handshake.as_ref().unwrap().requested_client_actions[0] {
        RequestedClientAction::SessionType(t) => (t.session_type.clone(), t.properties.clone()),
        other => panic!("unexpected action {other:?}"),
    }
}

#[test]
fn shell_and_command_sessions_with_the_channels_edge_cases() {
    let broker = Broker::start();
    let _log = LogOnPanic(&broker);
    let agent = broker.agent("a");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (id, token, url) = start_session(&broker, json!({ "Target": agent.instance_id }));
    assert!(
        url.starts_with("wss://") && url.ends_with(&format!("/v1/data-channel/{id}?role=publish_subscribe"))
    );
    rt.block_on(async {
        let mut p = Plugin::connect(&broker, &url, &token).await;
        p.handshake().await;
        assert_eq!(session_type(&p).0, "Standard_Stream");
        p.type_text("echo hi-$((6*7))\r").await;
        p.until_output("hi-42").await;

        // A duplicate is re-acknowledged and delivered once.
        let dup = p.input_frame(PayloadType::Output, b"echo dup-$((1+1))\r");
        p.raw(dup.encode()).await;
        p.raw(dup.encode()).await;
        p.type_text("echo marker-$((2*5))\r").await;
        p.until_output("marker-10").await;
        assert_eq!(count(&p.output, "dup-2"), 1, "{}", String::from_utf8_lossy(&p.output));
        let dup_acks = p.acked.iter().filter(|s| **s == dup.sequence_number).count();
        assert_eq!(dup_acks, 2, "a duplicate must be acknowledged again: {:?}", p.acked);

        // A bad digest is dropped unacknowledged; the good resend goes through.
        let good = p.input_frame(PayloadType::Output, b"echo digest-$((3*3))\r");
        let mut bad = good.encode().to_vec();
        bad[80] ^= 0xff;
        p.raw(Bytes::from(bad)).await;
        p.pump_for(Duration::from_millis(400)).await;
        assert!(!p.acked.contains(&good.sequence_number), "a bad digest was acknowledged");
        p.raw(good.encode()).await;
        p.until_output("digest-9").await;

        // Out of order: the later half first; delivered in order.
        let first = p.input_frame(PayloadType::Output, b"echo oo-");
        let second = p.input_frame(PayloadType::Output, b"$((2+3))x\r");
        p.raw(second.encode()).await;
        p.raw(first.encode()).await;
        p.until_output("oo-5x").await;

        // A MessageType padded with NULs instead of spaces is read the same.
        let nul = p.input_frame(PayloadType::Output, b"echo nul-$((6+6))\r");
        let typed = std::time::Instant::now();
        p.raw(nul.encode_with_padding(TypePadding::Nuls)).await;
        p.until_output("nul-12").await;
        eprintln!("a typed command's output through the edge after {} us", typed.elapsed().as_micros());

        // The edge resends output the plugin does not acknowledge.
        p.type_text("echo resend-$((4*4))\r").await;
        let withheld = tokio::time::timeout(WAIT, async {
            loop {
                let Some(Ok(Message::Binary(f))) = p.ws.next().await else { panic!("ws ended") };
                let m = AgentMessage::decode(&f).unwrap();
                if m.message_type == MessageType::OutputStreamData {
                    break (m, f);
                }
                // Acks of our input go through.
                let _ = p.rx.receive(&f, now_us());
            }
        })
        .await
        .unwrap();
        let again = tokio::time::timeout(WAIT, async {
            loop {
                let Some(Ok(Message::Binary(f))) = p.ws.next().await else { panic!("ws ended") };
                let m = AgentMessage::decode(&f).unwrap();
                if m.sequence_number == withheld.0.sequence_number
                    && m.message_type == MessageType::OutputStreamData
                {
                    break m;
                }
                if m.message_type != MessageType::OutputStreamData {
                    let _ = p.rx.receive(&f, now_us());
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(again.message_id, withheld.0.message_id, "a resend keeps its MessageId");
        let receipt = p.rx.receive(&withheld.1, now_us());
        for ack in receipt.transmit {
            p.raw(ack).await;
        }
        for e in receipt.events {
            if let ChannelEvent::Data { payload_type, payload } = e {
                p.data(payload_type, payload).await;
            }
        }
        p.until_output("resend-16").await;

        p.type_text("exit 3\r").await;
        p.until("channel_closed", |p| p.closed.is_some()).await;
        let closed = p.closed.clone().unwrap();
        assert_eq!(closed.session_id, id);
        assert_eq!(closed.destination_id, agent.instance_id);
        assert!(closed.output.contains("code 3"), "{closed:?}");
    });

    // A command: stdout, stderr apart, the exit code as SSM sends it.
    let (_id, token, url) = start_session(
        &broker,
        json!({
            "Target": agent.instance_id,
            "DocumentName": "AWS-StartNonInteractiveCommand",
            "Parameters": {"command": ["echo out-$((20+1)); echo err-$((30+2)) >&2; exit 4"]},
        }),
    );
    rt.block_on(async {
        let mut p = Plugin::connect(&broker, &url, &token).await;
        p.until("handshake", |p| p.complete).await;
        assert_eq!(session_type(&p).0, "NonInteractiveCommands");
        p.until("channel_closed", |p| p.closed.is_some()).await;
        assert!(contains(&p.output, "out-21"), "{:?}", String::from_utf8_lossy(&p.output));
        assert!(contains(&p.stderr, "err-32"), "{:?}", String::from_utf8_lossy(&p.stderr));
        assert_eq!(p.exit, Some(4));
    });
}

#[test]
fn refusals_carry_a_clear_close_reason_and_signed_upgrades_are_verified() {
    let broker = Broker::start();
    let _log = LogOnPanic(&broker);
    let agent = broker.agent("r");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let shell = json!({ "Target": agent.instance_id });
    let (_id_a, token_a, url_a) = start_session(&broker, shell.clone());
    let (_id_b, token_b, url_b) = start_session(&broker, shell.clone());
    rt.block_on(async {
        // An upgrade that never sends OpenDataChannel is closed after a deadline (read last).
        let mut silent = dial(&broker, &url_a, &[]).await;

        // A made-up token.
        let mut ws = dial(&broker, &url_a, &[]).await;
        ws.send(open_frame("not-a-token")).await.unwrap();
        let reason = close_reason(&mut ws).await;
        assert!(reason.contains("not valid"), "{reason}");

        // B's token on A's URL: refused, and B's token is not spent by it.
        let mut ws = dial(&broker, &url_a, &[]).await;
        ws.send(open_frame(&token_b)).await.unwrap();
        let reason = close_reason(&mut ws).await;
        assert!(reason.contains("another session"), "{reason}");

        // A foreign Origin, before any token.
        let origin = [("origin".to_owned(), "https://evil.example".to_owned())];
        let mut ws = dial(&broker, &url_b, &origin).await;
        let reason = close_reason(&mut ws).await;
        assert!(reason.contains("foreign Origin"), "{reason}");

        // A bad signature (wrong secret), header form and presigned.
        for presign in [false, true] {
            let (headers, url) = sign(&broker, &url_b, "wrong-secret", presign);
            let mut ws = dial(&broker, &url, &headers).await;
            let reason = close_reason(&mut ws).await;
            assert!(reason.contains("signature refused"), "presign {presign}: {reason}");
        }

        // A good signature (header form) then the token: the session runs.
        let (headers, url) = sign(&broker, &url_a, &broker.secret, false);
        let mut ws = dial(&broker, &url, &headers).await;
        ws.send(open_frame(&token_a)).await.unwrap();
        let mut p = Plugin {
            ws,
            rx: DataChannel::new(ChannelConfig::new(Side::Client)),
            next_in: 0,
            output: Vec::new(),
            stderr: Vec::new(),
            exit: None,
            handshake: None,
            complete: false,
            closed: None,
            acked: Vec::new(),
        };
        p.handshake().await;
        p.type_text("echo signed-$((7*7))\r").await;
        p.until_output("signed-49").await;

        // The same token again: already used.
        let mut ws = dial(&broker, &url_a, &[]).await;
        ws.send(open_frame(&token_a)).await.unwrap();
        let reason = close_reason(&mut ws).await;
        assert!(reason.contains("already used"), "{reason}");

        p.type_text("exit\r").await;
        p.until("channel_closed", |p| p.closed.is_some()).await;
        assert_eq!(p.closed.as_ref().unwrap().output, "", "a clean exit has no message");

        let reason = close_reason(&mut silent).await;
        assert!(reason.contains("no OpenDataChannel in time"), "{reason}");

        // A presigned URL with the right secret is accepted too.
        let (_headers, url) = sign(&broker, &url_b, &broker.secret, true);
        let mut p = Plugin::connect(&broker, &url, &token_b).await;
        p.handshake().await;
        p.type_text("exit\r").await;
        p.until("channel_closed", |p| p.closed.is_some()).await;
    });
}

#[test]
fn a_dropped_websocket_resumes_without_loss() {
    let broker = Broker::start();
    let _log = LogOnPanic(&broker);
    let agent = broker.agent("z");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (id, token, url) = start_session(&broker, json!({ "Target": agent.instance_id }));
    let mut p = rt.block_on(async {
        let mut p = Plugin::connect(&broker, &url, &token).await;
        p.handshake().await;
        p.type_text("for i in $(seq 1 30); do printf 'L%02d.\\n' $i; sleep 0.1; done; echo all-$((8*8))\r")
            .await;
        p.until_output("L03.").await;
        p
    });
    // Cut the TCP connection without a close frame, as a network drop does.
    rt.block_on(async { p.ws.get_mut().get_mut().0.shutdown().await.unwrap() });
    std::thread::sleep(Duration::from_millis(500));
    let (token2, url2) = resume_session(&broker, &id);
    rt.block_on(async {
        p.reconnect(&broker, &url2, &token2).await;
        p.until_output("all-64").await;
        for i in 1..=30 {
            assert_eq!(
                count(&p.output, &format!("L{i:02}.")),
                1,
                "line {i}: {}",
                String::from_utf8_lossy(&p.output)
            );
        }
        p.type_text("echo after-$((9*9))\r").await;
        p.until_output("after-81").await;
        p.type_text("exit\r").await;
        p.until("channel_closed", |p| p.closed.is_some()).await;
    });
}

/// A TCP echo server on loopback; returns its port.
async fn echo_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn ssh_byte_stream_and_smux_port_forwarding() {
    // Short HTTP deadlines: an upgraded data channel must not be subject to them.
    let broker = Broker::start_with(&["--http-idle-timeout", "1s", "--http-body-timeout", "1s"]);
    let _log = LogOnPanic(&broker);
    let agent = broker.agent("p");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = rt.block_on(echo_server());

    // AWS-StartSSHSession: the plugin's stdio is one connection.
    let (_id, token, url) = start_session(
        &broker,
        json!({"Target": agent.instance_id, "DocumentName": "AWS-StartSSHSession",
               "Parameters": {"portNumber": [port.to_string()]}}),
    );
    rt.block_on(async {
        let mut p = Plugin::connect(&broker, &url, &token).await;
        p.until("handshake", |p| p.complete).await;
        let (kind, props) = session_type(&p);
        assert_eq!(kind, "Port");
        assert_eq!(props["portNumber"], port.to_string());
        assert!(props.get("type").is_none(), "{props}");
        // Quiet for longer than the HTTP idle timeout.
        p.pump_for(Duration::from_millis(2500)).await;
        p.type_text("SSH-2.0-test\r\n").await;
        p.until_output("SSH-2.0-test").await;
        p.send(PayloadType::Flag, &Flag::TerminateSession.encode()).await;
        p.until("channel_closed", |p| p.closed.is_some()).await;
    });

    // AWS-StartPortForwardingSession: smux v1, two connections at once.
    let (_id, token, url) = start_session(
        &broker,
        json!({"Target": agent.instance_id, "DocumentName": "AWS-StartPortForwardingSession",
               "Parameters": {"portNumber": [port.to_string()], "localPortNumber": ["56789"]}}),
    );
    rt.block_on(async {
        let mut p = Plugin::connect(&broker, &url, &token).await;
        p.until("handshake", |p| p.complete).await;
        let (kind, props) = session_type(&p);
        assert_eq!((kind.as_str(), props["type"].as_str()), ("Port", Some("LocalPortForwarding")));
        assert_eq!(props["localPortNumber"], "56789");
        let frame = |cmd, sid, data: &[u8]| {
            SmuxFrame { cmd, stream_id: sid, data: Bytes::copy_from_slice(data) }.encode().unwrap()
        };
        let mut out = Vec::new();
        for (sid, text) in [(3u32, b"first".as_slice()), (5, b"second")] {
            out.extend_from_slice(&frame(Cmd::Syn, sid, b""));
            out.extend_from_slice(&frame(Cmd::Psh, sid, text));
        }
        p.send(PayloadType::Output, &out).await;
        let mut got: std::collections::HashMap<u32, Vec<u8>> = Default::default();
        let mut decoder = SmuxDecoder::default();
        let mut taken = 0;
        tokio::time::timeout(WAIT, async {
            while got.get(&3).map(Vec::len) != Some(5) || got.get(&5).map(Vec::len) != Some(6) {
                assert!(p.step().await, "ws ended");
                decoder.extend(&p.output[taken..]);
                taken = p.output.len();
                while let Some(f) = decoder.next_frame().unwrap() {
                    if f.cmd == Cmd::Psh {
                        got.entry(f.stream_id).or_default().extend_from_slice(&f.data);
                    }
                }
            }
        })
        .await
        .expect("echoes on both smux streams");
        assert_eq!(got[&3], b"first");
        assert_eq!(got[&5], b"second");

        // Bulk data on a third stream: 2 MiB echoed back intact (32 KiB smux frames, at most
        // 1 MiB in flight), with the rate printed for the record (debug build, loopback).
        let total = 2usize << 20;
        let data: Vec<u8> = (0..total).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let started = std::time::Instant::now();
        p.send(PayloadType::Output, &frame(Cmd::Syn, 7, b"")).await;
        let (mut sent, mut back) = (0usize, Vec::with_capacity(total));
        tokio::time::timeout(Duration::from_secs(60), async {
            while back.len() < total {
                if sent < total && sent - back.len() < 1 << 20 {
                    let end = (sent + (32 << 10)).min(total);
                    p.send(PayloadType::Output, &frame(Cmd::Psh, 7, &data[sent..end])).await;
                    sent = end;
                    continue;
                }
                assert!(p.step().await, "ws ended");
                decoder.extend(&p.output[taken..]);
                taken = p.output.len();
                while let Some(f) = decoder.next_frame().unwrap() {
                    if f.cmd == Cmd::Psh && f.stream_id == 7 {
                        back.extend_from_slice(&f.data);
                    }
                }
            }
        })
        .await
        .expect("2 MiB echoed");
        assert!(back == data, "the echoed bytes differ");
        let us = started.elapsed().as_micros().max(1);
        eprintln!(
            "smux echo through the edge: {total} bytes each way in {us} us ({} KB/s)",
            total as u128 * 1000 / us
        );
        let mut fins = Vec::new();
        fins.extend_from_slice(&frame(Cmd::Fin, 3, b""));
        fins.extend_from_slice(&frame(Cmd::Fin, 5, b""));
        p.send(PayloadType::Output, &fins).await;
        p.send(PayloadType::Flag, &Flag::TerminateSession.encode()).await;
        p.until("channel_closed", |p| p.closed.is_some()).await;
    });
}

/// `AWS-StartInteractiveCommand`: the command runs on a PTY (keys in, resizes honoured, a
/// terminal name), ends as a shell does (the code in `channel_closed`), through the edge and
/// through the `airlock` CLI.
#[test]
fn interactive_command_runs_on_a_pty() {
    let broker = Broker::start();
    let _log = LogOnPanic(&broker);
    let agent = broker.agent("a");
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Each step waits for a line typed in, so the Size messages land before `stty size`.
    let command = "read a; echo size-$(stty size | tr ' ' x); echo tty-$(tty); \
                   read b; echo size-$(stty size | tr ' ' x); exit 5";
    let (id, token, url) = start_session(
        &broker,
        json!({
            "Target": agent.instance_id,
            "DocumentName": "AWS-StartInteractiveCommand",
            "Parameters": {"command": [command]},
        }),
    );
    rt.block_on(async {
        let mut p = Plugin::connect(&broker, &url, &token).await;
        p.handshake().await;
        let (t, props) = session_type(&p);
        assert_eq!((t.as_str(), props["linux"]["commands"].as_str()), ("InteractiveCommands", Some(command)));
        p.type_text("go\r").await;
        p.until_output("size-30x100").await;
        p.until_output("tty-/dev/pts/").await;
        assert!(!contains(&p.output, "not a tty"), "{:?}", String::from_utf8_lossy(&p.output));
        p.send(PayloadType::Size, br#"{"cols":120,"rows":40}"#).await;
        p.type_text("again\r").await;
        p.until_output("size-40x120").await;
        assert!(contains(&p.output, "again"), "the PTY echoes what is typed");
        p.until("channel_closed", |p| p.closed.is_some()).await;
        let closed = p.closed.clone().unwrap();
        assert_eq!(closed.session_id, id);
        assert!(closed.output.contains("code 5"), "{closed:?}");
        assert_eq!(p.exit, None, "as for a shell, no ExitCode payload");
    });

    // The same document through the CLI: a terminal session; the CLI exits with the code.
    let args = [
        "start-session",
        "--target",
        &agent.instance_id,
        "--document-name",
        "AWS-StartInteractiveCommand",
        "--parameters",
        "command=read a; echo cli-$(tty); exit 6",
    ];
    let mut term = common::Terminal::spawn(common::pty_cli(&broker, &args));
    term.expect("Starting session with SessionId");
    term.send("x\r");
    term.expect("cli-/dev/pts/");
    assert_eq!(term.wait(), 6, "the CLI exits with the command's code");
}
