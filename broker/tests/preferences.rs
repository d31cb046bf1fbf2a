//! Session Manager preferences (SSM-SessionManagerRunShell) end to end: each field changes
//! what the real broker and agent do.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{pty_cli, wait_for, Broker, Proc, Terminal};
use serde_json::{json, Value};

fn run(broker: &Broker, target: &str, command: &str) -> (bool, String, String) {
    let out = broker.command(target, command).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn require_recording_refuses_an_unrecordable_session_and_off_lets_it_run_unrecorded() {
    let broker = Broker::start();
    let agent = broker.agent("a");
    // Root ignores permissions, so the spool is made unusable by putting a file in its place.
    let spool = broker.data_dir().join("spool");
    std::fs::remove_dir_all(&spool).unwrap();
    std::fs::write(&spool, b"not a folder").unwrap();

    let (ok, stdout, stderr) = run(&broker, &agent.instance_id, "echo must-not-run");
    assert!(!ok);
    assert!(!stdout.contains("must-not-run"), "{stdout}");
    assert!(
        stderr.contains("cannot be recorded, so it was refused") && stderr.contains("require recording"),
        "{stderr}"
    );

    broker.set_preferences(json!({ "requireRecording": false }));
    let (ok, stdout, stderr) = run(&broker, &agent.instance_id, "echo ran-$((6*7))");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("ran-42"), "{stdout}");
    assert!(broker.log.lock().unwrap().contains("session runs UNRECORDED"));
}

#[test]
fn run_as_uses_the_default_user_and_the_principal_tag_wins() {
    let broker = Broker::start();
    let agent = broker.agent("a");
    broker.set_preferences(json!({ "runAsEnabled": true, "runAsDefaultUser": "airlock-runas" }));
    let (ok, stdout, stderr) = run(&broker, &agent.instance_id, "id -un; echo home=$HOME");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("airlock-runas\n") && stdout.contains("home=/home/airlock-runas"), "{stdout}");

    broker.api(&["iam", "tag-user", "--user-name", "admin", "--tags", "Key=SSMSessionRunAs,Value=root"]);
    let (ok, stdout, stderr) = run(&broker, &agent.instance_id, "id -un");
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "root");

    broker.api(&[
        "iam",
        "tag-user",
        "--user-name",
        "admin",
        "--tags",
        "Key=SSMSessionRunAs,Value=nobody-here",
    ]);
    let (ok, _, stderr) = run(&broker, &agent.instance_id, "id -un");
    assert!(!ok);
    assert!(stderr.contains("run-as user \"nobody-here\" does not exist on this host"), "{stderr}");
}

#[test]
fn the_shell_profile_runs_first_and_the_idle_timeout_ends_a_quiet_shell() {
    let broker = Broker::start();
    let agent = broker.agent("a");
    broker.set_preferences(json!({
        "shellProfile": { "linux": "export AIRLOCK_MARK=$((6*7))", "windows": "" },
        "idleSessionTimeout": "1",
    }));
    let mut term = Terminal::spawn(pty_cli(&broker, &["start-session", "--target", &agent.instance_id]));
    term.expect("Starting session with SessionId");
    term.send("echo mark=$AIRLOCK_MARK\r");
    term.expect("mark=42");
    let last_input = Instant::now();
    // A command printing now and then is output, not input: the session is still idle.
    term.send("for i in 1 2 3 4 5 6; do sleep 10; echo still-$i; done\r");
    wait_for("the idle timeout", Duration::from_secs(90), || {
        term.screen.lock().unwrap().contains("without input (idleSessionTimeout)").then_some(())
    });
    assert!(last_input.elapsed() >= Duration::from_secs(60));
    term.wait();
    let history = broker.api(&["describe-sessions", "--state", "History"]);
    let details = history["Sessions"][0]["Details"].as_str().unwrap_or_default().to_owned();
    assert!(details.contains("1 min without input"), "{history}");
}

