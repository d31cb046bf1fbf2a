//! Sessions outlive their connections: the agent's link is cut (every datagram dropped, by a
//! fault-injecting UDP proxy between agent and broker) for longer than QUIC's idle timeout,
//! so the link dies and the agent reconnects; the session goes on with nothing lost or
//! repeated, and the recording holds each byte once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use airlock_faultproxy::{ProxyConfig, TcpProxy, UdpProxy};
use common::{wait_for, Agent, Broker};

/// Longer than QUIC's 30 s idle timeout: both ends see the link die.
const CUT: Duration = Duration::from_secs(36);
/// The issue's "a minute or more": a laptop lid closed for a minute, for the two tests that
/// check every byte of output produced across the cut.
const MINUTE_CUT: Duration = Duration::from_secs(60);

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
    let id = connected_session(&broker);
    std::thread::sleep(Duration::from_secs(2));
    let faults = proxy.faults();
    faults.cut_for(MINUTE_CUT);
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

/// A TCP proxy (the API) and a UDP proxy (QUIC) on one loopback port, in front of the broker.
fn proxies_for(rt: &tokio::runtime::Runtime, broker: &Broker) -> (TcpProxy, UdpProxy) {
    let upstream = broker_addr(broker);
    rt.block_on(async {
        for _ in 0..20 {
            let tcp = TcpProxy::start(upstream).await.unwrap();
            let config = ProxyConfig::default().with_listen(tcp.local_addr());
            if let Ok(udp) = UdpProxy::start_with(upstream, config).await {
                return (tcp, udp);
            }
        }
        panic!("no loopback port free for both TCP and UDP");
    })
}

#[test]
fn a_cli_whose_connection_is_cut_resumes_with_nothing_lost_or_repeated() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let broker = Broker::start();
    let agent = broker.agent("a");
    let (tcp, udp) = proxies_for(&rt, &broker);

    let script = "i=0; while [ $i -lt 450 ]; do i=$((i+1)); echo line-$i; sleep 0.1; done; echo done; exit 6";
    let child = broker
        .command(&agent.instance_id, script)
        .env("AIRLOCK_ENDPOINT", format!("https://{}", tcp.local_addr()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = connected_session(&broker);
    std::thread::sleep(Duration::from_secs(2));
    tcp.faults().cut_for(MINUTE_CUT);
    udp.faults().cut_for(MINUTE_CUT);
    // While the client is away the session says so.
    wait_for("the session to be Disconnected", Duration::from_secs(40), || {
        (session_status(&broker, &id).as_deref() == Some("Disconnected")).then_some(())
    });
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stats = udp.faults().stats();
    assert!(
        stats.to_upstream.dropped > 0 && stats.to_client.dropped > 0,
        "the cut dropped nothing: {stats:?}"
    );
    assert_eq!(out.status.code(), Some(6), "stderr: {stderr}\nbroker: {}", broker.log.lock().unwrap());
    let expected: String = (1..=450).map(|i| format!("line-{i}\n")).collect::<String>() + "done\n";
    assert!(
        stdout == expected,
        "output differs: {} bytes, expected {}; stderr: {stderr}",
        stdout.len(),
        expected.len()
    );
    assert!(stderr.contains("connection lost") && stderr.contains("resumed after"), "stderr: {stderr}");

    let cast = wait_for("the recording", Duration::from_secs(10), || {
        std::fs::read_to_string(broker.data_dir().join("recordings").join(format!("{id}.cast"))).ok()
    });
    for i in [1, 100, 200, 300, 450] {
        assert_eq!(cast.matches(&format!("line-{i}\\")).count(), 1, "line-{i} in the recording");
    }
}

#[test]
fn resume_session_is_for_the_owner_of_a_live_session_only() {
    let broker = Broker::start();
    let agent = broker.agent("a");
    let mut child = broker
        .command(&agent.instance_id, "echo started; sleep 60")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let id = connected_session(&broker);
    let body = format!(r#"{{"SessionId":"{id}"}}"#);
    let (status, v) =
        broker.raw_call("ResumeSession", &body, &broker.key_id, &broker.secret, std::time::SystemTime::now());
    assert_eq!(status, 200, "{v}");
    assert!(v["TokenValue"].as_str().unwrap().len() >= 43, "{v}");
    assert!(v["StreamUrl"].as_str().unwrap().contains(&id), "{v}");
    // Another principal allowed ssm:ResumeSession on every session still cannot take it over.
    let other = broker.api(&["iam", "create-user", "--user-name", "mallory"]);
    assert!(other.is_object());
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ssm:ResumeSession","Resource":"*"}]}"#;
    broker.api(&[
        "iam",
        "put-user-policy",
        "--user-name",
        "mallory",
        "--policy-name",
        "resume",
        "--policy-document",
        policy,
    ]);
    let key = broker.api(&["iam", "create-access-key", "--user-name", "mallory"]);
    let (kid, secret) = (
        key["AccessKey"]["AccessKeyId"].as_str().unwrap(),
        key["AccessKey"]["SecretAccessKey"].as_str().unwrap(),
    );
    let (status, v) = broker.raw_call("ResumeSession", &body, kid, secret, std::time::SystemTime::now());
    assert_eq!((status, v["__type"].as_str()), (400, Some("AccessDeniedException")), "{v}");
    broker.api(&["terminate-session", "--session-id", &id]);
    let _ = child.wait();
    // An ended session cannot be resumed.
    let (status, v) =
        broker.raw_call("ResumeSession", &body, &broker.key_id, &broker.secret, std::time::SystemTime::now());
    assert_eq!((status, v["__type"].as_str()), (400, Some("InvalidParameters")), "{v}");
}

/// Waits until the CLI printed its first line: the session is spliced end to end.
fn first_line(child: &mut std::process::Child) -> String {
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut out, &mut line);
        let _ = tx.send(line);
        // Keep reading so the CLI never blocks on a full pipe.
        let _ = std::io::copy(&mut out, &mut std::io::sink());
    });
    rx.recv_timeout(Duration::from_secs(30)).expect("the CLI printed nothing")
}

