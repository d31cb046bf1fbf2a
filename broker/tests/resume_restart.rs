//! Sessions outlive their broker: the broker process is killed (SIGKILL) mid-session and a
//! new one started on the same data folder and address. The agent reconnects on its own,
//! the CLI resumes (ResumeSession to the new process), and the shell goes on: same process,
//! every key typed during the outage delivered once, output byte-exact, and the recording
//! continued in the same file holding each byte once (wire contract §2.4).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, SystemTime};

use common::{wait_for, Broker};
use serde_json::Value;

/// Kills the broker with SIGKILL (no shutdown of any kind), runs `during` while it is down,
/// and starts a new process on the same data folder and address, with the first one's
/// admin key.
fn kill_and_restart(broker: Broker, during: impl FnOnce()) -> Broker {
    let Broker { dir, url, key_id, secret, mut proc, log: _ } = broker;
    proc.0.kill().unwrap(); // SIGKILL
    proc.0.wait().unwrap();
    let listen = url.trim_start_matches("https://").trim_end_matches('/').to_owned();
    // The outage: the client and the agent keep trying meanwhile.
    during();
    std::thread::sleep(Duration::from_secs(2));
    let next = Broker::start_in(dir, &["--listen", &listen]);
    assert_eq!(next.url, url, "the new broker listens where the old one did");
    Broker { key_id, secret, ..next }
}

/// The numbers that follow `prefix` on the screen, in order.
fn numbers_after(screen: &str, prefix: &str) -> Vec<u64> {
    screen
        .match_indices(prefix)
        .filter_map(|(at, _)| {
            let digits: String =
                screen[at + prefix.len()..].chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse().ok()
        })
        .collect()
}

/// The concatenated text of a recording's events of `code` (`o` output, `i` input).
fn events(cast: &str, code: &str) -> String {
    cast.lines()
        .skip(1)
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v[1] == code)
        .map(|v| v[2].as_str().unwrap().to_owned())
        .collect()
}

/// What the CLI wrote to the terminal without its resume notes (on stderr, same terminal).
fn without_resume_notes(raw: &[u8]) -> String {
    let mut text = String::from_utf8(raw.to_vec()).unwrap();
    text = text.replacen("\r\nconnection lost \u{2014} resuming\u{2026}\r\n", "", 1);
    let at = text.find("resumed after ").unwrap();
    let end = at + text[at..].find(" s\r\n").unwrap() + 4;
    text.replace_range(at..end, "");
    text
}

fn live_session(broker: &Broker) -> String {
    wait_for("the session to be Connected", Duration::from_secs(20), || {
        let v = broker.api(&["describe-sessions", "--state", "Active"]);
        v["Sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Status"] == "Connected")
            .map(|s| s["SessionId"].as_str().unwrap().to_owned())
    })
}

fn session(broker: &Broker, id: &str) -> Option<Value> {
    ["Active", "History"].into_iter().find_map(|state| {
        let v = broker.api(&["describe-sessions", "--state", state]);
        v["Sessions"].as_array().unwrap().iter().find(|s| s["SessionId"] == id).cloned()
    })
}

