use super::*;
use airlock_proto::FramedStream;
use airlock_recordings::RecordingMeta;
use bytes::Bytes;
use tokio::io::{DuplexStream, ReadHalf, WriteHalf};

type Side = FramedStream<ReadHalf<DuplexStream>, WriteHalf<DuplexStream>>;
type Halves =
    (FramedRead<ReadHalf<DuplexStream>, FrameCodec>, FramedWrite<WriteHalf<DuplexStream>, FrameCodec>);

fn pair(max: usize) -> (Side, Halves) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    (FramedStream::new(ar, aw, 1 << 22), FramedStream::new(br, bw, max).split())
}

struct Harness {
    client: Side,
    agent: Side,
    dir: tempfile::TempDir,
    terminate: CancellationToken,
    task: tokio::task::JoinHandle<SpliceOutcome>,
}

async fn start(agent_limit: usize) -> Harness {
    start_with(agent_limit, Limits::default()).await
}

async fn start_with(agent_limit: usize, limits: Limits) -> Harness {
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
    let (client, relay_client) = pair(1 << 20);
    let (agent, relay_agent) = pair(agent_limit);
    let terminate = CancellationToken::new();
    let task = tokio::spawn(splice(relay_client, relay_agent, recorder, terminate.clone(), limits));
    Harness { client, agent, dir, terminate, task }
}

async fn next(side: &mut Side) -> Frame {
    tokio::time::timeout(Duration::from_secs(10), side.recv()).await.unwrap().unwrap().unwrap()
}

async fn next_control(side: &mut Side) -> Control {
    side.recv_control(Duration::from_secs(10)).await.unwrap()
}

#[tokio::test]
async fn relays_both_ways_and_records_before_forwarding() {
    let mut h = start(1 << 20).await;
    h.client.send(Frame::data(0, Bytes::from_static(b"ls\r"))).await.unwrap();
    h.client.send_control(&Control::Resize { cols: 100, rows: 30 }).await.unwrap();
    let got = next(&mut h.agent).await;
    assert_eq!(&got.payload[..], b"ls\r");
    assert_eq!(next_control(&mut h.agent).await, Control::Resize { cols: 100, rows: 30 });

    h.agent.send(Frame::data(0, Bytes::from_static(b"file-one\r\n"))).await.unwrap();
    let out = next(&mut h.client).await;
    assert_eq!(&out.payload[..], b"file-one\r\n");
    // Whatever the client has seen is already in the recording.
    let part = std::fs::read_to_string(h.dir.path().join("admin-0123.cast.part")).unwrap();
    assert!(part.contains("file-one"), "{part}");

    h.agent.send(Frame::stderr(1, Bytes::from_static(b"oops"))).await.unwrap();
    h.agent.send_control(&Control::Exit { code: 3 }).await.unwrap();
    drop(h.agent);
    assert_eq!(next(&mut h.client).await.kind, FrameKind::Stderr);
    assert_eq!(next_control(&mut h.client).await, Control::Exit { code: 3 });
    match next_control(&mut h.client).await {
        Control::Close { reason: CloseReason::Exited, .. } => {}
        other => panic!("unexpected {other:?}"),
    }
    let outcome = h.task.await.unwrap();
    assert_eq!(outcome.end, EndReason::Exited);
    assert_eq!(outcome.exit_code, Some(3));
    assert_eq!((outcome.bytes_from_client, outcome.bytes_from_agent), (3, 14));
    let manifest = outcome.recording.unwrap();
    let cast = std::fs::read_to_string(h.dir.path().join("admin-0123.cast")).unwrap();
    assert_eq!(manifest.size, cast.len() as u64);
    for needle in ["\"i\", \"ls\\r\"", "\"r\", \"100x30\"", "file-one", "oops", "exit code 3"] {
        assert!(cast.contains(needle), "{needle} missing in {cast}");
    }
}

#[tokio::test]
async fn terminate_stops_agent_and_tells_client() {
    let mut h = start(1 << 20).await;
    h.terminate.cancel();
    match next_control(&mut h.agent).await {
        Control::Close { reason: CloseReason::Terminated, .. } => {}
        other => panic!("unexpected {other:?}"),
    }
    h.agent.send_control(&Control::Exit { code: 129 }).await.unwrap();
    drop(h.agent);
    assert_eq!(next_control(&mut h.client).await, Control::Exit { code: 129 });
    assert!(matches!(
        next_control(&mut h.client).await,
        Control::Close { reason: CloseReason::Terminated, .. }
    ));
    let outcome = h.task.await.unwrap();
    assert_eq!((outcome.end, outcome.exit_code), (EndReason::Terminated, Some(129)));
}

