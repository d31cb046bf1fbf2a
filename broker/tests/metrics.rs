//! `GET /metrics`: absent unless the broker is started with a token file, and then served
//! only to requests bearing that token, with live figures (agents connected, API calls).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{wait_for, Broker};
use std::time::Duration;

const TOKEN: &str = "metrics-token-for-the-test-0123456789";

/// GETs `/metrics` over the broker's TLS, with `token` as the bearer if given.
fn scrape(broker: &Broker, token: Option<&str>) -> (u16, String) {
    let ca = std::fs::read(broker.ca_file()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(airlock_proto::quic::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(airlock_proto::quic::pinned_roots(&ca).unwrap())
        .with_no_client_auth();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder().use_preconfigured_tls(tls).build().unwrap();
        let mut request = client.get(format!("{}/metrics", broker.url));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    })
}

#[test]
fn metrics_need_the_flag_and_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("metrics-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let broker = Broker::start_in(dir, &["--metrics-token-file", token_file.to_str().unwrap()]);
    let _agent = broker.agent("m1");
    // Agent registration and describe-instance-information (in wait_online) have been
    // served by now; one more call naming a target that does not exist.
    broker.cli().args(["get-connection-status", "--target", "mi-00000000000000000"]).output().unwrap();

    let (status, _) = scrape(&broker, None);
    assert_eq!(status, 401, "no token");
    let (status, body) = scrape(&broker, Some("metrics-token-for-the-test-0123456780"));
    assert_eq!(status, 401, "wrong token: {body}");

    let body = wait_for("the agent in the metrics", Duration::from_secs(10), || {
        let (status, body) = scrape(&broker, Some(TOKEN));
        assert_eq!(status, 200, "{body}");
        body.lines().any(|l| l == "airlock_agents_connected 1").then_some(body)
    });
    let count = |prefix: &str| -> u64 {
        body.lines()
            .find_map(|l| l.strip_prefix(prefix).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {prefix} in:\n{body}"))
    };
    let described = "airlock_api_requests_total{operation=\"DescribeInstanceInformation\",outcome=\"ok\"}";
    assert!(count(described) >= 1, "{body}");
    assert!(
        body.contains("airlock_api_requests_total{operation=\"GetConnectionStatus\",outcome=\""),
        "{body}"
    );
    assert!(
        body.contains(
            "airlock_api_request_duration_seconds_bucket{operation=\"DescribeInstanceInformation\""
        ),
        "a histogram, not a summary: {body}"
    );
    assert!(body.contains("airlock_spool_bytes_waiting "), "{body}");
    // Only operation names from the code become labels, never the raw target.
    assert!(!body.contains("mi-00000000000000000"), "{body}");
}

#[test]
fn no_metrics_without_the_flag() {
    let broker = Broker::start();
    let (status, body) = scrape(&broker, Some(TOKEN));
    assert_eq!(status, 404, "{body}");
}

#[test]
fn a_short_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("metrics-token");
    std::fs::write(&token_file, "short\n").unwrap();
    let out = std::process::Command::new(common::bin("airlock-broker"))
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("broker"))
        .args(["--listen", "127.0.0.1:0", "--metrics-token-file"])
        .arg(&token_file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("metrics token"), "{stderr}");
}