#[test]
fn a_shell_survives_a_broker_kill_and_restart_with_nothing_lost_or_repeated() {
    let broker = Broker::start();
    let agent = broker.agent("a");
    let cmd = common::pty_cli(&broker, &["start-session", "--target", &agent.instance_id]);
    let mut term = common::Terminal::spawn(cmd);
    term.expect("Starting session with SessionId");
    let id = live_session(&broker);
    // Everything typed, in order: the recording's input must be exactly this.
    let mut typed = String::new();
    let mut send = |term: &mut common::Terminal, text: &str| {
        typed.push_str(text);
        term.send(text);
    };
    std::thread::sleep(Duration::from_millis(500));
    send(&mut term, "echo pid-$$\r");
    let pid_before = wait_for("the shell's pid", Duration::from_secs(20), || {
        numbers_after(&term.screen.lock().unwrap(), "pid-").first().copied()
    });
    // Output produced across the outage: the agent keeps it and resends it.
    send(&mut term, "for i in $(seq 1 60); do echo tick-$i; sleep 0.1; done\r");
    term.expect("tick-5");

    // Typed while the broker is down (the CLI keeps it), and after it is back.
    let broker = kill_and_restart(broker, || send(&mut term, "echo during-$((2+3))\r"));
    let restarted = std::time::Instant::now();
    wait_for("the resume", Duration::from_secs(120), || {
        term.screen.lock().unwrap().contains("resumed after").then_some(())
    });
    eprintln!("the CLI resumed {:?} after the new broker was up", restarted.elapsed());
    send(&mut term, "echo after-$((3+4))\r");
    term.expect("after-7");
    send(&mut term, "echo pid-$$\r");
    wait_for("the shell's pid again", Duration::from_secs(20), || {
        (numbers_after(&term.screen.lock().unwrap(), "pid-").len() == 2).then_some(())
    });
    let screen = term.screen.lock().unwrap().clone();
    let pids = numbers_after(&screen, "pid-");
    assert_eq!(pids, vec![pid_before, pid_before], "the same shell before and after: {screen}");
    assert_eq!(
        numbers_after(&screen, "tick-"),
        (1..=60).collect::<Vec<_>>(),
        "every tick once, in order: {screen}"
    );
    assert_eq!(screen.matches("during-5").count(), 1, "typed during the outage, run once: {screen}");
    assert_eq!(screen.matches("after-7").count(), 1, "{screen}");
    let log = broker.log.lock().unwrap().clone();
    assert!(log.contains("session resumed after a broker restart"), "{log}");
    assert_eq!(session(&broker, &id).unwrap()["Status"], "Connected");

    send(&mut term, "exit 3\r");
    assert_eq!(term.wait(), 3, "{}", term.screen.lock().unwrap());
    let cast_path = broker.data_dir().join("recordings").join(format!("{id}.cast"));
    let cast =
        wait_for("the recording", Duration::from_secs(20), || std::fs::read_to_string(&cast_path).ok());
    // One file, continued: one header, and each byte the client received recorded once.
    assert_eq!(cast.lines().filter(|l| l.starts_with('{')).count(), 1, "{cast}");
    let received = without_resume_notes(&term.raw.lock().unwrap());
    let recorded = events(&cast, "o");
    let at = received.find(&recorded).filter(|_| !recorded.is_empty()).unwrap_or_else(|| {
        panic!("the recording's output is not what the client received:\nreceived {received:?}\nrecorded {recorded:?}")
    });
    // Around it only the CLI's own banners: the client received nothing the recording lacks.
    let outside =
        format!("{}{}", &received[..at], &received[at + recorded.len()..]).replace(['\r', '\n'], "");
    assert_eq!(
        outside,
        format!("Starting session with SessionId: {id}Exiting session with sessionId: {id}.")
    );
    assert_eq!(events(&cast, "i"), typed, "every key recorded once, in order");
    let s = session(&broker, &id).unwrap();
    assert_eq!(s["Status"], "Terminated", "{s}");
}

