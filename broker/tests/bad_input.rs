//! Bad input gets a precise error, and other sessions keep working.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, SystemTime};

use airlock_proto::{ClientRequest, CloseReason, Control, FramedStream};
use common::{Broker, Terminal};

fn cli_error(broker: &Broker, env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let out = broker.cli().envs(env.iter().copied()).args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn signatures_keys_and_clock_skew() {
    let broker = Broker::start();
    let (code, err) = cli_error(
        &broker,
        &[("AWS_SECRET_ACCESS_KEY", "wrong-secret")],
        &["describe-sessions", "--state", "Active"],
    );
    assert_eq!(code, Some(254));
    assert!(
        err.contains(
            "An error occurred (InvalidSignatureException) when calling the DescribeSessions operation"
        ),
        "{err}"
    );
    let (_, err) = cli_error(
        &broker,
        &[("AWS_ACCESS_KEY_ID", "AKIANOTAKEY000000000")],
        &["describe-sessions", "--state", "Active"],
    );
    // An unknown key id answers exactly as a bad signature does (issue 9): no probing for keys.
    assert!(err.contains("(InvalidSignatureException)"), "{err}");

    let stale = SystemTime::now() - Duration::from_secs(600);
    let (status, body) =
        broker.raw_call("DescribeSessions", r#"{"State":"Active"}"#, &broker.key_id, &broker.secret, stale);
    assert_eq!(status, 400);
    assert_eq!(body["__type"], "InvalidSignatureException");
    assert!(body["message"].as_str().unwrap().starts_with("Signature expired"), "{body}");
    let (status, body) = broker.raw_call(
        "DescribeSessions",
        r#"{"State":"Active"}"#,
        &broker.key_id,
        &broker.secret,
        SystemTime::now(),
    );
    assert_eq!((status, body["Sessions"].as_array().map(Vec::len)), (200, Some(0)));
    let (status, body) =
        broker.raw_call("DescribeSessions", "{not json", &broker.key_id, &broker.secret, SystemTime::now());
    assert_eq!((status, body["__type"].as_str()), (400, Some("SerializationException")));
}

#[test]
fn unknown_target_and_unsupported_document() {
    let broker = Broker::start();
    let (_, err) = cli_error(&broker, &[], &["start-session", "--target", "mi-00000000000000000"]);
    assert!(err.contains("(TargetNotConnected)") && err.contains("mi-00000000000000000"), "{err}");
    let (_, err) = cli_error(&broker, &[], &["start-session", "--target", "i-nope"]);
    assert!(err.contains("(InvalidTarget)"), "{err}");
    let (_, err) = cli_error(
        &broker,
        &[],
        &["start-session", "--target", "mi-00000000000000000", "--document-name", "AWS-Nope"],
    );
    assert!(err.contains("(InvalidDocument)"), "{err}");
}

#[test]
fn exhausted_and_expired_activations() {
    let broker = Broker::start();
    let (id, code) = broker.activation(1);
    let first = broker.register(&broker.dir.path().join("a1"), &id, &code);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let second = broker.register(&broker.dir.path().join("a2"), &id, &code);
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(err.contains("InvalidActivation") && err.contains("registration limit of 1"), "{err}");

    let wrong = broker.register(&broker.dir.path().join("a3"), &id, "not-the-code-at-all");
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("does not match"));

    // An activation whose expiry has passed, written straight into the broker's store.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let expired_code = "expired-activation-code";
    rt.block_on(async {
        use airlock_broker::store::{Activation, SqliteStore, Store};
        use sha2::Digest;
        let store = SqliteStore::open(&broker.data_dir().join("airlock.db")).await.unwrap();
        store
            .insert_activation(&Activation {
                activation_id: "00000000-0000-4000-8000-000000000001".into(),
                code_hash: hex::encode(sha2::Sha256::digest(expired_code.as_bytes())),
                iam_role: "r".into(),
                description: String::new(),
                default_instance_name: String::new(),
                registration_limit: 5,
                registrations: 0,
                expires_us: airlock_broker::app::now_us() - 1,
                created_us: 0,
                tags: Vec::new(),
            })
            .await
            .unwrap();
    });
    let out =
        broker.register(&broker.dir.path().join("a4"), "00000000-0000-4000-8000-000000000001", expired_code);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("InvalidActivation") && err.contains("expired"), "{err}");
}

