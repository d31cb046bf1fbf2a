use super::*;

#[test]
fn release_drops_only_acknowledged_frames() {
    let mut kept = Kept::default();
    for n in 0..4u64 {
        kept.frames.push_back(Frame::data(n, Bytes::from(vec![0u8; 10])));
        kept.bytes += 10;
        kept.next += 1;
    }
    kept.release(2);
    assert_eq!((kept.first, kept.bytes, kept.frames.len()), (2, 20, 2));
    assert!(kept.get(1).is_none());
    assert_eq!(kept.get(2).map(|f| f.seq), Some(2));
    // An acknowledgement beyond what was produced releases no more than exists.
    kept.release(99);
    assert_eq!((kept.first, kept.bytes), (4, 0));
    assert!(kept.get(4).is_none());
    kept.release(1);
    assert_eq!(kept.first, 4);
}

/// A session's shared state around a process that has already exited with `code` (so
/// nothing is ever signalled: the process group is one that does not exist).
fn exited(code: i32) -> (Arc<Shared>, watch::Sender<Option<i32>>) {
    let (exit_tx, exit_rx) = watch::channel(Some(code));
    let control = ProcessControl::new(nix::unistd::Pid::from_raw(i32::MAX), exit_rx, None, None);
    let (changed, _) = watch::channel(0u64);
    let shared = Arc::new(Shared {
        kept: Mutex::new(Kept::default()),
        input_next: std::sync::atomic::AtomicU64::new(0),
        window_ms: std::sync::atomic::AtomicU64::new(0),
        changed,
        control,
    });
    (shared, exit_tx)
}

#[tokio::test]
async fn waiting_output_is_merged_per_stream_up_to_the_limit_and_numbered() {
    let (shared, _exit) = exited(7);
    let (tx, rx) = mpsc::channel(16);
    let chunk = |c: u8, n: usize| Bytes::from(vec![c; n]);
    for out in [
        Output::Stdout(chunk(b'a', 1000)),
        Output::Stdout(chunk(b'b', 1000)),
        Output::Stderr(chunk(b'c', 10)),
        Output::Stderr(chunk(b'd', 10)),
        Output::Stdout(chunk(b'e', 40_000)),
        Output::Stdout(chunk(b'f', 40_000)),
        Output::Stdout(chunk(b'g', MERGE_LIMIT - 40_000)),
    ] {
        tx.send(out).await.unwrap();
    }
    drop(tx);
    tokio::time::timeout(std::time::Duration::from_secs(10), pump(rx, shared.clone())).await.unwrap();
    let kept = shared.kept();
    let frames: Vec<(FrameKind, u64, usize, u8)> =
        kept.frames.iter().map(|f| (f.kind, f.seq, f.payload.len(), f.payload[0])).collect();
    assert_eq!(
        frames,
        [
            (FrameKind::Data, 0, 2000, b'a'),
            (FrameKind::Stderr, 1, 20, b'c'),
            (FrameKind::Data, 2, 40_000, b'e'),
            (FrameKind::Data, 3, MERGE_LIMIT, b'f'),
        ]
    );
    assert_eq!(&kept.frames[0].payload[999..1001], b"ab");
    assert_eq!(&kept.frames[1].payload[9..11], b"cd");
    assert_eq!((kept.next, kept.bytes, kept.exit), (4, 2020 + 40_000 + MERGE_LIMIT, Some(7)));
}

/// A reader that yields `frames`, then ends.
fn reader_of(frames: &[Frame]) -> Reader {
    let mut bytes = BytesMut::new();
    for f in frames {
        tokio_util::codec::Encoder::encode(&mut FrameCodec::default(), f.clone(), &mut bytes).unwrap();
    }
    let read: Box<dyn AsyncRead + Unpin + Send> = Box::new(std::io::Cursor::new(bytes.to_vec()));
    FramedRead::new(read, FrameCodec::default())
}

fn data(seq: u64, text: &str) -> Frame {
    Frame::data(seq, Bytes::from(text.to_owned()))
}

#[tokio::test]
async fn input_is_delivered_once_in_order_and_a_gap_detaches() {
    let (shared, _exit) = exited(0);
    shared.input_next.store(1, Ordering::Release);
    let (tx, mut rx) = mpsc::channel(8);
    let mut input = Some(tx);
    let frames =
        [data(0, "delivered before"), data(1, "one"), data(2, "two"), data(4, "gap"), data(3, "late")];
    let end = receive_input(reader_of(&frames), &shared, &mut input).await;
    assert!(matches!(&end, Detach::Lost(why) if why == "input frame 4 skips 3"));
    assert_eq!(shared.input_next.load(Ordering::Acquire), 3);
    drop(input);
    let mut got = Vec::new();
    while let Some(b) = rx.recv().await {
        got.push(b);
    }
    assert_eq!(got, [Bytes::from_static(b"one"), Bytes::from_static(b"two")]);
}

#[tokio::test]
async fn acknowledgements_release_output_and_the_window_is_set_in_seconds() {
    let (shared, _exit) = exited(0);
    {
        let mut kept = shared.kept();
        for n in 0..3 {
            kept.frames.push_back(data(n, "xy"));
        }
        (kept.next, kept.bytes) = (3, 6);
    }
    let frames = [
        Frame::control(&Control::ResumeWindow { seconds: 3 }),
        Frame::control(&Control::Ack { next: 2 }),
        Frame::control(&Control::Close { reason: CloseReason::Terminated, message: "bye".into() }),
    ];
    let end = receive_input(reader_of(&frames), &shared, &mut None).await;
    assert!(matches!(&end, Detach::Closed(CloseReason::Terminated, m) if m == "bye"));
    assert_eq!(shared.window_ms.load(Ordering::Acquire), 3000);
    let released = {
        let kept = shared.kept();
        (kept.first, kept.bytes)
    };
    assert_eq!(released, (2, 2));
    let end = receive_input(reader_of(&[]), &shared, &mut None).await;
    assert!(matches!(&end, Detach::Lost(why) if why == "stream finished"));
}

