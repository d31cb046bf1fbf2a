//! Hole 6 of issue 9: agents can be revoked. DeregisterManagedInstance closes the live link
//! at once and refuses the certificate from then on; certificates expire, and agents renew
//! theirs over the authenticated link before they do.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use common::{wait_for, Agent, Broker};
use serde_json::Value;

fn listed(broker: &Broker, id: &str) -> Option<Value> {
    broker.api(&["describe-instance-information"])["InstanceInformationList"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["InstanceId"] == id)
        .cloned()
}

fn connection_status(broker: &Broker, id: &str) -> String {
    broker.api(&["get-connection-status", "--target", id])["Status"].as_str().unwrap().to_owned()
}

/// Registers an agent into `dir` without starting it; returns its instance id.
fn register(broker: &Broker, dir: &Path) -> String {
    let (id, code) = broker.activation(1);
    let out = broker.register(dir, &id, &code);
    assert!(out.status.success(), "register failed: {}", String::from_utf8_lossy(&out.stderr));
    let state: Value = serde_json::from_slice(&std::fs::read(dir.join("agent.json")).unwrap()).unwrap();
    state["instance_id"].as_str().unwrap().to_owned()
}

/// Stops an agent the way an operator would (SIGTERM), so it closes its link.
fn stop(mut agent: Agent) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(agent.proc.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    wait_for("the agent to exit", Duration::from_secs(20), || agent.proc.0.try_wait().unwrap());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn deregistered_agent_is_cut_off_and_stays_out() {
    let broker = Broker::start();
    let agent = broker.agent("a");
    let id = agent.instance_id.clone();
    assert_eq!(connection_status(&broker, &id), "connected");

    let out = broker.cli().args(["deregister-managed-instance", "--instance-id", &id]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), serde_json::json!({}));

    // Gone from the list at once, and its live link closed at once.
    assert!(listed(&broker, &id).is_none());
    assert_eq!(connection_status(&broker, &id), "notconnected");
    // The agent keeps redialling with the same certificate; it never gets back in.
    wait_for("the broker to refuse the agent's certificate", Duration::from_secs(20), || {
        broker.log.lock().unwrap().contains("agent certificate is unknown, expired or revoked").then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(connection_status(&broker, &id), "notconnected");
    assert!(listed(&broker, &id).is_none());

    // A second time, and an id never registered: SSM's InvalidInstanceId.
    for target in [id.as_str(), "mi-0123456789abcdef0"] {
        let body = serde_json::json!({ "InstanceId": target }).to_string();
        let (status, v) = broker.raw_call(
            "DeregisterManagedInstance",
            &body,
            &broker.key_id,
            &broker.secret,
            SystemTime::now(),
        );
        assert_eq!((status, v["__type"].as_str()), (400, Some("InvalidInstanceId")), "{v}");
    }

    // The deregistration is in the audit trail.
    let (status, v) = broker.raw_call(
        "AirlockIAM.ListAuditEvents",
        "{}",
        &broker.key_id,
        &broker.secret,
        SystemTime::now(),
    );
    assert_eq!(status, 200, "{v}");
    let text = v.to_string();
    assert!(text.contains("ssm:DeregisterManagedInstance") && text.contains(&id), "{text}");
}

#[test]
fn certificates_expire_and_agents_renew_them_over_their_link() {
    const LIFETIME_S: u64 = 12;
    let dir = tempfile::tempdir().unwrap();
    let broker =
        Broker::start_in_env(dir, &[], &[("AIRLOCK_AGENT_CERT_LIFETIME_SECS", &LIFETIME_S.to_string())]);
    let agent_dir = broker.dir.path().join("agent-r");
    let registered = Instant::now();
    let id = register(&broker, &agent_dir);
    // The registration's own certificate, kept aside to try again once it has expired.
    let old_dir = broker.dir.path().join("agent-r-old");
    copy_dir(&agent_dir, &old_dir);
    let first_cert = std::fs::read(agent_dir.join("agent.crt")).unwrap();

    let agent = Agent::run(&agent_dir, id.clone());
    broker.wait_online(&id);
    // Two thirds into its lifetime the agent renews over the link it is connected with.
    wait_for("the agent to renew its certificate", Duration::from_secs(3 * LIFETIME_S), || {
        (std::fs::read(agent_dir.join("agent.crt")).unwrap() != first_cert).then_some(())
    });
    for file in ["agent.crt", "agent.key", "agent.json", "ca.pem"] {
        let mode = std::fs::metadata(agent_dir.join(file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    assert!(!agent_dir.join("agent.crt.next").exists());
    stop(agent);

    // The next connect uses the renewed key and certificate (the old key is gone from disk).
    let agent = Agent::run(&agent_dir, id.clone());
    broker.wait_online(&id);
    stop(agent);
    wait_for("the agent link to drop", Duration::from_secs(20), || {
        (connection_status(&broker, &id) == "notconnected").then_some(())
    });

    // The first certificate has expired: refused at link accept.
    let expired = registered + Duration::from_secs(LIFETIME_S + 2);
    std::thread::sleep(expired.saturating_duration_since(Instant::now()));
    let _old = Agent::run(&old_dir, id.clone());
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(connection_status(&broker, &id), "notconnected");
}
