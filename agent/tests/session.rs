//! Session driver over an in-memory pipe, playing the broker's side of wire contract §2.2.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use airlock_agent::session::{
    serve, ForwardConfig, LiveSessions, SessionLimits, SessionReport, StreamReport,
};
use airlock_agent::Error;
use airlock_proto::{CloseReason, Control, Frame, FrameKind, FramedStream, SessionSpec, MAX_FRAME_LEN};
use bytes::Bytes;
use futures_util::SinkExt;
use tokio::io::{DuplexStream, ReadHalf, WriteHalf};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

/// Upper bound for anything a test waits for; a healthy run takes a fraction of it.
const PATIENCE: Duration = Duration::from_secs(30);

struct Broker {
    stream: FramedStream<ReadHalf<DuplexStream>, WriteHalf<DuplexStream>>,
    seq: u64,
    /// The agent's last acknowledgement of input.
    acked: u64,
}

fn start(limits: SessionLimits) -> (Broker, JoinHandle<Result<SessionReport, Error>>) {
    start_in(limits, LiveSessions::default())
}

/// A broker-opened stream served by an agent whose live sessions are `live`.
fn stream_to(limits: SessionLimits, live: LiveSessions) -> (Broker, JoinHandle<Result<StreamReport, Error>>) {
    let (ours, agents) = tokio::io::duplex(64 * 1024);
    let (r, w) = tokio::io::split(agents);
    let task = tokio::spawn(async move { serve(r, w, &limits, &ForwardConfig::default(), &live).await });
    let (r, w) = tokio::io::split(ours);
    (Broker { stream: FramedStream::new(r, w, MAX_FRAME_LEN), seq: 0, acked: 0 }, task)
}

fn start_in(limits: SessionLimits, live: LiveSessions) -> (Broker, JoinHandle<Result<SessionReport, Error>>) {
    let (ours, agents) = tokio::io::duplex(64 * 1024);
    let (r, w) = tokio::io::split(agents);
    let task = tokio::spawn(async move {
        serve(r, w, &limits, &ForwardConfig::default(), &live).await.map(|report| match report {
            StreamReport::Session(report) => report,
            other => panic!("expected a session, got {other:?}"),
        })
    });
    let (r, w) = tokio::io::split(ours);
    (Broker { stream: FramedStream::new(r, w, MAX_FRAME_LEN), seq: 0, acked: 0 }, task)
}

impl Broker {
    async fn control(&mut self, msg: Control) {
        self.stream.send_control(&msg).await.unwrap();
    }

    async fn open(&mut self, spec: SessionSpec) {
        self.control(Control::Open { session_id: "tester-0123456789abcdef0".into(), spec }).await;
        assert_eq!(self.next_control().await, Control::Started);
    }

    async fn type_in(&mut self, text: &str) {
        let frame = Frame::data(self.seq, Bytes::copy_from_slice(text.as_bytes()));
        self.seq += 1;
        self.stream.send(frame).await.unwrap();
    }

