//! The bridge between a page and the session core, with the page played by channels and the
//! session core by the far end of an in-memory pipe speaking the CLI's framed protocol.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::pin::Pin;
use std::time::Duration;

use airlock_proto::control::{CloseReason, Control};
use airlock_proto::{Frame, FrameKind, FramedStream, MAX_FRAME_LEN};
use axum::extract::ws::Message;
use bytes::Bytes;
use futures_util::Stream;
use tokio::io::{DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::PollSender;

use super::wire::{self, Opening};
use super::{Bridge, End, WINDOW};

type Core = FramedStream<ReadHalf<DuplexStream>, WriteHalf<DuplexStream>>;
type Source = Pin<Box<dyn Stream<Item = Result<Message, axum::Error>> + Send>>;

const WAIT: Duration = Duration::from_secs(5);

struct Page {
    tx: Option<mpsc::Sender<Result<Message, axum::Error>>>,
    rx: mpsc::Receiver<Message>,
}

impl Page {
    async fn send(&self, bytes: &[u8]) {
        let tx = self.tx.as_ref().unwrap();
        tx.send(Ok(Message::Binary(Bytes::copy_from_slice(bytes)))).await.unwrap();
    }

    async fn next(&mut self) -> Bytes {
        match tokio::time::timeout(WAIT, self.rx.recv()).await.expect("a message to the page in time") {
            Some(Message::Binary(b)) => b,
            other => panic!("unexpected message to the page: {other:?}"),
        }
    }

    /// Nothing more arrives for a while (the bridge is holding back).
    async fn quiet(&mut self) {
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(300), self.rx.recv()).await {
            panic!("the page got a message while the window was full: {m:?}");
        }
    }
}

struct Harness {
    page: Page,
    core: Core,
    bridge: JoinHandle<End>,
    _closed: oneshot::Sender<()>,
}

fn opening(resume_from: Option<u64>) -> Opening {
    Opening { csrf: "c".into(), token: "tok".into(), cols: 100, rows: 30, resume_from }
}

fn start(o: Opening) -> Harness {
    let (to_page, page_rx) = mpsc::channel::<Message>(64);
    let (page_tx, from_page) = mpsc::channel::<Result<Message, axum::Error>>(64);
    let source: Source = Box::pin(futures_util::stream::unfold(from_page, |mut rx| async move {
        rx.recv().await.map(|m| (m, rx))
    }));
    let (a, b) = tokio::io::duplex(4 << 20);
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let (closed_tx, closed_rx) = oneshot::channel::<()>();
    let bridge = Bridge::new(PollSender::new(to_page), source, FramedStream::new(ar, aw, MAX_FRAME_LEN));
    let bridge = tokio::spawn(async move {
        let mut bridge = bridge;
        bridge
            .run(
                async move {
                    let _ = closed_rx.await;
                },
                o,
            )
            .await
    });
    Harness {
        page: Page { tx: Some(page_tx), rx: page_rx },
        core: FramedStream::new(br, bw, MAX_FRAME_LEN),
        bridge,
        _closed: closed_tx,
    }
}

async fn core_frame(core: &mut Core) -> Frame {
    tokio::time::timeout(WAIT, core.recv()).await.expect("a frame in time").unwrap().expect("a frame")
}

async fn core_control(core: &mut Core) -> Control {
    core_frame(core).await.to_control().unwrap()
}

fn output_of(b: &Bytes) -> (u64, &[u8]) {
    assert_eq!(b[0], wire::OUTPUT);
    (u64::from_be_bytes(b[1..9].try_into().unwrap()), &b[9..])
}

async fn ready(h: &mut Harness) {
    match core_control(&mut h.core).await {
        Control::ClientHello(req) => {
            assert_eq!((req.token.as_str(), req.cols, req.rows), ("tok", 100, 30));
            assert_eq!(req.term, "xterm-256color");
        }
        other => panic!("expected ClientHello, got {other:?}"),
    }
    h.core.send_control(&Control::Ready { session_id: "op-1".into() }).await.unwrap();
    assert_eq!(&h.page.next().await[..], b"\x81op-1");
}

