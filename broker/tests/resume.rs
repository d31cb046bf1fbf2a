//! Sessions outlive their connections: the agent's link is cut (every datagram dropped, by a
//! fault-injecting UDP proxy between agent and broker) for longer than QUIC's idle timeout,
//! so the link dies and the agent reconnects; the session goes on with nothing lost or
//! repeated, and the recording holds each byte once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use airlock_faultproxy::UdpProxy;
use common::{wait_for, Agent, Broker};

/// Longer than QUIC's 30 s idle timeout: both ends see the link die.
const CUT: Duration = Duration::from_secs(36);

/// Registers an agent whose QUIC link goes through a UDP proxy in front of the broker.
fn agent_behind(broker: &Broker, proxy: &UdpProxy) -> Agent {
    let (id, code) = broker.activation(1);
    let dir = broker.dir.path().join("agent-cut");
    let out = broker.register(&dir, &id, &code);
    assert!(out.status.success(), "register failed: {}", String::from_utf8_lossy(&out.stderr));
    let state_file = dir.join("agent.json");
    let mut state: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    state["endpoint"] = format!("https://{}", proxy.local_addr()).into();
    std::fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();
    let instance_id = state["instance_id"].as_str().unwrap().to_owned();
    let agent = Agent::run(&dir, instance_id);
    broker.wait_online(&agent.instance_id);
    agent
}

fn broker_addr(broker: &Broker) -> std::net::SocketAddr {
    broker.url.trim_start_matches("https://").trim_end_matches('/').parse().unwrap()
}

#[test]
fn output_produced_while_the_agents_link_is_cut_arrives_once_in_order() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let broker = Broker::start();
    let proxy = rt.block_on(UdpProxy::start(broker_addr(&broker))).unwrap();
    let agent = agent_behind(&broker, &proxy);

    // One numbered line every 100 ms for 45 s: many are produced during the cut.
    let script = "i=0; while [ $i -lt 450 ]; do i=$((i+1)); echo line-$i; sleep 0.1; done; echo done; exit 5";
    let child = broker
        .command(&agent.instance_id, script)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = wait_for("the session to be Connected", Duration::from_secs(20), || {
        let v = broker.api(&["describe-sessions", "--state", "Active"]);
        v["Sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Status"] == "Connected")
            .map(|s| s["SessionId"].as_str().unwrap().to_owned())
    });
    std::thread::sleep(Duration::from_secs(2));
    let faults = proxy.faults();
    faults.cut_for(CUT);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stats = faults.stats();
    assert!(
        stats.to_upstream.dropped > 0 && stats.to_client.dropped > 0,
        "the cut dropped nothing: {stats:?}"
    );
    assert_eq!(out.status.code(), Some(5), "stderr: {stderr}\nbroker: {}", broker.log.lock().unwrap());
    let expected: String = (1..=450).map(|i| format!("line-{i}\n")).collect::<String>() + "done\n";
    assert!(
        stdout == expected,
        "output differs: {} bytes, expected {}; stderr: {stderr}",
        stdout.len(),
        expected.len()
    );
    let log = broker.log.lock().unwrap().clone();
    assert!(log.contains("agent re-attached"), "the session did not re-attach: {log}");

    // The recording holds each line exactly once.
    let cast = wait_for("the recording", Duration::from_secs(10), || {
        std::fs::read_to_string(broker.data_dir().join("recordings").join(format!("{id}.cast"))).ok()
    });
    for i in [1, 100, 200, 300, 450] {
        assert_eq!(cast.matches(&format!("line-{i}\\")).count(), 1, "line-{i} in the recording");
    }
}
