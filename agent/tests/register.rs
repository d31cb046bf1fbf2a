//! `register` against a mock broker API (wire contract §1), and the CLI around it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use airlock_agent::register::{register, RegisterOptions};
use airlock_agent::state::StateDir;
use airlock_agent::Error;
use common::{registering, serve_api, Request, TestCa};

fn options(dir: &Path, endpoint: String) -> RegisterOptions {
    RegisterOptions {
        data_dir: dir.to_owned(),
        endpoint,
        activation_code: "code-123".into(),
        activation_id: "11111111-2222-3333-4444-555555555555".into(),
        ca_file: None,
        force: false,
    }
}

#[tokio::test]
async fn registers_saves_state_and_refuses_to_overwrite() {
    airlock_proto::quic::install_crypto_provider();
    let ca = Arc::new(TestCa::new());
    let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
    let inner = registering(ca.clone(), "mi-0123456789abcdef0");
    let log = seen.clone();
    let addr = serve_api(
        None,
        Arc::new(move |req: &Request| {
            log.lock().unwrap().push(req.clone());
            inner(req)
        }),
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("agent");
    let opts = options(&data, format!("http://127.0.0.1:{}", addr.port()));

    let id = register(&opts).await.unwrap();
    assert_eq!(id.as_str(), "mi-0123456789abcdef0");

    let req = seen.lock().unwrap()[0].clone();
    assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/"));
    assert_eq!(req.headers["content-type"], "application/x-amz-json-1.1");
    assert_eq!(req.headers["x-amz-target"], "AmazonSSM.RegisterManagedInstance");
    assert!(!req.headers.contains_key("authorization"), "RegisterManagedInstance is unsigned");
    let body: serde_json::Value = serde_json::from_str(&req.body).unwrap();
    assert_eq!(body["ActivationId"], "11111111-2222-3333-4444-555555555555");
    assert_eq!(body["ActivationCode"], "code-123");
    assert!(body["Csr"].as_str().unwrap().contains("CERTIFICATE REQUEST"));
    assert!(!body["Fingerprint"].as_str().unwrap().is_empty());
    assert!(!req.body.contains("PRIVATE KEY"), "the key never leaves the host");

    let reg = StateDir::new(&data).load().unwrap();
    assert_eq!(reg.state.instance_id, id);
    assert_eq!(reg.state.endpoint, format!("http://127.0.0.1:{}/", addr.port()));
    assert_eq!(reg.ca_pem, ca.pem);
    assert_eq!(std::fs::metadata(data.join("agent.key")).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);

    match register(&opts).await {
        Err(Error::AlreadyRegistered { instance_id, .. }) => assert_eq!(instance_id, "mi-0123456789abcdef0"),
        other => panic!("expected AlreadyRegistered, got {other:?}"),
    }
    assert_eq!(seen.lock().unwrap().len(), 1, "the refusal happens before any request");

    let forced = RegisterOptions { force: true, ..opts };
    register(&forced).await.unwrap();
    assert_ne!(StateDir::new(&data).load().unwrap().key_pem, reg.key_pem, "a new key for a new registration");
}

#[tokio::test]
async fn api_errors_are_typed_and_save_nothing() {
    airlock_proto::quic::install_crypto_provider();
    let addr = serve_api(
        None,
        Arc::new(|_: &Request| {
            (400, r#"{"__type":"InvalidActivation","message":"Activation has expired"}"#.to_owned())
        }),
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("agent");
    match register(&options(&data, format!("http://127.0.0.1:{}", addr.port()))).await {
        Err(Error::Api { code, message }) => {
            assert_eq!(code, "InvalidActivation");
            assert_eq!(message, "Activation has expired");
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    assert!(StateDir::new(&data).existing().unwrap().is_none());
}

#[tokio::test]
async fn a_certificate_for_another_key_is_rejected() {
    airlock_proto::quic::install_crypto_provider();
    let ca = Arc::new(TestCa::new());
    let (foreign_cert, _) = ca.issue(&["someone-else"]);
    let pem = ca.pem.clone();
    let addr = serve_api(
        None,
        Arc::new(move |_: &Request| {
            let reply = serde_json::json!({
                "InstanceId": "mi-0123456789abcdef0", "Certificate": foreign_cert, "CaCertificate": pem,
            });
            (200, reply.to_string())
        }),
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let err = register(&options(tmp.path(), format!("http://127.0.0.1:{}", addr.port()))).await.unwrap_err();
    assert!(matches!(err, Error::Tls(_)), "{err}");
    assert!(StateDir::new(tmp.path()).existing().unwrap().is_none());
}

fn tls_acceptor(ca: &TestCa) -> tokio_rustls::TlsAcceptor {
    let (cert, key) = ca.issue(&["127.0.0.1", "localhost"]);
    let chain = airlock_proto::quic::certs_from_pem(cert.as_bytes(), "server cert").unwrap();
    let key = airlock_proto::quic::key_from_pem(key.as_bytes(), "server key").unwrap();
    let config = rustls::ServerConfig::builder_with_provider(airlock_proto::quic::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[tokio::test]
async fn https_pins_the_given_ca() {
    airlock_proto::quic::install_crypto_provider();
    let ca = Arc::new(TestCa::new());
    let addr = serve_api(Some(tls_acceptor(&ca)), registering(ca.clone(), "mi-00000000000000abc")).await;
    let tmp = tempfile::tempdir().unwrap();
    let endpoint = format!("https://127.0.0.1:{}", addr.port());

    // The right CA: registration works, and ca.pem holds the file we were given.
    let ca_file = tmp.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let data = tmp.path().join("good");
    let opts = RegisterOptions { ca_file: Some(ca_file), ..options(&data, endpoint.clone()) };
    assert_eq!(register(&opts).await.unwrap().as_str(), "mi-00000000000000abc");
    assert_eq!(StateDir::new(&data).load().unwrap().ca_pem, ca.pem);

    // Another CA: the server is not trusted, whatever the system roots say.
    let other = tmp.path().join("other.pem");
    std::fs::write(&other, TestCa::new().pem).unwrap();
    let opts = RegisterOptions { ca_file: Some(other), ..options(&tmp.path().join("bad"), endpoint) };
    let err = register(&opts).await.unwrap_err();
    assert!(matches!(err, Error::Http(_)), "{err}");
    assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");
}

#[tokio::test]
async fn cli_prints_the_instance_id_or_the_error_code() {
    let ca = Arc::new(TestCa::new());
    let good = serve_api(None, registering(ca, "mi-0123456789abcdef0")).await;
    let bad = serve_api(
        None,
        Arc::new(|_: &Request| (400, r#"{"__type":"InvalidActivation","message":"wrong code"}"#.to_owned())),
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let run = |port: u16, dir: &str| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_airlock-agent"))
            .args(["register", "--data-dir"])
            .arg(tmp.path().join(dir))
            .args(["--endpoint", &format!("http://127.0.0.1:{port}")])
            .args(["--activation-code", "c", "--activation-id", "i"])
            .output()
    };
    let out = run(good.port(), "a").await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Registered as mi-0123456789abcdef0");

    let out = run(bad.port(), "b").await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("InvalidActivation") && stderr.contains("wrong code"), "{stderr}");
}
