//! A full disk under the spool: the relay stops the session before a byte it could not
//! record reaches the other side. The failure is real (`ENOSPC` from `/dev/full`), not a
//! hook in the recorder.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use airlock_proto::{CloseReason, Control, Frame, FrameKind, FramedStream};
use airlock_recordings::{EndReason, Recorder, RecordingMeta};
use airlock_relay::{splice, Limits, SpliceOutcome};
use bytes::Bytes;
use tokio::io::{DuplexStream, ReadHalf, WriteHalf};
use tokio_util::sync::CancellationToken;

type Side = FramedStream<ReadHalf<DuplexStream>, WriteHalf<DuplexStream>>;

struct Harness {
    client: Side,
    agent: Side,
    dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<SpliceOutcome>,
}

fn pair() -> (Side, Side) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    (FramedStream::new(ar, aw, 1 << 22), FramedStream::new(br, bw, 1 << 20))
}

async fn start() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let meta = RecordingMeta {
        session_id: "admin-0123".into(),
        target: "mi-0123456789abcdef0".into(),
        owner: "admin".into(),
        document: "SSM-SessionManagerRunShell".into(),
        width: 80,
        height: 24,
        term: "xterm".into(),
    };
    let (spool, _no_shipper) = airlock_recordings::Spool::open(dir.path(), 1 << 30).unwrap();
    let recorder = Recorder::create(&spool, meta, &[]).await.unwrap();
    let (client, relay_client) = pair();
    let (agent, relay_agent) = pair();
    let task = tokio::spawn(splice(
        relay_client.split(),
        relay_agent.split(),
        recorder,
        CancellationToken::new(),
        Limits::default(),
    ));
    Harness { client, agent, dir, task }
}

async fn next(side: &mut Side) -> Frame {
    tokio::time::timeout(Duration::from_secs(10), side.recv()).await.unwrap().unwrap().unwrap()
}

/// Makes the disk under `dir` full for the recording open there: each descriptor of the spool
/// file is pointed at `/dev/full`, so every later write fails with `ENOSPC` as on a full disk.
fn fill_disk_under(dir: &Path) {
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let mut swapped = 0;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let entry = entry.unwrap();
        let Ok(target) = std::fs::read_link(entry.path()) else { continue };
        if target.starts_with(dir) && target.extension().is_some_and(|e| e == "part") {
            let fd: i32 = entry.file_name().to_str().unwrap().parse().unwrap();
            // SAFETY: dup2 onto a descriptor this process holds open; it stays open and only
            // its file changes, so the recorder's handle stays valid.
            #[allow(unsafe_code)]
            let done = unsafe { libc::dup2(full.as_raw_fd(), fd) };
            assert!(done >= 0, "dup2: {}", std::io::Error::last_os_error());
            swapped += 1;
        }
    }
    assert!(swapped > 0, "no open recording under {dir:?}");
}

/// The first frames `side` gets until a close: the data frames, then the close's message.
async fn data_until_internal_close(side: &mut Side) -> (Vec<Bytes>, String) {
    let mut got = Vec::new();
    loop {
        let f = next(side).await;
        match f.kind {
            FrameKind::Data | FrameKind::Stderr => got.push(f.payload),
            FrameKind::Control => match f.to_control().unwrap() {
                Control::Close { reason: CloseReason::Internal, message } => return (got, message),
                // The agent's exit status is passed on before the close.
                Control::Exit { .. } => {}
                other => panic!("unexpected {other:?}"),
            },
        }
    }
}

#[tokio::test]
async fn input_that_cannot_be_recorded_never_reaches_the_agent() {
    let mut h = start().await;
    h.client.send(Frame::data(0, Bytes::from_static(b"recorded\r"))).await.unwrap();
    assert_eq!(&next(&mut h.agent).await.payload[..], b"recorded\r");
    fill_disk_under(h.dir.path());
    h.client.send(Frame::data(1, Bytes::from_static(b"rm -rf /tmp/x\r"))).await.unwrap();
    let (got, message) = data_until_internal_close(&mut h.agent).await;
    assert!(got.is_empty(), "unrecorded input reached the agent: {got:?}");
    assert!(message.contains("No space left"), "{message}");
    h.agent.send_control(&Control::Exit { code: 129 }).await.unwrap();
    drop(h.agent);
    let (got, to_client) = data_until_internal_close(&mut h.client).await;
    assert!(got.is_empty(), "{got:?}");
    assert!(to_client.contains("No space left"), "{to_client}");
    let outcome = h.task.await.unwrap();
    assert_eq!(outcome.end, EndReason::ProtocolError);
    assert_eq!(outcome.bytes_from_client, 9, "only the recorded keys were forwarded");
}

#[tokio::test]
async fn output_that_cannot_be_recorded_never_reaches_the_client() {
    let mut h = start().await;
    h.agent.send(Frame::data(0, Bytes::from_static(b"seen\r\n"))).await.unwrap();
    assert_eq!(&next(&mut h.client).await.payload[..], b"seen\r\n");
    fill_disk_under(h.dir.path());
    h.agent.send(Frame::data(1, Bytes::from_static(b"secret\r\n"))).await.unwrap();
    let (got, message) = data_until_internal_close(&mut h.client).await;
    assert!(got.is_empty(), "unrecorded output reached the client: {got:?}");
    assert!(message.contains("recording failed") && message.contains("No space left"), "{message}");
    let outcome = h.task.await.unwrap();
    assert_eq!(outcome.end, EndReason::ProtocolError);
    assert_eq!(outcome.bytes_from_agent, 6);
}