/// A session stream whose hello is protocol 1's unversioned `ClientHello` (still served).
async fn client_stream(
    broker: &Broker,
    token: &str,
) -> (quinn::Endpoint, FramedStream<quinn::RecvStream, quinn::SendStream>) {
    let hello = ClientRequest {
        token: token.into(),
        client_version: "test".into(),
        cols: 80,
        rows: 24,
        term: "xterm".into(),
    };
    client_stream_with(broker, Control::ClientHello(hello)).await
}

async fn client_stream_with(
    broker: &Broker,
    hello: Control,
) -> (quinn::Endpoint, FramedStream<quinn::RecvStream, quinn::SendStream>) {
    let ca = std::fs::read(broker.ca_file()).unwrap();
    let addr: std::net::SocketAddr = broker.url.trim_start_matches("https://").parse().unwrap();
    let endpoint =
        airlock_proto::quic::client_endpoint(addr, airlock_proto::quic::client_config(&ca, None).unwrap())
            .unwrap();
    let conn = endpoint.connect(addr, "127.0.0.1").unwrap().await.unwrap();
    let (send, recv) = conn.open_bi().await.unwrap();
    let mut s = FramedStream::new(recv, send, airlock_proto::MAX_FRAME_LEN);
    s.send_control(&hello).await.unwrap();
    (endpoint, s)
}

#[test]
fn a_client_older_than_the_broker_serves_is_refused_with_the_minimum_named() {
    airlock_proto::quic::install_crypto_provider();
    let broker = Broker::start();
    let agent = broker.agent("a");
    let body = format!(
        r#"{{"Target":"{}","DocumentName":"AWS-StartNonInteractiveCommand","Parameters":{{"command":["true"]}}}}"#,
        agent.instance_id
    );
    let (status, v) =
        broker.raw_call("StartSession", &body, &broker.key_id, &broker.secret, SystemTime::now());
    assert_eq!(status, 200, "{v}");
    let token = v["TokenValue"].as_str().unwrap().to_owned();
    let request =
        ClientRequest { token, client_version: "0.0".into(), cols: 80, rows: 24, term: "xterm".into() };
    let old = airlock_proto::PeerVersion { protocol: 0, capabilities: vec![] };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let hello = Control::ClientHelloVersioned { version: old, request };
        let (_e, mut s) = client_stream_with(&broker, hello).await;
        match s.recv_control(Duration::from_secs(20)).await.unwrap() {
            Control::Close { reason: CloseReason::ProtocolError, message } => assert_eq!(
                message,
                "this client speaks Airlock protocol 0; the broker serves protocols 1 to 2: upgrade the client"
            ),
            other => panic!("expected a refusal, got {other:?}"),
        }
    });
}

#[test]
fn replayed_session_token_is_refused() {
    airlock_proto::quic::install_crypto_provider();
    let broker = Broker::start();
    let agent = broker.agent("a");
    let body = format!(
        r#"{{"Target":"{}","DocumentName":"AWS-StartNonInteractiveCommand","Parameters":{{"command":["sleep 30"]}}}}"#,
        agent.instance_id
    );
    let (status, v) =
        broker.raw_call("StartSession", &body, &broker.key_id, &broker.secret, SystemTime::now());
    assert_eq!(status, 200, "{v}");
    let token = v["TokenValue"].as_str().unwrap().to_owned();
    assert!(v["StreamUrl"].as_str().unwrap().contains(v["SessionId"].as_str().unwrap()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (_e1, mut first) = client_stream(&broker, &token).await;
        assert!(matches!(first.recv_control(Duration::from_secs(20)).await.unwrap(), Control::Ready { .. }));
        let (_e2, mut replay) = client_stream(&broker, &token).await;
        match replay.recv_control(Duration::from_secs(20)).await.unwrap() {
            Control::Close { reason: CloseReason::Unauthorized, message } => {
                assert!(message.contains("already used"), "{message}")
            }
            other => panic!("replay was not refused: {other:?}"),
        }
        let (_e3, mut forged) = client_stream(&broker, "forged-token").await;
        match forged.recv_control(Duration::from_secs(20)).await.unwrap() {
            Control::Close { reason: CloseReason::Unauthorized, message } => {
                assert!(message.contains("not valid"))
            }
            other => panic!("forged token was not refused: {other:?}"),
        }
    });
}