#[tokio::test]
async fn a_session_carries_input_output_resizes_and_its_end() {
    let mut h = start(opening(None));
    ready(&mut h).await;

    h.page.send(b"\x10ls\r").await;
    h.page.send(b"\x10x").await;
    h.page.send(&[wire::RESIZE, 0, 132, 0, 43]).await;
    let f = core_frame(&mut h.core).await;
    assert_eq!((f.kind, f.seq, &f.payload[..]), (FrameKind::Data, 0, &b"ls\r"[..]));
    let f = core_frame(&mut h.core).await;
    assert_eq!((f.kind, f.seq, &f.payload[..]), (FrameKind::Data, 1, &b"x"[..]));
    assert_eq!(core_control(&mut h.core).await, Control::Resize { cols: 132, rows: 43 });

    h.page.send(&[wire::PING, 1, 2, 3, 4, 5, 6, 7, 8]).await;
    assert_eq!(&h.page.next().await[..], &[wire::PONG, 1, 2, 3, 4, 5, 6, 7, 8]);

    h.core.send(Frame::data(0, Bytes::from_static(b"out\r\n"))).await.unwrap();
    h.core.send(Frame::stderr(1, Bytes::from_static(b"err"))).await.unwrap();
    let b = h.page.next().await;
    assert_eq!(output_of(&b), (0, &b"out\r\n"[..]));
    let b = h.page.next().await;
    assert_eq!(output_of(&b), (1, &b"err"[..]));
    h.page.send(&wire_ack(2)).await;
    assert_eq!(core_control(&mut h.core).await, Control::Ack { next: 2 });

    h.core.send_control(&Control::Exit { code: 3 }).await.unwrap();
    h.core
        .send_control(&Control::Close { reason: CloseReason::Exited, message: String::new() })
        .await
        .unwrap();
    assert_eq!(&h.page.next().await[..], &[wire::EXIT, 0, 0, 0, 3]);
    assert_eq!(h.page.next().await[0], wire::CLOSED);
    assert_eq!(h.bridge.await.unwrap(), End::Close);
}

fn wire_ack(next: u64) -> Vec<u8> {
    let mut b = vec![wire::ACK];
    b.extend_from_slice(&next.to_be_bytes());
    b
}

#[tokio::test]
async fn output_stops_at_the_window_until_the_page_acknowledges() {
    let mut h = start(opening(None));
    ready(&mut h).await;
    let chunk = Bytes::from(vec![b'y'; 64 * 1024]);
    let frames = u64::try_from(WINDOW / chunk.len()).unwrap();
    for seq in 0..frames + 8 {
        h.core.send(Frame::data(seq, chunk.clone())).await.unwrap();
    }
    for want in 0..frames {
        let b = h.page.next().await;
        assert_eq!(output_of(&b).0, want);
    }
    // A full window of unacknowledged output: the bridge reads no further.
    h.page.quiet().await;
    h.page.send(&wire_ack(4)).await;
    assert_eq!(core_control(&mut h.core).await, Control::Ack { next: 4 });
    for want in frames..frames + 4 {
        let b = h.page.next().await;
        assert_eq!(output_of(&b).0, want);
    }
    h.page.quiet().await;
    h.page.send(&wire_ack(frames + 8)).await;
    for want in frames + 4..frames + 8 {
        let b = h.page.next().await;
        assert_eq!(output_of(&b).0, want);
    }
}

#[tokio::test]
async fn a_dropped_socket_is_lost_and_terminate_is_a_close() {
    let mut h = start(opening(None));
    ready(&mut h).await;
    h.page.tx = None;
    assert_eq!(h.bridge.await.unwrap(), End::Lost);

    let mut h = start(opening(None));
    ready(&mut h).await;
    h.page.send(&[wire::TERMINATE]).await;
    assert_eq!(h.page.next().await[0], wire::CLOSED);
    assert_eq!(h.bridge.await.unwrap(), End::Close);
}

#[tokio::test]
async fn a_refused_hello_reaches_the_page() {
    let mut h = start(opening(None));
    assert!(matches!(core_control(&mut h.core).await, Control::ClientHello(_)));
    h.core
        .send_control(&Control::Close { reason: CloseReason::Unauthorized, message: "token expired".into() })
        .await
        .unwrap();
    assert_eq!(&h.page.next().await[..], b"\x95token expired");
    assert_eq!(h.bridge.await.unwrap(), End::Close);
}

#[tokio::test]
async fn a_resume_asks_from_the_pages_position_and_numbers_input_from_the_agents() {
    let mut h = start(opening(Some(5)));
    assert_eq!(
        core_control(&mut h.core).await,
        Control::ClientResume { token: "tok".into(), output_next: 5 }
    );
    h.core.send_control(&Control::Resumed { input_next: 2 }).await.unwrap();
    assert_eq!(h.page.next().await[0], wire::RESUMED);
    assert_eq!(core_control(&mut h.core).await, Control::Ack { next: 5 });
    h.page.send(b"\x10a").await;
    let f = core_frame(&mut h.core).await;
    assert_eq!((f.seq, &f.payload[..]), (2, &b"a"[..]));
}

#[tokio::test]
async fn input_the_agent_lacks_is_resent_after_it_comes_back() {
    let mut h = start(opening(None));
    ready(&mut h).await;
    for b in [&b"\x10a"[..], b"\x10b", b"\x10c"] {
        h.page.send(b).await;
    }
    for _ in 0..3 {
        core_frame(&mut h.core).await;
    }
    h.core.send_control(&Control::Ack { next: 1 }).await.unwrap();
    h.core.send_control(&Control::Resumed { input_next: 1 }).await.unwrap();
    for (seq, want) in [(1, b"b"), (2, b"c")] {
        let f = core_frame(&mut h.core).await;
        assert_eq!((f.kind, f.seq, &f.payload[..]), (FrameKind::Data, seq, &want[..]));
    }
}