/// Waits for the broker's one session to be Connected; returns its id.
fn connected_session(broker: &Broker) -> String {
    wait_for("the session to be Connected", Duration::from_secs(20), || {
        let v = broker.api(&["describe-sessions", "--state", "Active"]);
        let sessions = v["Sessions"].as_array().unwrap().clone();
        sessions
            .into_iter()
            .find(|s| s["Status"] == "Connected")
            .map(|s| s["SessionId"].as_str().unwrap().to_owned())
    })
}

/// Whether process `pid` is gone (or a zombie, which is dead).
fn process_gone(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.is_empty() || stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z')
}

fn session_status(broker: &Broker, id: &str) -> Option<String> {
    let v = broker.api(&["describe-sessions", "--state", "Active"]);
    let active = v["Sessions"].as_array().unwrap().iter().find(|s| s["SessionId"] == id).cloned();
    let found = active.or_else(|| {
        let v = broker.api(&["describe-sessions", "--state", "History"]);
        v["Sessions"].as_array().unwrap().iter().find(|s| s["SessionId"] == id).cloned()
    });
    found.map(|s| s["Status"].as_str().unwrap().to_owned())
}

#[test]
fn keys_typed_during_a_cut_reach_the_shell_once_after_the_resume() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let broker = Broker::start();
    let agent = broker.agent("a");
    let (tcp, udp) = proxies_for(&rt, &broker);
    let mut cmd = common::pty_cli(&broker, &["start-session", "--target", &agent.instance_id]);
    cmd.env("AIRLOCK_ENDPOINT", format!("https://{}", tcp.local_addr()));
    let mut term = common::Terminal::spawn(cmd);
    term.send("echo k-$((40+2))\r");
    term.expect("k-42");
    tcp.faults().cut_for(CUT);
    udp.faults().cut_for(CUT);
    std::thread::sleep(Duration::from_secs(1));
    term.send("echo typed-$((100+1))\r");
    wait_for("the resume", Duration::from_secs(90), || {
        term.screen.lock().unwrap().contains("resumed after").then_some(())
    });
    term.expect("typed-101");
    term.send("echo after-$((1+1))\r");
    term.expect("after-2");
    let screen = term.screen.lock().unwrap().clone();
    assert_eq!(screen.matches("typed-101").count(), 1, "typed once, run once: {screen}");
    assert!(screen.contains("connection lost"), "{screen}");
    term.send("exit 4\r");
    assert_eq!(term.wait(), 4, "{}", term.screen.lock().unwrap());
}