#[test]
fn after_a_restart_only_the_owner_resumes_a_live_session_and_an_ended_one_stays_ended() {
    let broker = Broker::start();
    let agent = broker.agent("a");
    broker.api(&["iam", "create-user", "--user-name", "mallory"]);
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
    let (kid, ksecret) = (
        key["AccessKey"]["AccessKeyId"].as_str().unwrap().to_owned(),
        key["AccessKey"]["SecretAccessKey"].as_str().unwrap().to_owned(),
    );
    let spawn = |script: &str| {
        broker
            .command(&agent.instance_id, script)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut ended = spawn("echo started; sleep 120");
    let ended_id = live_session(&broker);
    broker.api(&["terminate-session", "--session-id", &ended_id]);
    let _ = ended.wait();
    let mut live = common::Proc(spawn("echo started; sleep 120"));
    let live_id = wait_for("the second session", Duration::from_secs(20), || {
        let v = broker.api(&["describe-sessions", "--state", "Active"]);
        v["Sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Status"] == "Connected" && s["SessionId"] != ended_id.as_str())
            .map(|s| s["SessionId"].as_str().unwrap().to_owned())
    });

    let broker = kill_and_restart(broker, || {});
    let resume = |id: &str, kid: &str, secret: &str| {
        broker.raw_call(
            "ResumeSession",
            &format!(r#"{{"SessionId":"{id}"}}"#),
            kid,
            secret,
            SystemTime::now(),
        )
    };
    // The restarted broker adopted the live session: its owner may resume it, nobody else.
    let (status, v) = resume(&live_id, &broker.key_id, &broker.secret);
    assert_eq!(status, 200, "{v}");
    let (status, v) = resume(&live_id, &kid, &ksecret);
    assert_eq!((status, v["__type"].as_str()), (400, Some("AccessDeniedException")), "{v}");
    // The ended one stays ended.
    let (status, v) = resume(&ended_id, &broker.key_id, &broker.secret);
    assert_eq!((status, v["__type"].as_str()), (400, Some("InvalidParameters")), "{v}");
    assert_eq!(session(&broker, &ended_id).unwrap()["Status"], "Terminated");
    // The CLI of the live session comes back on its own.
    wait_for("the live session to be Connected again", Duration::from_secs(120), || {
        (session(&broker, &live_id).unwrap()["Status"] == "Connected").then_some(())
    });
    assert!(live.0.try_wait().unwrap().is_none(), "the CLI still runs its session");
    broker.api(&["terminate-session", "--session-id", &live_id]);
    wait_for("the CLI to end", Duration::from_secs(20), || live.0.try_wait().unwrap());
}

#[test]
fn a_session_whose_agent_does_not_come_back_after_a_restart_fails_with_a_clear_reason() {
    let broker = Broker::start();
    broker.set_preferences(serde_json::json!({ "resumeWindowSeconds": 4 }));
    let agent = broker.agent("a");
    let _cli = common::Proc(
        broker
            .command(&agent.instance_id, "echo started; sleep 120")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let id = live_session(&broker);
    drop(agent); // the agent's host is gone
    let broker = kill_and_restart(broker, || {});
    let s = wait_for("the session to end", Duration::from_secs(30), || {
        session(&broker, &id).filter(|s| s["Status"] != "Disconnected" && s["Status"] != "Connected")
    });
    assert_eq!(s["Status"], "Failed", "{s}");
    let details = s["Details"].as_str().unwrap();
    assert!(details.contains("broker restarted") && details.contains("resume window of 4 s"), "{s}");
    // Its recording was continued and closed in the same file.
    let cast = wait_for("the recording", Duration::from_secs(20), || {
        std::fs::read_to_string(broker.data_dir().join("recordings").join(format!("{id}.cast"))).ok()
    });
    assert_eq!(events(&cast, "o"), "started\n");
    assert!(
        cast.contains("session ended: AgentLost") || cast.contains("session ended: ClientLost"),
        "{cast}"
    );
}

#[test]
fn output_produced_while_the_broker_is_down_longer_than_quics_idle_timeout_arrives_once_in_order() {
    let broker = Broker::start();
    let agent = broker.agent("a");
    // One numbered line every 100 ms for 50 s: most are produced while the broker is down.
    let script = "i=0; while [ $i -lt 500 ]; do i=$((i+1)); echo line-$i; sleep 0.1; done; echo done; exit 7";
    let child = broker
        .command(&agent.instance_id, script)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = live_session(&broker);
    std::thread::sleep(Duration::from_secs(2));
    // Down for longer than QUIC's 30 s idle timeout: client and agent see their links time
    // out, not reset, and retry with backoff until the new broker answers.
    let broker = kill_and_restart(broker, || std::thread::sleep(Duration::from_secs(36)));
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "stderr: {stderr}\nbroker: {}", broker.log.lock().unwrap());
    let expected: String = (1..=500).map(|i| format!("line-{i}\n")).collect::<String>() + "done\n";
    assert!(
        stdout == expected,
        "output differs: {} bytes, expected {}; stderr: {stderr}",
        stdout.len(),
        expected.len()
    );
    assert!(stderr.contains("connection lost") && stderr.contains("resumed after"), "stderr: {stderr}");
    let cast = wait_for("the recording", Duration::from_secs(20), || {
        std::fs::read_to_string(broker.data_dir().join("recordings").join(format!("{id}.cast"))).ok()
    });
    assert_eq!(events(&cast, "o"), expected, "the recording holds each byte once");
    assert_eq!(session(&broker, &id).unwrap()["Status"], "Terminated");
}