#[test]
fn oversized_frame_on_agent_link_drops_only_that_agent() {
    airlock_proto::quic::install_crypto_provider();
    let broker = Broker::start();
    let good = broker.agent("good");
    let mut term =
        Terminal::spawn(common::pty_cli(&broker, &["start-session", "--target", &good.instance_id]));
    term.expect("Starting session with SessionId");
    term.send("echo before-$((5*5))\r");
    term.expect("before-25");

    // A rogue agent registers properly, then sends a frame header claiming 16 MiB.
    let (id, code) = broker.activation(1);
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().serialize_request(&key).unwrap();
    let body = serde_json::json!({"ActivationId": id, "ActivationCode": code, "Csr": csr.pem().unwrap(), "Fingerprint": "rogue"});
    let ca = std::fs::read(broker.ca_file()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reason = rt.block_on(async {
        let tls = rustls::ClientConfig::builder_with_provider(airlock_proto::quic::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(airlock_proto::quic::pinned_roots(&ca).unwrap())
            .with_no_client_auth();
        let http = reqwest::Client::builder().use_preconfigured_tls(tls).build().unwrap();
        let resp: serde_json::Value = http
            .post(format!("{}/", broker.url))
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", "AmazonSSM.RegisterManagedInstance")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let cert_pem = resp["Certificate"].as_str().expect("registered").to_owned();
        let chain = airlock_proto::quic::certs_from_pem(cert_pem.as_bytes(), "cert").unwrap();
        let key = airlock_proto::quic::key_from_pem(key.serialize_pem().as_bytes(), "key").unwrap();
        let addr: std::net::SocketAddr = broker.url.trim_start_matches("https://").parse().unwrap();
        let config = airlock_proto::quic::client_config(&ca, Some((chain, key))).unwrap();
        let endpoint = airlock_proto::quic::client_endpoint(addr, config).unwrap();
        let conn = endpoint.connect(addr, "127.0.0.1").unwrap().await.unwrap();
        let (mut send, recv) = conn.open_bi().await.unwrap();
        let mut control = FramedStream::new(recv, send, 1 << 20);
        control.send_control(&Control::AgentHello(Default::default())).await.unwrap();
        let (_r, w) = control.split();
        send = w.into_inner();
        // kind=data, length 16 MiB, then nothing: the broker must refuse before allocating.
        let header = [1u8, 0, 0, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        send.write_all(&header).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(20), conn.closed()).await.unwrap() {
            quinn::ConnectionError::ApplicationClosed(c) => String::from_utf8_lossy(&c.reason).into_owned(),
            other => panic!("unexpected close {other}"),
        }
    });
    assert!(reason.contains("16777216") && reason.contains("exceeds"), "{reason}");

    // The good agent's session is untouched.
    term.send("echo after-$((6*6))\r");
    term.expect("after-36");
    term.send("exit\r");
    assert_eq!(term.wait(), 0);
}

#[test]
fn activations_are_listed_without_codes_and_deleted() {
    let broker = Broker::start();
    let (id, code) = broker.activation(3);
    let call = |op: &str, body: String| {
        broker.raw_call(op, &body, &broker.key_id, &broker.secret, SystemTime::now())
    };
    let (s, v) = call(
        "DescribeActivations",
        format!(r#"{{"Filters":[{{"FilterKey":"ActivationIds","FilterValues":["{id}"]}}]}}"#),
    );
    assert_eq!(s, 200, "{v}");
    let list = v["ActivationList"].as_array().unwrap();
    assert_eq!(
        (list.len(), list[0]["RegistrationLimit"].as_i64(), list[0]["Expired"].as_bool()),
        (1, Some(3), Some(false))
    );
    assert!(!v.to_string().contains(&code), "the code is shown once, at creation only");
    assert_eq!(call("DeleteActivation", format!(r#"{{"ActivationId":"{id}"}}"#)).0, 200);
    let out = broker.register(&broker.dir.path().join("late"), &id, &code);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    let (_, v) = call("DeleteActivation", format!(r#"{{"ActivationId":"{id}"}}"#));
    assert_eq!(v["__type"], "InvalidActivationId");
    // An unknown session cannot be resumed.
    let (_, v) = call("ResumeSession", r#"{"SessionId":"admin-00000000000000000"}"#.into());
    assert_eq!(v["__type"], "DoesNotExistException");
}