#[tokio::test]
async fn oversized_agent_frame_ends_only_this_session_with_a_reason() {
    let mut h = start(1024).await;
    h.agent.send(Frame::data(0, Bytes::from(vec![b'x'; 2048]))).await.unwrap();
    match next_control(&mut h.client).await {
        Control::Close { reason: CloseReason::ProtocolError, message } => {
            assert!(message.contains("2048") && message.contains("1024"), "{message}")
        }
        other => panic!("unexpected {other:?}"),
    }
    let outcome = h.task.await.unwrap();
    assert_eq!(outcome.end, EndReason::ProtocolError);
    // Nothing of the refused frame was recorded.
    let cast = std::fs::read_to_string(h.dir.path().join("admin-0123.cast")).unwrap();
    assert!(!cast.contains("xxxx"));
}

#[tokio::test]
async fn client_disconnect_stops_the_agent() {
    let mut h = start(1 << 20).await;
    drop(h.client);
    match next_control(&mut h.agent).await {
        Control::Close { reason: CloseReason::ClientLost, .. } => {}
        other => panic!("unexpected {other:?}"),
    }
    h.agent.send_control(&Control::Exit { code: 1 }).await.unwrap();
    drop(h.agent);
    let outcome = h.task.await.unwrap();
    assert_eq!((outcome.end, outcome.exit_code), (EndReason::ClientLost, Some(1)));
}

#[tokio::test]
async fn out_of_order_client_data_is_a_protocol_error() {
    let mut h = start(1 << 20).await;
    h.client.send(Frame::data(5, Bytes::from_static(b"x"))).await.unwrap();
    match next_control(&mut h.agent).await {
        Control::Close { reason: CloseReason::ProtocolError, .. } => {}
        other => panic!("unexpected {other:?}"),
    }
    drop(h.agent);
    match next_control(&mut h.client).await {
        Control::Close { reason: CloseReason::ProtocolError, message } => {
            assert!(message.contains("expected 0"))
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(h.task.await.unwrap().end, EndReason::ProtocolError);
}

#[tokio::test]
async fn agent_that_ignores_terminate_is_cut_off() {
    tokio::time::pause();
    let mut h = start(1 << 20).await;
    h.terminate.cancel();
    let _ = next_control(&mut h.agent).await;
    // The agent stays silent; the grace period runs out on the paused clock.
    let outcome = h.task.await.unwrap();
    assert_eq!((outcome.end, outcome.exit_code), (EndReason::Terminated, None));
    drop(h.agent);
}

#[tokio::test]
async fn terminate_gets_through_while_the_agent_reads_nothing() {
    tokio::time::pause();
    let h = start(1 << 20).await;
    // Fill the pipe towards an agent that never reads, until a write blocks in the relay.
    let filler = Bytes::from(vec![b'k'; 60_000]);
    let (mut client_r, mut client_w) = h.client.split();
    // (the downstream side's grace period is what ends the session here)
    let feeder = tokio::spawn(async move {
        for seq in 0..8 {
            if client_w.send(Frame::data(seq, filler.clone())).await.is_err() {
                break;
            }
        }
        client_w
    });
    // Let the relay fill the agent's pipe and block on its next write.
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.terminate.cancel();
    // The session ends within the grace period even though the agent never drained its input.
    let outcome = h.task.await.unwrap();
    assert_eq!(outcome.end, EndReason::Terminated);
    let close = loop {
        let frame =
            tokio::time::timeout(Duration::from_secs(10), client_r.next()).await.unwrap().unwrap().unwrap();
        if frame.kind == FrameKind::Control {
            break frame.to_control().unwrap();
        }
    };
    assert!(matches!(close, Control::Close { reason: CloseReason::Terminated, .. }), "{close:?}");
    feeder.abort();
    drop(h.agent);
}

/// The agent side of a stop: reads until `Close`, answers with an exit.
async fn agent_stops(agent: &mut Side) {
    loop {
        let f = next(agent).await;
        if let Ok(Control::Close { reason: CloseReason::Terminated, .. }) = f.to_control() {
            break;
        }
    }
    agent.send_control(&Control::Exit { code: 129 }).await.unwrap();
}

#[tokio::test]
async fn no_input_for_the_idle_timeout_ends_the_session_though_output_flows() {
    let limits = Limits { idle: Some(Duration::from_millis(1500)), max: None };
    let mut h = start_with(1 << 20, limits).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    h.client.send(Frame::data(0, Bytes::from_static(b"k"))).await.unwrap();
    let last_input = Instant::now();
    assert_eq!(&next(&mut h.agent).await.payload[..], b"k");
    // Output alone does not count as activity.
    for i in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.agent.send(Frame::data(i, Bytes::from_static(b"tick\r\n"))).await.unwrap();
        assert_eq!(&next(&mut h.client).await.payload[..], b"tick\r\n");
    }
    agent_stops(&mut h.agent).await;
    assert!(last_input.elapsed() >= Duration::from_millis(1500));
    let outcome = h.task.await.unwrap();
    assert_eq!(outcome.end, EndReason::IdleTimeout);
    assert!(outcome.message.contains("1 s without input"), "{}", outcome.message);
    let text = std::fs::read_to_string(h.dir.path().join("admin-0123.cast")).unwrap();
    assert!(text.contains("IdleTimeout"), "{text}");
}

#[tokio::test]
async fn the_maximum_duration_ends_a_busy_session() {
    let limits = Limits { idle: Some(Duration::from_secs(1)), max: Some(Duration::from_secs(2)) };
    let started = Instant::now();
    let mut h = start_with(1 << 20, limits).await;
    let typing = async {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if h.client.send(Frame::data(i, Bytes::from_static(b"k"))).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = typing => {}
        _ = agent_stops(&mut h.agent) => {}
    }
    assert!(started.elapsed() >= Duration::from_secs(2));
    let close = loop {
        if let Control::Close { reason, message } = next_control(&mut h.client).await {
            break (reason, message);
        }
    };
    assert_eq!(close.0, CloseReason::Terminated);
    assert!(close.1.contains("maximum duration of 2 s"), "{}", close.1);
    assert_eq!(h.task.await.unwrap().end, EndReason::MaxDuration);
}

/// A reader whose stream broke, as a QUIC stream of a lost connection does.
struct Broken;

impl AsyncRead for Broken {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection lost",
        )))
    }
}