/// Everything `send_output` writes from `from`, once the output is all sent.
async fn sent_from(shared: Arc<Shared>, from: u64) -> (Result<i32, String>, Vec<Frame>) {
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let write: Box<dyn AsyncWrite + Unpin + Send> = Box::new(theirs);
    let result = send_output(FramedWrite::new(write, FrameCodec::default()), shared, from).await;
    let mut read = FramedRead::new(ours, FrameCodec::default());
    let mut frames = Vec::new();
    while let Some(f) = read.next().await {
        frames.push(f.unwrap());
    }
    (result, frames)
}

#[tokio::test]
async fn output_goes_from_the_asked_frame_with_acknowledgements_only_when_input_moved() {
    let (shared, _exit) = exited(0);
    {
        let mut kept = shared.kept();
        for n in 0..3 {
            kept.frames.push_back(data(n, "o"));
        }
        (kept.next, kept.bytes, kept.exit) = (3, 3, Some(5));
    }
    let exit = Frame::control(&Control::Exit { code: 5 });
    // No input yet: no acknowledgement.
    let (result, frames) = sent_from(shared.clone(), 1).await;
    assert_eq!(result, Ok(5));
    assert_eq!(frames, [data(1, "o"), data(2, "o"), exit.clone()]);
    shared.input_next.store(4, Ordering::Release);
    let (_, frames) = sent_from(shared.clone(), 0).await;
    let ack = Frame::control(&Control::Ack { next: 4 });
    assert_eq!(frames, [ack.clone(), data(0, "o"), data(1, "o"), data(2, "o"), exit.clone()]);
    // Asked past or before what is kept: from the nearest end.
    shared.kept().release(1);
    let (_, frames) = sent_from(shared.clone(), 9).await;
    assert_eq!(frames, [ack.clone(), exit.clone()]);
    let (_, frames) = sent_from(shared.clone(), 0).await;
    assert_eq!(frames, [ack, data(1, "o"), data(2, "o"), exit]);
}

#[tokio::test]
async fn a_close_from_a_broker_that_stopped_reading_still_ends_with_the_exit_code() {
    // The grace shorter than the drain: the wait after it is their sum, not a difference.
    let limits = SessionLimits {
        kill_grace: Duration::from_millis(100),
        drain_timeout: Duration::from_millis(200),
        send_timeout: Duration::from_millis(200),
        ..SessionLimits::default()
    };
    let who = super::super::run_as::RunAs::Agent { name: "agent".into() };
    let process = super::super::command::spawn("yes", &who, limits.drain_timeout).unwrap();
    // A small pipe the broker never reads: the output fills it and the sender blocks.
    let (ours, theirs) = tokio::io::duplex(1024);
    let (read, write) = tokio::io::split(theirs);
    let (read, write): (Box<dyn AsyncRead + Unpin + Send>, Box<dyn AsyncWrite + Unpin + Send>) =
        (Box::new(read), Box::new(write));
    let first = Attachment {
        reader: FramedRead::new(read, FrameCodec::default()),
        writer: FramedWrite::new(write, FrameCodec::default()),
        resend_from: 0,
        announce: false,
    };
    let (_unread, ours) = tokio::io::split(ours);
    let mut broker = FramedWrite::new(ours, FrameCodec::default());
    let close = Control::Close { reason: CloseReason::Terminated, message: String::new() };
    broker.send(Frame::control(&close)).await.unwrap();
    let live = LiveSessions::default();
    let id: SessionId = "tester-0123456789abcdef0".parse().unwrap();
    let run = run(id, process, first, &limits, &live);
    let code = tokio::time::timeout(Duration::from_secs(30), run).await.unwrap();
    assert!(matches!(code, Some(129 | 137)), "SIGHUP or SIGKILL, got {code:?}");
    assert!(live.is_empty());
}

#[tokio::test]
async fn live_sessions_take_attachments_by_id() {
    let live = LiveSessions::default();
    let id: SessionId = "tester-0123456789abcdef0".parse().unwrap();
    let attachment = || {
        let (a, b) = tokio::io::duplex(64);
        let (read, write): (Box<dyn AsyncRead + Unpin + Send>, Box<dyn AsyncWrite + Unpin + Send>) =
            (Box::new(a), Box::new(b));
        Attachment {
            reader: FramedRead::new(read, FrameCodec::default()),
            writer: FramedWrite::new(write, FrameCodec::default()),
            resend_from: 4,
            announce: true,
        }
    };
    let patience = std::time::Duration::from_millis(50);
    assert!(live.is_empty());
    assert!(live.attach(&id, attachment(), patience).await.is_err(), "no such session");
    let mut rx = live.register(id.clone());
    assert_eq!((live.len(), live.is_empty()), (1, false));
    assert!(live.attach(&id, attachment(), patience).await.is_ok());
    assert_eq!(rx.recv().await.map(|a| a.resend_from), Some(4));
    live.remove(&id);
    assert_eq!((live.len(), live.is_empty()), (0, true));
}
