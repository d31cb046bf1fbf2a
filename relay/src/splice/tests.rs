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