type AnyRead = Box<dyn AsyncRead + Unpin + Send>;
type AnyHalves = (FramedRead<AnyRead, FrameCodec>, FramedWrite<WriteHalf<DuplexStream>, FrameCodec>);

/// A pipe whose relay-side reader, once the peer is gone, fails (`breaks`) rather than ends.
fn any_pair(breaks: bool) -> (Side, AnyHalves) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let br: AnyRead =
        if breaks { Box::new(tokio::io::AsyncReadExt::chain(br, Broken)) } else { Box::new(br) };
    (
        FramedStream::new(ar, aw, 1 << 22),
        (FramedRead::new(br, FrameCodec::new(1 << 20)), FramedWrite::new(bw, FrameCodec::new(1 << 20))),
    )
}

/// One attachment ([`splice_attached`]) from `at`, with the agent's output `preload`ed before
/// the relay reads it; the task returns the attachment and the finished recording.
struct Attached {
    client: Side,
    agent: Side,
    terminate: CancellationToken,
    task: tokio::task::JoinHandle<(Attachment, String)>,
}

/// Which streams break (fail) rather than end when their peer goes away.
#[derive(Clone, Copy)]
struct Breaks {
    client: bool,
    agent: bool,
    /// What `client_resumable` answers.
    resumable: bool,
}

const ENDS: Breaks = Breaks { client: false, agent: false, resumable: false };

