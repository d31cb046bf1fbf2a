//! A person's shell session end to end: broker, agent and the `airlock` CLI on a PTY.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{pty_cli, wait_for, Broker, Terminal};

fn history(broker: &Broker) -> Vec<serde_json::Value> {
    broker.api(&["describe-sessions", "--state", "History"])["Sessions"].as_array().unwrap().clone()
}

#[test]
fn interactive_shell_echo_resize_ctrl_c_and_exit_code() {
    let broker = Broker::start();
    let agent = broker.agent("a");
    let info = broker.wait_online(&agent.instance_id);
    assert_eq!(info["PlatformType"], "Linux");
    assert!(info["AgentVersion"].as_str().is_some_and(|v| !v.is_empty()), "{info}");
    assert!(info["ComputerName"].as_str().is_some_and(|v| !v.is_empty()), "{info}");
    assert!(info["IPAddress"].as_str().is_some_and(|v| !v.is_empty()), "{info}");

    let mut term = Terminal::spawn(pty_cli(&broker, &["start-session", "--target", &agent.instance_id]));
    term.expect("Starting session with SessionId");
    term.send("echo airlock-$((6*7))\r");
    term.expect("airlock-42");

    term.master
        .resize(portable_pty::PtySize { rows: 40, cols: 120, pixel_width: 0, pixel_height: 0 })
        .unwrap();
    // The resize travels as its own message; ask until the remote PTY reports it.
    wait_for("the remote PTY to be 40x120", Duration::from_secs(20), || {
        term.send("stty size\r");
        std::thread::sleep(Duration::from_millis(200));
        term.screen.lock().unwrap().contains("40 120").then_some(())
    });

    term.send("sleep 100; echo not-$((3+4))-interrupted\r");
    std::thread::sleep(Duration::from_millis(300));
    term.send("\x03");
    term.send("echo after-ctrl-c-$((1+1))\r");
    term.expect("after-ctrl-c-2");
    assert!(!term.screen.lock().unwrap().contains("not-7-interrupted"));

    term.send("exit 7\r");
    assert_eq!(term.wait(), 7, "the CLI exits with the remote shell's code");

    let sessions = history(&broker);
    let s = sessions.iter().find(|s| s["Target"] == agent.instance_id.as_str()).expect("session in history");
    assert_eq!(s["Status"], "Terminated");
    assert_eq!(s["DocumentName"], "SSM-SessionManagerRunShell");
    assert!(s["SessionId"].as_str().unwrap().starts_with("admin-"));
    let id = s["SessionId"].as_str().unwrap();
    // The local folder is a sink: the spool delivers the recording, then its manifest.
    let folder = broker.data_dir().join("recordings");
    let manifest: serde_json::Value = wait_for("the recording's manifest", Duration::from_secs(10), || {
        serde_json::from_slice(&std::fs::read(folder.join(format!("{id}.manifest.json"))).ok()?).ok()
    });
    let cast = std::fs::read_to_string(folder.join(format!("{id}.cast"))).unwrap();
    assert!(cast.contains("airlock-42"), "the recording holds the output");
    assert!(cast.contains("\"r\", \"120x40\""), "the recording holds the resize");
    assert!(cast.contains("exit code 7"));
    assert_eq!(manifest["exit_code"], 7);
    assert_eq!(manifest["size"], cast.len() as u64);
}

#[test]
fn non_interactive_command_keeps_stdout_and_stderr_apart() {
    let broker = Broker::start();
    let agent = broker.agent("a");
    let out = broker
        .command(&agent.instance_id, "echo out-$((1+1)); echo err-$((2+2)) >&2; exit 3")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stdout={stdout} stderr={stderr}");
    assert!(stdout.contains("out-2") && !stdout.contains("err-4"), "stdout={stdout}");
    assert!(stderr.contains("err-4") && !stderr.contains("out-2"), "stderr={stderr}");

    // A command reading the host's identity, as in the README.
    let out = broker.command(&agent.instance_id, "uname -a").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Linux"));
}

#[test]
fn terminate_session_ends_a_running_session() {
    let broker = Broker::start();
    let agent = broker.agent("a");
    let mut child = broker
        .command(&agent.instance_id, "echo started; sleep 300")
        .stdout(std::process::Stdio::null())
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
    let v = broker.api(&["terminate-session", "--session-id", &id]);
    assert_eq!(v["SessionId"], id.as_str());
    let status = wait_for("the CLI to exit", Duration::from_secs(20), || child.try_wait().unwrap());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    // The remote command was killed by the hang-up that terminate sends: 128 + SIGHUP, so a
    // script can tell that its command did not complete.
    assert_eq!(status.code(), Some(129), "stderr: {stderr}");
    let s = wait_for("the session in History", Duration::from_secs(10), || {
        history(&broker).into_iter().find(|s| s["SessionId"] == id.as_str())
    });
    assert_eq!(s["Status"], "Terminated");
    assert!(broker.api(&["describe-sessions", "--state", "Active"])["Sessions"]
        .as_array()
        .unwrap()
        .is_empty());
    // Terminating again is a no-op, an unknown id is an error.
    broker.api(&["terminate-session", "--session-id", &id]);
    let out =
        broker.cli().args(["terminate-session", "--session-id", "admin-00000000000000000"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("(DoesNotExistException)"));
}
