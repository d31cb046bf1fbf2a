//! Hole 8 of issue 9: parallel RegisterManagedInstance calls on a one-use activation. Exactly
//! one registers; the others get SSM's InvalidActivation; none gets a 500 (`database is
//! locked` from a deferred transaction upgraded under contention).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::Broker;
use serde_json::{json, Value};

const CALLERS: usize = 20;

fn csr() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    rcgen::CertificateParams::new(vec!["host".to_string()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
}

#[test]
fn parallel_registrations_on_a_one_use_activation() {
    let broker = Broker::start();
    let ca = std::fs::read(broker.ca_file()).unwrap();
    let url = format!("{}/", broker.url);
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut winners = Vec::new();
    // Several rounds: the race does not lose every time.
    for _ in 0..3 {
        let (id, code) = broker.activation(1);
        let bodies: Vec<String> = (0..CALLERS)
            .map(|_| json!({ "ActivationId": id, "ActivationCode": code, "Csr": csr() }).to_string())
            .collect();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let results: Vec<(u16, Value)> = rt.block_on(async {
            let tls = rustls::ClientConfig::builder_with_provider(airlock_proto::quic::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(airlock_proto::quic::pinned_roots(&ca).unwrap())
                .with_no_client_auth();
            let client = reqwest::Client::builder().use_preconfigured_tls(tls).build().unwrap();
            // Every request is ready before any is sent, so they reach the broker together.
            let calls = bodies.into_iter().map(|body| {
                let request = client
                    .post(&url)
                    .header("content-type", "application/x-amz-json-1.1")
                    .header("x-amz-target", "AmazonSSM.RegisterManagedInstance")
                    .body(body);
                async move {
                    let resp = request.send().await.unwrap();
                    let status = resp.status().as_u16();
                    (status, resp.json::<Value>().await.unwrap_or(Value::Null))
                }
            });
            futures_util::future::join_all(calls).await
        });
        winners.push(results.iter().filter(|(s, _)| *s == 200).count());
        for (status, v) in &results {
            let kind = v["__type"].as_str().unwrap_or("");
            *outcomes.entry(format!("{status} {kind}")).or_default() += 1;
        }
    }
    eprintln!("outcomes of {} registrations: {outcomes:?}", 3 * CALLERS);
    assert!(outcomes.keys().all(|k| !k.starts_with('5')), "server errors under contention: {outcomes:?}");
    assert_eq!(winners, [1, 1, 1], "exactly one registration per activation: {outcomes:?}");
    let expected =
        BTreeMap::from([("200 ".to_owned(), 3), ("400 InvalidActivation".to_owned(), 3 * (CALLERS - 1))]);
    assert_eq!(outcomes, expected);
}