async fn attach(at: Positions, breaks: Breaks, limits: Limits, preload: &[Frame]) -> Attached {
    let dir = tempfile::tempdir().unwrap();
    let meta = RecordingMeta {
        session_id: "admin-0456".into(),
        target: "mi-0123456789abcdef0".into(),
        owner: "admin".into(),
        document: "SSM-SessionManagerRunShell".into(),
        width: 80,
        height: 24,
        term: "xterm".into(),
    };
    let (spool, _no_shipper) = airlock_recordings::Spool::open(dir.path(), 1 << 30).unwrap();
    let rec: SharedRecorder = Arc::new(Mutex::new(Recorder::create(&spool, meta, &[]).await.unwrap()));
    let (client, (mut c_read, mut c_write)) = any_pair(breaks.client);
    let (mut agent, relay_agent) = any_pair(breaks.agent);
    for f in preload {
        agent.send(f.clone()).await.unwrap();
    }
    let terminate = CancellationToken::new();
    let stop = terminate.clone();
    let task = tokio::spawn(async move {
        let resumable = move || breaks.resumable;
        let deadlines = Deadlines::from_now(limits);
        let a = splice_attached(
            (&mut c_read, &mut c_write),
            relay_agent,
            rec.clone(),
            stop,
            (limits, deadlines, &resumable),
            at,
        )
        .await;
        finish_recording(rec, a.end, a.exit_code).await.unwrap();
        let cast = std::fs::read_to_string(dir.path().join("admin-0456.cast")).unwrap();
        (a, cast)
    });
    Attached { client, agent, terminate, task }
}

fn data(seq: u64, text: &str) -> Frame {
    Frame::data(seq, Bytes::from(text.to_owned()))
}

fn payload(f: &Frame) -> (u64, String) {
    (f.seq, String::from_utf8_lossy(&f.payload).into_owned())
}

/// Whether `side` gets the end of its stream with no `Close` before it.
async fn ends_without_close(side: &mut Side) -> bool {
    matches!(tokio::time::timeout(Duration::from_secs(10), side.recv()).await, Ok(Ok(None)))
}

async fn close_reason(side: &mut Side) -> CloseReason {
    loop {
        if let Control::Close { reason, .. } = next_control(side).await {
            return reason;
        }
    }
}

#[tokio::test]
async fn an_attachment_goes_on_from_its_positions_and_records_each_frame_once() {
    let at =
        Positions { input_next: 2, input_recorded: 3, output_next: 3, output_recorded: 4, rewind: false };
    let mut h = attach(at, ENDS, Limits::default(), &[]).await;
    // Input 0 and 1 reached the agent before; 2 reached it but is also in the recording.
    for (seq, text) in [(0, "in-0"), (1, "in-1"), (2, "in-2"), (3, "in-3")] {
        h.client.send(data(seq, text)).await.unwrap();
    }
    assert_eq!(payload(&next(&mut h.agent).await), (2, "in-2".into()));
    assert_eq!(payload(&next(&mut h.agent).await), (3, "in-3".into()));
    // Output 3 is a resend the recording has; 4 is new.
    h.agent.send(data(3, "out-3")).await.unwrap();
    assert_eq!(payload(&next(&mut h.client).await), (3, "out-3".into()));
    h.agent.send(data(4, "out-4")).await.unwrap();
    assert_eq!(payload(&next(&mut h.client).await), (4, "out-4".into()));
    h.agent.send_control(&Control::Exit { code: 0 }).await.unwrap();
    drop(h.agent);
    assert_eq!(next_control(&mut h.client).await, Control::Exit { code: 0 });
    assert_eq!(close_reason(&mut h.client).await, CloseReason::Exited);
    let (a, cast) = h.task.await.unwrap();
    let want =
        Positions { input_next: 4, input_recorded: 4, output_next: 5, output_recorded: 5, rewind: false };
    assert_eq!(a.positions, want);
    assert_eq!((a.bytes_from_client, a.bytes_from_agent), (8, 10));
    assert!(!a.agent_detached && !a.client_detached);
    for (text, recorded) in [("in-2", false), ("in-3", true), ("out-3", false), ("out-4", true)] {
        assert_eq!(cast.contains(text), recorded, "{text} in {cast}");
    }
}