    /// The next frame other than an acknowledgement of input (remembered in `acked`);
    /// panics on end of stream or when nothing comes within PATIENCE.
    async fn next(&mut self) -> Frame {
        loop {
            match timeout(PATIENCE, self.stream.recv()).await {
                Ok(Ok(Some(frame))) => match frame.to_control() {
                    Ok(Control::Ack { next }) => {
                        assert!(next >= self.acked, "acknowledgements never go back");
                        self.acked = next;
                    }
                    _ => return frame,
                },
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    }

    async fn next_control(&mut self) -> Control {
        self.next().await.to_control().unwrap()
    }

    /// Reads output until it contains `needle`; returns everything read.
    async fn read_until(&mut self, needle: &str) -> String {
        let mut seen = String::new();
        while !seen.contains(needle) {
            let frame = self.next().await;
            match frame.kind {
                FrameKind::Data => seen.push_str(&String::from_utf8_lossy(&frame.payload)),
                _ => panic!("{:?} before {needle:?}; output so far: {seen:?}", frame.to_control()),
            }
        }
        seen
    }

    /// Reads to the `Exit`, skipping output; returns the code.
    async fn read_exit(&mut self) -> i32 {
        loop {
            let frame = self.next().await;
            if frame.kind == FrameKind::Control {
                match frame.to_control().unwrap() {
                    Control::Exit { code } => return code,
                    other => panic!("expected Exit, got {other:?}"),
                }
            }
        }
    }

    async fn expect_end(&mut self) {
        let end = timeout(PATIENCE, self.stream.recv()).await.unwrap().unwrap();
        assert!(end.is_none(), "expected the stream to finish, got {end:?}");
    }
}

fn command(cmd: &str) -> SessionSpec {
    SessionSpec::Command { command: cmd.into(), run_as: None }
}

fn shell() -> SessionSpec {
    shell_with("xterm", None, None)
}

fn shell_with(term: &str, run_as: Option<&str>, profile: Option<&str>) -> SessionSpec {
    SessionSpec::Shell {
        cols: 80,
        rows: 24,
        term: term.into(),
        run_as: run_as.map(Into::into),
        profile: profile.map(Into::into),
    }
}

#[tokio::test]
async fn shell_runs_resizes_and_exits_with_code() {
    let (mut broker, task) = start(SessionLimits::default());
    broker.open(shell()).await;
    // The terminal echoes the input line, but only the shell's arithmetic produces "airlock-42".
    broker.type_in("echo airlock-$((40+2))\n").await;
    broker.read_until("airlock-42").await;

    broker.control(Control::Resize { cols: 120, rows: 40 }).await;
    broker.type_in("stty size\n").await;
    broker.read_until("40 120").await;

    broker.type_in("echo \"term=$TERM\"\n").await;
    broker.read_until("term=xterm").await;

    broker.type_in("exit 7\n").await;
    assert_eq!(broker.read_exit().await, 7);
    broker.expect_end().await;
    let report = task.await.unwrap().unwrap();
    assert_eq!(report.exit_code, Some(7));
    assert_eq!(report.session_id.as_str(), "tester-0123456789abcdef0");
}

#[tokio::test]
async fn command_keeps_stdout_and_stderr_apart() {
    let (mut broker, task) = start(SessionLimits::default());
    broker.open(command("echo out; echo err >&2; exit 3")).await;
    let (mut stdout, mut stderr, mut seqs) = (Vec::new(), Vec::new(), Vec::new());
    let code = loop {
        let frame = broker.next().await;
        match frame.kind {
            FrameKind::Data => stdout.extend_from_slice(&frame.payload),
            FrameKind::Stderr => stderr.extend_from_slice(&frame.payload),
            FrameKind::Control => match frame.to_control().unwrap() {
                Control::Exit { code } => break code,
                other => panic!("unexpected {other:?}"),
            },
        }
        seqs.push(frame.seq);
    };
    assert_eq!(String::from_utf8(stdout).unwrap(), "out\n");
    assert_eq!(String::from_utf8(stderr).unwrap(), "err\n");
    assert_eq!(code, 3);
    let expected: Vec<u64> = (0..seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "one counter for both kinds, from 0");
    broker.expect_end().await;
    assert_eq!(task.await.unwrap().unwrap().exit_code, Some(3));
}

#[tokio::test]
async fn large_output_arrives_whole_in_bounded_chunks() {
    let (mut broker, _task) = start(SessionLimits::default());
    broker.open(command("head -c 3000000 /dev/zero")).await;
    let mut total = 0usize;
    let code = loop {
        let frame = broker.next().await;
        match frame.kind {
            FrameKind::Data => {
                // Reads of up to 32 KiB, merged up to 64 KiB per frame when several wait.
                assert!(frame.payload.len() <= 64 * 1024, "chunk of {}", frame.payload.len());
                assert!(frame.payload.iter().all(|&b| b == 0));
                total += frame.payload.len();
            }
            FrameKind::Stderr => panic!("stderr: {:?}", frame.payload),
            FrameKind::Control => match frame.to_control().unwrap() {
                Control::Exit { code } => break code,
                other => panic!("unexpected {other:?}"),
            },
        }
    };
    assert_eq!((code, total), (0, 3_000_000));
}

#[tokio::test]
async fn close_terminates_a_command_quickly() {
    let (mut broker, task) = start(SessionLimits::default());
    broker.open(command("sleep 100")).await;
    let asked = Instant::now();
    broker
        .control(Control::Close { reason: CloseReason::Terminated, message: "TerminateSession".into() })
        .await;
    let code = broker.read_exit().await;
    assert!(code == 128 + 1 || code == 128 + 9, "exit code {code}");
    assert!(asked.elapsed() < Duration::from_secs(10), "took {:?}", asked.elapsed());
    broker.expect_end().await;
    assert!(task.await.unwrap().is_ok());
}

#[tokio::test]
async fn sighup_ignored_means_sigkill_after_the_grace() {
    let limits = SessionLimits { kill_grace: Duration::from_millis(300), ..SessionLimits::default() };
    let (mut broker, _task) = start(limits);
    // The shell ignores SIGHUP for itself and the sleep it runs in the foreground.
    broker.open(command("trap '' HUP; echo armed; sleep 100; echo survived")).await;
    // Only once the trap is set does SIGHUP meet a process that ignores it.
    broker.read_until("armed").await;
    broker.control(Control::Close { reason: CloseReason::Terminated, message: String::new() }).await;
    assert_eq!(broker.read_exit().await, 128 + 9);
}

#[tokio::test]
async fn peer_going_away_keeps_the_process_for_the_window_then_kills_it() {
    let limits = SessionLimits { resume_window: Duration::from_millis(300), ..SessionLimits::default() };
    let (mut broker, task) = start(limits);
    broker.open(command("echo $$; exec sleep 100")).await;
    let pid: i32 = broker.read_until("\n").await.trim().parse().unwrap();
    // The broker finishes its side without a Close: a detach, not an end.
    broker.stream.writer.close().await.unwrap();
    drop(broker);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(process_exists(pid), "the process must live through the resume window");
    let report = timeout(PATIENCE, task).await.unwrap().unwrap().unwrap();
    assert_eq!(report.exit_code, None, "nobody re-attached to take an exit code");
    let gone = Instant::now() + Duration::from_secs(10);
    while process_exists(pid) && Instant::now() < gone {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!process_exists(pid), "the process must be killed when the window passes");
}

fn process_exists(pid: i32) -> bool {
    // A zombie still has a /proc entry; its state says it is dead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

/// Reads output frames until `needle` shows; returns (text, next frame number expected).
async fn read_numbered_until(broker: &mut Broker, needle: &str, mut next: u64) -> (String, u64) {
    let mut seen = String::new();
    while !seen.contains(needle) {
        let frame = broker.next().await;
        assert_eq!(frame.kind, FrameKind::Data, "{:?}", frame.to_control());
        assert_eq!(frame.seq, next, "output frames are numbered without gaps");
        next += 1;
        seen.push_str(&String::from_utf8_lossy(&frame.payload));
    }
    (seen, next)
}

#[tokio::test]
async fn reattach_resends_unacknowledged_output_and_skips_delivered_input() {
    let live = LiveSessions::default();
    let (mut first, task) = start_in(SessionLimits::default(), live.clone());
    first.open(shell()).await;
    first.type_in("stty -echo; echo one-$((1+0))\n").await;
    let (_, next) = read_numbered_until(&mut first, "one-1", 0).await;
    // The client acknowledged nothing; the stream goes away (the link dropped).
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(live.len(), 1);

    let (mut second, attach) = stream_to(SessionLimits::default(), live.clone());
    second.control(Control::Attach { session_id: "tester-0123456789abcdef0".into(), resend_from: 0 }).await;
    assert!(matches!(timeout(PATIENCE, attach).await.unwrap().unwrap().unwrap(), StreamReport::Attached(_)));
    // One input frame was delivered before the cut.
    assert_eq!(second.next_control().await, Control::Attached { input_next: 1 });
    // Everything unacknowledged comes again, numbered as before.
    let (again, resent_to) = read_numbered_until(&mut second, "one-1", 0).await;
    assert!(again.contains("one-1"));
    assert!(resent_to <= next);
    second.control(Control::Ack { next: resent_to }).await;
    // Input resent from 0: frame 0 is skipped (already typed), frame 1 runs once.
    second.seq = 0;
    second.type_in("echo one-$((1+0))\n").await;
    second.type_in("echo two-$((1+1)); exit 3\n").await;
    let mut rest = String::new();
    let code = loop {
        let frame = second.next().await;
        match frame.kind {
            FrameKind::Control => match frame.to_control().unwrap() {
                Control::Exit { code } => break code,
                other => panic!("unexpected {other:?}"),
            },
            _ => rest.push_str(&String::from_utf8_lossy(&frame.payload)),
        }
    };
    assert_eq!(code, 3);
    assert_eq!(second.acked, 2, "both input frames acknowledged");
    assert!(rest.contains("two-2"), "{rest:?}");
    assert!(!rest.contains("one-1"), "input delivered twice: {rest:?}");
    assert_eq!(timeout(PATIENCE, task).await.unwrap().unwrap().unwrap().exit_code, Some(3));
    assert!(live.is_empty());
}

#[tokio::test]
async fn attach_to_an_unknown_session_is_gone() {
    let (mut broker, task) = stream_to(SessionLimits::default(), LiveSessions::default());
    broker.control(Control::Attach { session_id: "tester-0123456789abcdef0".into(), resend_from: 0 }).await;
    match broker.next_control().await {
        Control::Close { reason: CloseReason::Gone, .. } => {}
        other => panic!("expected Close(Gone), got {other:?}"),
    }
    broker.expect_end().await;
    assert!(timeout(PATIENCE, task).await.unwrap().is_ok());
}

#[tokio::test]
async fn output_waits_when_the_kept_buffer_is_full() {
    let live = LiveSessions::default();
    let (mut broker, task) = start_in(SessionLimits::default(), live);
    // 3 × the buffer, never acknowledged: the agent keeps at most the buffer and the command
    // blocks until acknowledgements free room.
    let total = 3 * airlock_agent::session::OUTPUT_BUFFER;
    broker.open(command(&format!("head -c {total} /dev/zero; echo; echo done"))).await;
    let mut got = 0usize;
    let mut next = 0u64;
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        match timeout(Duration::from_millis(200), broker.stream.recv()).await {
            Ok(Ok(Some(f))) if f.kind == FrameKind::Data => {
                got += f.payload.len();
                next = f.seq + 1;
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => {}
        }
    }
    assert!(got <= airlock_agent::session::OUTPUT_BUFFER + 64 * 1024, "sent {got} bytes unacknowledged");
    assert!(got > 0);
    // Acknowledging lets the rest through, all of it.
    let mut seen = got;
    let mut text = Vec::new();
    broker.control(Control::Ack { next }).await;
    let code = loop {
        let f = broker.next().await;
        match f.kind {
            FrameKind::Control => match f.to_control().unwrap() {
                Control::Exit { code } => break code,
                other => panic!("unexpected {other:?}"),
            },
            _ => {
                seen += f.payload.len();
                text.extend_from_slice(&f.payload[f.payload.len().saturating_sub(8)..]);
                // The agent may have finished (Exit sent) before reading the last ones.
                let _ = broker.stream.send_control(&Control::Ack { next: f.seq + 1 }).await;
            }
        }
    };
    assert_eq!(code, 0);
    assert_eq!(seen, total + "\ndone\n".len());
    assert!(String::from_utf8_lossy(&text).contains("done"));
    assert!(timeout(PATIENCE, task).await.unwrap().is_ok());
}

#[tokio::test]
async fn close_ends_a_shell() {
    let (mut broker, _task) = start(SessionLimits::default());
    broker.open(shell()).await;
    broker.type_in("echo ready-$((1+1))\n").await;
    broker.read_until("ready-2").await;
    broker.control(Control::Close { reason: CloseReason::Terminated, message: String::new() }).await;
    let code = broker.read_exit().await;
    assert!(code == 128 + 1 || code == 128 + 9, "exit code {code}");
    broker.expect_end().await;
}

#[tokio::test]
async fn garbage_first_frame_is_a_protocol_error() {
    let (mut broker, task) = start(SessionLimits::default());
    broker.type_in("ls\n").await;
    match broker.next_control().await {
        Control::Close { reason: CloseReason::ProtocolError, message } => {
            assert!(message.contains("Open"), "{message}")
        }
        other => panic!("expected Close{{ProtocolError}}, got {other:?}"),
    }
    broker.expect_end().await;
    assert!(matches!(task.await.unwrap(), Err(Error::Protocol(_))));
}

#[tokio::test]
async fn missing_open_times_out() {
    let limits = SessionLimits { open_timeout: Duration::from_millis(100), ..SessionLimits::default() };
    let (mut broker, task) = start(limits);
    match broker.next_control().await {
        Control::Close { reason: CloseReason::ProtocolError, .. } => {}
        other => panic!("expected Close{{ProtocolError}}, got {other:?}"),
    }
    broker.expect_end().await;
    assert!(task.await.unwrap().is_err());
}

#[tokio::test]
async fn bad_session_id_is_a_protocol_error() {
    let (mut broker, _task) = start(SessionLimits::default());
    broker.control(Control::Open { session_id: "no spaces allowed".into(), spec: command("true") }).await;
    assert!(matches!(broker.next_control().await, Control::Close { reason: CloseReason::ProtocolError, .. }));
}

#[tokio::test]
async fn spawn_failure_is_start_failed() {
    let (mut broker, task) = start(SessionLimits::default());
    // A NUL byte cannot go into the environment, so the shell cannot be started.
    let spec = shell_with("xterm\0bad", None, None);
    broker.control(Control::Open { session_id: "tester-1".into(), spec }).await;
    match broker.next_control().await {
        Control::Close { reason: CloseReason::StartFailed, message } => assert!(!message.is_empty()),
        other => panic!("expected Close{{StartFailed}}, got {other:?}"),
    }
    broker.expect_end().await;
    assert_eq!(task.await.unwrap().unwrap().exit_code, None);
}

/// The user the tests run as (and so the agent under test).
fn current_user() -> String {
    let uid = nix::unistd::Uid::effective();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        other => panic!("uid {uid} has no password entry: {other:?}"),
    }
}

/// Reads a command's session to its `Exit`: stdout, stderr and the code.
async fn read_command(broker: &mut Broker) -> (String, String, i32) {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    loop {
        let frame = broker.next().await;
        match frame.kind {
            FrameKind::Data => stdout.extend_from_slice(&frame.payload),
            FrameKind::Stderr => stderr.extend_from_slice(&frame.payload),
            FrameKind::Control => match frame.to_control().unwrap() {
                Control::Exit { code } => {
                    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
                    return (text(stdout), text(stderr), code);
                }
                other => panic!("unexpected {other:?}"),
            },
        }
    }
}

/// Sends `Open` and expects the session to be refused with `Close{StartFailed}`; returns
/// the message.
async fn open_refused(spec: SessionSpec) -> String {
    let (mut broker, task) = start(SessionLimits::default());
    broker.control(Control::Open { session_id: "tester-2".into(), spec }).await;
    let message = match broker.next_control().await {
        Control::Close { reason: CloseReason::StartFailed, message } => message,
        other => panic!("expected Close{{StartFailed}}, got {other:?}"),
    };
    broker.expect_end().await;
    assert_eq!(task.await.unwrap().unwrap().exit_code, None);
    message
}

#[tokio::test]
async fn run_as_the_agents_own_user_runs_normally() {
    let me = current_user();
    let (mut broker, _task) = start(SessionLimits::default());
    broker.open(shell_with("xterm", Some(&me), None)).await;
    broker.type_in("echo \"who=$(id -un)\"\n").await;
    broker.read_until(&format!("who={me}\r\n")).await;
    broker.type_in("exit 0\n").await;
    assert_eq!(broker.read_exit().await, 0);

    let (mut broker, _task) = start(SessionLimits::default());
    broker.open(SessionSpec::Command { command: "id -un".into(), run_as: Some(me.clone()) }).await;
    assert_eq!(read_command(&mut broker).await, (format!("{me}\n"), String::new(), 0));
}

#[tokio::test]
async fn run_as_an_unknown_user_fails_to_start() {
    let expected = r#"run-as user "airlock-no-such-user" does not exist on this host"#;
    let shell = shell_with("xterm", Some("airlock-no-such-user"), Some("echo never"));
    assert_eq!(open_refused(shell).await, expected);
    let command =
        SessionSpec::Command { command: "true".into(), run_as: Some("airlock-no-such-user".into()) };
    assert_eq!(open_refused(command).await, expected);
}

/// The user the root-only run-as tests switch to; scripts/test.sh creates it.
const RUN_AS_USER: &str = "airlock-runas";

/// `airlock-runas`'s password entry when the tests run as root; `None` (the test is skipped,
/// with the reason printed) otherwise. A missing user fails the test.
fn run_as_user() -> Option<nix::unistd::User> {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: switching to another user needs root, and the tests run as {}", current_user());
        return None;
    }
    match nix::unistd::User::from_name(RUN_AS_USER) {
        Ok(Some(user)) => Some(user),
        other => panic!(
            "the test user {RUN_AS_USER} is missing ({other:?}); create it as scripts/test.sh does: \
             useradd --create-home --shell /bin/bash {RUN_AS_USER}"
        ),
    }
}

#[tokio::test]
async fn run_as_another_user_starts_a_login_shell_as_that_user() {
    let Some(user) = run_as_user() else { return };
    let home = user.dir.display().to_string();
    let (mut broker, task) = start(SessionLimits::default());
    // The profile runs as that user too.
    broker.open(shell_with("xterm", Some(RUN_AS_USER), Some("export AIRLOCK_PROFILE_MARK=run-as"))).await;
    // The echoed input holds the unexpanded text, so only the shell's output matches.
    broker.type_in("echo \"who=$(id -un) uid=$(id -u) pwd=$(pwd) home=$HOME\"\n").await;
    broker.read_until(&format!("who={RUN_AS_USER} uid={} pwd={home} home={home}\r\n", user.uid)).await;
    broker.type_in("echo \"user=$USER logname=$LOGNAME shell=$SHELL term=$TERM\"\n").await;
    broker
        .read_until(&format!("user={RUN_AS_USER} logname={RUN_AS_USER} shell=/bin/bash term=xterm\r\n"))
        .await;
    // Nothing of the agent's environment: cargo sets CARGO_PKG_NAME for this test process.
    assert!(std::env::var_os("CARGO_PKG_NAME").is_some());
    broker.type_in("echo \"leak=${CARGO_PKG_NAME-none} mark=$AIRLOCK_PROFILE_MARK\"\n").await;
    broker.read_until("leak=none mark=run-as\r\n").await;
    // The terminal is the user's, as after a login.
    broker.type_in("echo \"tty-owner=$(stat -c %U \"$(tty)\")\"\n").await;
    broker.read_until(&format!("tty-owner={RUN_AS_USER}\r\n")).await;
    broker.type_in("exit 5\n").await;
    assert_eq!(broker.read_exit().await, 5);
    broker.expect_end().await;
    assert_eq!(task.await.unwrap().unwrap().exit_code, Some(5));
}

#[tokio::test]
async fn run_as_another_user_runs_a_command_as_that_user() {
    let Some(user) = run_as_user() else { return };
    let name = std::ffi::CString::new(RUN_AS_USER).unwrap();
    let groups: Vec<String> =
        nix::unistd::getgrouplist(&name, user.gid).unwrap().iter().map(|g| g.to_string()).collect();
    let (mut broker, _task) = start(SessionLimits::default());
    let command =
        "id -un; id -u; id -g; id -G; pwd; echo \"$HOME $USER $LOGNAME ${CARGO_PKG_NAME-none} ${TERM-none}\"";
    broker.open(SessionSpec::Command { command: command.into(), run_as: Some(RUN_AS_USER.into()) }).await;
    let (stdout, stderr, code) = read_command(&mut broker).await;
    let home = user.dir.display();
    let expected = format!(
        "{RUN_AS_USER}\n{}\n{}\n{}\n{home}\n{home} {RUN_AS_USER} {RUN_AS_USER} none none\n",
        user.uid,
        user.gid,
        groups.join(" ")
    );
    assert_eq!((stdout.as_str(), stderr.as_str(), code), (expected.as_str(), "", 0));
}

#[tokio::test]
async fn run_as_another_user_needs_root() {
    let me = current_user();
    if me == "root" {
        eprintln!("skipped: the agent runs as root here, so it may switch users");
        return;
    }
    let expected = format!(r#"run-as user "root" needs the agent to run as root (it runs as "{me}")"#);
    assert_eq!(open_refused(shell_with("xterm", Some("root"), None)).await, expected);
}

#[tokio::test]
async fn shell_profile_is_typed_in_first() {
    let (mut broker, _task) = start(SessionLimits::default());
    broker.open(shell_with("xterm", None, Some("export AIRLOCK_PROFILE_MARK=42"))).await;
    broker.type_in("echo \"mark=$AIRLOCK_PROFILE_MARK\"\n").await;
    broker.read_until("mark=42\r\n").await;
    broker.type_in("exit\n").await;
    assert_eq!(broker.read_exit().await, 0);
}