/// The two minute-long cases run side by side, so the suite waits one minute, not two.
#[test]
fn time_limits_end_busy_command_sessions_and_port_sessions_without_connections() {
    std::thread::scope(|s| {
        s.spawn(the_maximum_duration_ends_a_session_that_is_busy);
        s.spawn(a_port_session_without_connections_ends_at_the_idle_timeout);
    });
}

fn the_maximum_duration_ends_a_session_that_is_busy() {
    let broker = Broker::start();
    let agent = broker.agent("a");
    broker.set_preferences(json!({ "maxSessionDuration": "1", "idleSessionTimeout": "5" }));
    let started = Instant::now();
    let (ok, stdout, stderr) = run(&broker, &agent.instance_id, "while true; do echo busy; sleep 5; done");
    assert!(!ok);
    assert!(started.elapsed() >= Duration::from_secs(60), "ended after {:?}", started.elapsed());
    assert!(stdout.contains("busy"));
    assert!(stderr.contains("maximum duration of 1 min (maxSessionDuration)"), "{stderr}");
    wait_for("the recording's end reason", Duration::from_secs(10), || {
        let recordings = broker.api(&["recordings", "list"]);
        (recordings["Recordings"][0]["EndReason"] == "MaxDuration").then_some(())
    });
    let history = broker.api(&["describe-sessions", "--state", "History"]);
    assert_eq!(history["Sessions"][0]["MaxSessionDuration"], "1", "{history}");
}

#[test]
fn port_sessions_record_the_bytes_when_the_preferences_ask() {
    let broker = Broker::start();
    let agent = broker.agent("a");
    broker.set_preferences(json!({ "recordPortData": true }));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(b"pong\x00\xff").unwrap();
    });
    let mut child = broker
        .port_forward(&agent.instance_id, port)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let local: u16 = loop {
        let mut line = String::new();
        assert!(std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0, "the CLI printed no port");
        if let Some(rest) = line.strip_prefix("Port ") {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let cli = Proc(child);
    let mut conn = TcpStream::connect(("127.0.0.1", local)).unwrap();
    conn.write_all(b"ping\n").unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).unwrap();
    assert_eq!(answer, b"pong\x00\xff");
    server.join().unwrap();
    // Terminated rather than killed: a vanished client is noticed only at the QUIC idle timeout.
    let active = broker.api(&["describe-sessions", "--state", "Active"]);
    let id = active["Sessions"][0]["SessionId"].as_str().unwrap().to_owned();
    broker.api(&["terminate-session", "--session-id", &id]);
    drop(cli);

    let b64 = base64::engine::general_purpose::STANDARD;
    let manifest = broker.data_dir().join("recordings").join(format!("{id}.manifest.json"));
    wait_for("the port session's recording", Duration::from_secs(30), || manifest.exists().then_some(()));
    let cast =
        std::fs::read_to_string(broker.data_dir().join("recordings").join(format!("{id}.cast"))).unwrap();
    assert!(cast.contains(&format!("conn 1 > {}", b64.encode(b"ping\n"))), "{cast}");
    assert!(cast.contains(&format!("conn 1 < {}", b64.encode(b"pong\x00\xff"))), "{cast}");
    let _: Vec<Value> = cast.lines().skip(1).map(|l| serde_json::from_str(l).unwrap()).collect();
}

fn a_port_session_without_connections_ends_at_the_idle_timeout() {
    let broker = Broker::start();
    let agent = broker.agent("a");
    broker.set_preferences(json!({ "idleSessionTimeout": "1" }));
    let started = Instant::now();
    let out = broker.port_forward(&agent.instance_id, 9).output().unwrap();
    assert!(started.elapsed() >= Duration::from_secs(60), "ended after {:?}", started.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 min without a connection (idleSessionTimeout)"), "{stderr}");
    // The client hears first; the recording is closed and delivered right after.
    wait_for("the recording's end reason", Duration::from_secs(10), || {
        let recordings = broker.api(&["recordings", "list"]);
        (recordings["Recordings"][0]["EndReason"] == "IdleTimeout").then_some(())
    });
}