#[tokio::test]
async fn a_rewinding_client_is_heard_from_the_resend_on() {
    let at = Positions { input_next: 1, input_recorded: 1, rewind: true, ..Positions::default() };
    let mut h = attach(at, ENDS, Limits::default(), &[]).await;
    // Sent before the client heard `Resumed`: dropped until the resend reaches them.
    h.client.send(data(2, "early-2")).await.unwrap();
    h.client.send(data(3, "early-3")).await.unwrap();
    h.client.send(data(1, "again-1")).await.unwrap();
    h.client.send(data(2, "again-2")).await.unwrap();
    assert_eq!(payload(&next(&mut h.agent).await), (1, "again-1".into()));
    assert_eq!(payload(&next(&mut h.agent).await), (2, "again-2".into()));
    // Rewound: a gap is a protocol error again.
    h.client.send(data(9, "gap")).await.unwrap();
    assert_eq!(close_reason(&mut h.agent).await, CloseReason::ProtocolError);
    drop(h.agent);
    assert_eq!(close_reason(&mut h.client).await, CloseReason::ProtocolError);
    let (a, cast) = h.task.await.unwrap();
    assert_eq!(a.end, EndReason::ProtocolError);
    assert_eq!((a.positions.input_next, a.positions.input_recorded, a.positions.rewind), (3, 3, false));
    assert!(cast.contains("again-2") && !cast.contains("early") && !cast.contains("gap"), "{cast}");
}

#[tokio::test]
async fn output_already_waiting_is_recorded_as_one_batch() {
    let texts = ["a", "b", "c", "d"].map(|c| c.repeat(1000));
    let mut preload: Vec<Frame> = texts[..3].iter().zip(0..).map(|(t, seq)| data(seq, t)).collect();
    preload.push(Frame::stderr(3, Bytes::from(texts[3].clone())));
    preload.push(Frame::control(&Control::Exit { code: 0 }));
    let mut h = attach(Positions::default(), ENDS, Limits::default(), &preload).await;
    for (seq, text) in texts.iter().enumerate() {
        assert_eq!(payload(&next(&mut h.client).await), (seq as u64, text.clone()));
    }
    assert_eq!(next_control(&mut h.client).await, Control::Exit { code: 0 });
    drop(h.agent);
    assert_eq!(close_reason(&mut h.client).await, CloseReason::Exited);
    let (a, cast) = h.task.await.unwrap();
    assert_eq!((a.end, a.exit_code, a.bytes_from_agent), (EndReason::Exited, Some(0), 4000));
    assert!(cast.contains(&texts.concat()), "one output event for the batch: {cast}");
}

#[tokio::test]
async fn a_broken_agent_stream_detaches_the_agent_and_tells_the_client_nothing() {
    let breaks = Breaks { agent: true, ..ENDS };
    let mut h = attach(Positions::default(), breaks, Limits::default(), &[]).await;
    h.client.send(data(0, "in")).await.unwrap();
    assert_eq!(payload(&next(&mut h.agent).await), (0, "in".into()));
    h.agent.send(data(0, "out")).await.unwrap();
    assert_eq!(payload(&next(&mut h.client).await), (0, "out".into()));
    drop(h.agent);
    let (a, _) = h.task.await.unwrap();
    assert!(a.agent_detached && !a.client_detached);
    assert_eq!(a.end, EndReason::AgentLost);
    let want =
        Positions { input_next: 1, input_recorded: 1, output_next: 1, output_recorded: 1, rewind: false };
    assert_eq!(a.positions, want);
    assert!(ends_without_close(&mut h.client).await);
}

#[tokio::test]
async fn a_broken_agent_stream_is_the_end_after_an_exit_a_terminate_or_a_client_error() {
    let breaks = Breaks { agent: true, ..ENDS };
    // After the exit code.
    let mut h = attach(Positions::default(), breaks, Limits::default(), &[]).await;
    h.agent.send_control(&Control::Exit { code: 3 }).await.unwrap();
    assert_eq!(next_control(&mut h.client).await, Control::Exit { code: 3 });
    drop(h.agent);
    assert_eq!(close_reason(&mut h.client).await, CloseReason::AgentLost);
    let (a, _) = h.task.await.unwrap();
    assert!(!a.agent_detached);
    // After TerminateSession.
    let mut h = attach(Positions::default(), breaks, Limits::default(), &[]).await;
    h.terminate.cancel();
    assert_eq!(close_reason(&mut h.agent).await, CloseReason::Terminated);
    drop(h.agent);
    assert_eq!(close_reason(&mut h.client).await, CloseReason::Terminated);
    assert!(!h.task.await.unwrap().0.agent_detached);
    // After the client broke the protocol.
    let mut h = attach(Positions::default(), breaks, Limits::default(), &[]).await;
    h.client.send(Frame::stderr(0, Bytes::from_static(b"?"))).await.unwrap();
    assert_eq!(close_reason(&mut h.agent).await, CloseReason::ProtocolError);
    drop(h.agent);
    assert_eq!(close_reason(&mut h.client).await, CloseReason::ProtocolError);
    assert!(!h.task.await.unwrap().0.agent_detached);
}