#[test]
fn terminate_reaches_the_agent_while_the_client_is_away() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let broker = Broker::start();
    let agent = broker.agent("a");
    let (tcp, udp) = proxies_for(&rt, &broker);
    let pid_file = broker.dir.path().join("remote.pid");
    let script = format!("echo $$ > {}; echo started; exec sleep 300", pid_file.display());
    let mut child = broker
        .command(&agent.instance_id, &script)
        .env("AIRLOCK_ENDPOINT", format!("https://{}", tcp.local_addr()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(first_line(&mut child), "started\n");
    let pid: i32 = wait_for("the remote pid", Duration::from_secs(20), || {
        std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse().ok())
    });
    let id = connected_session(&broker);
    tcp.faults().cut_for(CUT + Duration::from_secs(20));
    udp.faults().cut_for(CUT + Duration::from_secs(20));
    wait_for("the session to be Disconnected", Duration::from_secs(45), || {
        (session_status(&broker, &id).as_deref() == Some("Disconnected")).then_some(())
    });
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the process lives while the client is away"
    );
    broker.api(&["terminate-session", "--session-id", &id]);
    wait_for("the session to be Terminated", Duration::from_secs(5), || {
        (session_status(&broker, &id).as_deref() == Some("Terminated")).then_some(())
    });
    wait_for("the remote process to end", Duration::from_secs(5), || process_gone(pid).then_some(()));
    // The CLI learns it when its network is back: the session cannot be resumed any more.
    let status = wait_for("the CLI to exit", Duration::from_secs(90), || child.try_wait().unwrap());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_ne!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("can no longer be resumed"), "{stderr}");
}

#[test]
fn past_the_resume_window_the_session_ends_with_a_clear_reason_and_the_process_goes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let broker = Broker::start();
    broker.set_preferences(serde_json::json!({ "resumeWindowSeconds": 2 }));
    let proxy = rt.block_on(UdpProxy::start(broker_addr(&broker))).unwrap();
    let agent = agent_behind(&broker, &proxy);
    let pid_file = broker.dir.path().join("window.pid");
    let script = format!("echo $$ > {}; echo started; exec sleep 300", pid_file.display());
    let mut child = broker
        .command(&agent.instance_id, &script)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(first_line(&mut child), "started\n");
    // The window went to the agent before the first output; give it time to arrive.
    std::thread::sleep(Duration::from_secs(1));
    let pid: i32 = wait_for("the remote pid", Duration::from_secs(20), || {
        std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse().ok())
    });
    let id = connected_session(&broker);
    proxy.faults().cut_for(CUT);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    assert!(stderr.contains("resume window of 2 s"), "{stderr}");
    let v = broker.api(&["describe-sessions", "--state", "History"]);
    let s =
        v["Sessions"].as_array().unwrap().iter().find(|s| s["SessionId"] == id.as_str()).cloned().unwrap();
    assert_eq!(s["Status"], "Terminated", "{s}");
    assert!(s["Details"].as_str().unwrap().contains("resume window of 2 s"), "{s}");
    // The agent ended the process when its own window (the preference, sent to it) passed.
    wait_for("the remote process to end", Duration::from_secs(10), || process_gone(pid).then_some(()));
}