#[tokio::test]
async fn an_agent_stream_that_ends_without_an_exit_ends_the_session() {
    let mut h = start(1 << 20).await;
    drop(h.agent);
    match next_control(&mut h.client).await {
        Control::Close { reason: CloseReason::AgentLost, message } => {
            assert!(message.contains("without an exit status"), "{message}")
        }
        other => panic!("unexpected {other:?}"),
    }
    let outcome = h.task.await.unwrap();
    assert_eq!((outcome.end, outcome.exit_code), (EndReason::AgentLost, None));
}

#[tokio::test]
async fn a_lost_client_detaches_when_it_may_resume_and_ends_the_session_when_not() {
    for resumable in [true, false] {
        let breaks = Breaks { client: true, resumable, ..ENDS };
        let mut h = attach(Positions::default(), breaks, Limits::default(), &[]).await;
        h.client.send(data(0, "in")).await.unwrap();
        assert_eq!(payload(&next(&mut h.agent).await), (0, "in".into()));
        h.agent.send(data(0, "out")).await.unwrap();
        assert_eq!(payload(&next(&mut h.client).await), (0, "out".into()));
        drop(h.client);
        if resumable {
            // The agent keeps the session: its stream just ends.
            assert!(ends_without_close(&mut h.agent).await);
        } else {
            assert_eq!(close_reason(&mut h.agent).await, CloseReason::ClientLost);
            h.agent.send_control(&Control::Exit { code: 1 }).await.unwrap();
            drop(h.agent);
        }
        let (a, _) = h.task.await.unwrap();
        assert_eq!((a.end, a.client_detached, a.agent_detached), (EndReason::ClientLost, resumable, false));
        assert!(a.message.contains("the client's stream failed"), "{}", a.message);
        let want =
            Positions { input_next: 1, input_recorded: 1, output_next: 1, output_recorded: 1, rewind: false };
        assert_eq!(a.positions, want);
    }
}

#[tokio::test]
async fn acknowledgements_alone_do_not_keep_a_session_alive() {
    tokio::time::pause();
    let started = Instant::now();
    let limits = Limits { idle: Some(Duration::from_secs(10)), max: None };
    let mut h = start_with(1 << 20, limits).await;
    // Acknowledgements at 0, 3, 6 and 9 s (passed on to the agent); the idle timeout still
    // ends the session at 10 s.
    for i in 0..4 {
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        h.client.send_control(&Control::Ack { next: 0 }).await.unwrap();
        assert_eq!(next_control(&mut h.agent).await, Control::Ack { next: 0 });
    }
    agent_stops(&mut h.agent).await;
    let stopped = started.elapsed();
    assert!(stopped >= Duration::from_secs(10) && stopped < Duration::from_secs(11), "{stopped:?}");
    assert_eq!(h.task.await.unwrap().end, EndReason::IdleTimeout);
}

#[test]
fn durations_read_in_minutes_when_whole() {
    for (secs, text) in [(1, "1 s"), (59, "59 s"), (60, "1 min"), (90, "90 s"), (1200, "20 min")] {
        assert_eq!(minutes(Duration::from_secs(secs)), text);
    }
}

#[tokio::test]
async fn resizes_count_as_input_for_the_idle_timeout() {
    tokio::time::pause();
    let started = Instant::now();
    let limits = Limits { idle: Some(Duration::from_secs(8)), max: None };
    let mut h = start_with(1 << 20, limits).await;
    // Resizes at 0, 5 and 10 s: the session stays until 8 s after the last one.
    for i in 0..3u16 {
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        h.client.send_control(&Control::Resize { cols: 80 + i, rows: 24 }).await.unwrap();
        assert_eq!(next_control(&mut h.agent).await, Control::Resize { cols: 80 + i, rows: 24 });
    }
    agent_stops(&mut h.agent).await;
    let stopped = started.elapsed();
    assert!(stopped >= Duration::from_secs(18) && stopped < Duration::from_secs(19), "{stopped:?}");
    assert_eq!(h.task.await.unwrap().end, EndReason::IdleTimeout);
}
