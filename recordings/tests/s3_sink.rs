//! The S3 sink against a real moto server: live objects while a session runs, the final
//! object and manifest at the end, encryption, resumption, an outage and a missing bucket.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_recordings::sink::s3::{S3Sink, S3State, PART_SIZE};
use airlock_recordings::sink::{S3Encryption, S3Target, Sink, SinkError, SpoolRecording};
use airlock_recordings::testing::Moto;
use airlock_recordings::Progress;
use aws_sdk_s3::types::ServerSideEncryption;
use aws_sdk_s3::Client;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

const BUCKET: &str = "airlock-recordings";
const PREFIX: &str = "/sessions/";

/// A recording written the way the broker writes one: appended to `<id>.cast.part`, synced
/// progress announced on a watch channel, renamed and given a manifest at the end.
struct Writer {
    dir: tempfile::TempDir,
    id: String,
    file: std::fs::File,
    reader: Arc<std::fs::File>,
    progress: watch::Sender<Progress>,
    bytes: Vec<u8>,
}

impl Writer {
    fn new(id: &str) -> Writer {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{id}.cast.part"));
        let file = std::fs::File::create(&path).unwrap();
        let reader = Arc::new(std::fs::File::open(&path).unwrap());
        let (progress, _) = watch::channel(Progress::default());
        let mut w = Writer { dir, id: id.into(), file, reader, progress, bytes: Vec::new() };
        w.append(b"{\"version\": 2, \"width\": 80, \"height\": 24}\n");
        w
    }

    fn append(&mut self, data: &[u8]) {
        self.file.write_all(data).unwrap();
        self.file.sync_data().unwrap();
        self.bytes.extend_from_slice(data);
        self.progress.send_replace(Progress { synced: self.bytes.len() as u64, finished: false });
    }

    /// Appends asciicast lines of varied text until the recording has grown by `len` bytes.
    fn append_lines(&mut self, len: usize) {
        let mut chunk = Vec::new();
        let start = self.bytes.len();
        let mut i = start;
        while self.bytes.len() + chunk.len() < start + len {
            let words: String = (0..fastrand::usize(1..24)).map(|_| fastrand::alphanumeric()).collect();
            writeln!(chunk, "[{}.{:06}, \"o\", \"line {i}: {words}\\r\\n\"]", i / 1000, i % 1_000_000)
                .unwrap();
            i += 1;
            if chunk.len() >= 1 << 20 {
                self.append(&std::mem::take(&mut chunk));
            }
        }
        self.append(&chunk);
    }

    fn manifest(&self) -> Vec<u8> {
        format!("{{\"session_id\":\"{}\",\"bytes\":{}}}\n", self.id, self.bytes.len()).into_bytes()
    }

    fn finish(&mut self) {
        let dir = self.dir.path();
        std::fs::rename(dir.join(format!("{}.cast.part", self.id)), dir.join(format!("{}.cast", self.id)))
            .unwrap();
        std::fs::write(dir.join(format!("{}.manifest.json", self.id)), self.manifest()).unwrap();
        self.progress.send_replace(Progress { synced: self.bytes.len() as u64, finished: true });
    }

    /// What a sink is given: a reader on the open file and the progress.
    fn spool(&self) -> SpoolRecording {
        SpoolRecording::live(self.dir.path(), self.id.clone(), self.reader.clone(), self.progress.subscribe())
    }

    fn state(&self) -> Option<S3State> {
        let bytes = std::fs::read(state_path(self.dir.path(), &self.id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

fn state_path(dir: &Path, id: &str) -> std::path::PathBuf {
    dir.join(format!("{id}.s3.state.json"))
}

fn target(encryption: S3Encryption) -> S3Target {
    S3Target { bucket: BUCKET.into(), key_prefix: PREFIX.into(), encryption }
}

async fn moto_with_bucket() -> (Moto, Client) {
    let moto = Moto::start();
    let client = moto.clients().await.s3;
    client.create_bucket().bucket(BUCKET).send().await.unwrap();
    (moto, client)
}

async fn get(client: &Client, key: &str) -> Vec<u8> {
    let out = client.get_object().bucket(BUCKET).key(key).send().await.unwrap();
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

async fn list(client: &Client, prefix: &str) -> Vec<String> {
    let out = client.list_objects_v2().bucket(BUCKET).prefix(prefix).send().await.unwrap();
    out.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect()
}

/// The live objects of session `id` concatenated in name order.
async fn live_bytes(client: &Client, id: &str) -> Vec<u8> {
    let mut all = Vec::new();
    for key in list(client, &format!("sessions/{id}.cast.live/")).await {
        all.extend(get(client, &key).await);
    }
    all
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks the final object, the manifest and that no live object is left.
async fn assert_delivered(client: &Client, w: &Writer) {
    let cast = get(client, &format!("sessions/{}.cast", w.id)).await;
    assert_eq!(cast.len(), w.bytes.len());
    assert_eq!(sha(&cast), sha(&w.bytes), "final object differs from the spool");
    assert_eq!(get(client, &format!("sessions/{}.manifest.json", w.id)).await, w.manifest());
    assert_eq!(list(client, &format!("sessions/{}.cast.live/", w.id)).await, Vec::<String>::new());
}

/// Waits until the live objects hold exactly `expected`; returns how long that took.
async fn wait_live(client: &Client, id: &str, expected: &[u8]) -> Duration {
    let start = Instant::now();
    loop {
        let live = live_bytes(client, id).await;
        if live == expected {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "live objects hold {} of {} bytes",
            live.len(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_running_session_is_in_s3_within_seconds_and_complete_at_the_end() {
    let (_moto, client) = moto_with_bucket().await;
    let sink = Arc::new(S3Sink::new(client.clone(), target(S3Encryption::BucketDefault)));
    let mut w = Writer::new("live-1");
    let rec = w.spool();
    let task = tokio::spawn({
        let sink = sink.clone();
        async move { sink.deliver(&rec).await }
    });
    for i in 0..3 {
        w.append(format!("[{i}.5, \"o\", \"output {i}\\r\\n\"]\n").as_bytes());
        let took = wait_live(&client, &w.id, &w.bytes).await;
        assert!(took < Duration::from_secs(5), "write {i} took {took:?} to reach S3");
        assert!(!task.is_finished(), "deliver returned before the recording finished");
    }
    let live = list(&client, "sessions/live-1.cast.live/").await;
    assert!(live.len() >= 2, "{live:?}");
    assert!(live.windows(2).all(|k| k[0] < k[1]));
    w.finish();
    tokio::time::timeout(Duration::from_secs(20), task).await.unwrap().unwrap().unwrap();
    assert_delivered(&client, &w).await;
    let head = client.head_object().bucket(BUCKET).key("sessions/live-1.cast").send().await.unwrap();
    assert_eq!(head.content_type(), Some("application/x-asciicast"));
    let head = client.head_object().bucket(BUCKET).key("sessions/live-1.manifest.json").send().await.unwrap();
    assert_eq!(head.content_type(), Some("application/json"));
}

#[tokio::test]
async fn a_12_mib_recording_is_three_parts_and_byte_identical() {
    let (_moto, client) = moto_with_bucket().await;
    let sink = S3Sink::new(client.clone(), target(S3Encryption::BucketDefault));
    let mut w = Writer::new("big-1");
    let rec = w.spool();
    let deliver = sink.deliver(&rec);
    let write = async {
        // In 1 MiB steps, so that parts go up while the recording grows.
        for _ in 0..12 {
            w.append_lines(1 << 20);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        w.finish();
    };
    let (result, ()) = tokio::join!(deliver, write);
    result.unwrap();
    assert!(w.bytes.len() > 12 << 20 && w.bytes.len() < 15 << 20);
    assert_delivered(&client, &w).await;
    let head = client.head_object().bucket(BUCKET).key("sessions/big-1.cast").send().await.unwrap();
    assert!(head.e_tag().is_some_and(|e| e.trim_matches('"').ends_with("-3")), "{:?}", head.e_tag());
    let part =
        client.head_object().bucket(BUCKET).key("sessions/big-1.cast").part_number(1).send().await.unwrap();
    assert_eq!(part.content_length(), Some(PART_SIZE as i64));
    assert_eq!(part.parts_count(), Some(3));
    let state = w.state().unwrap();
    assert!(state.completed && state.manifest_stored && state.upload_id.is_none());
    assert_eq!(state.parts.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 2, 3]);
}

#[tokio::test]
async fn every_object_is_encrypted_as_configured() {
    let (_moto, client) = moto_with_bucket().await;
    let kms = S3Encryption::Kms { key_id: "alias/airlock-test".into() };
    tokio::join!(
        encrypted(&client, "sse-s3", S3Encryption::S3Managed, ServerSideEncryption::Aes256, None),
        encrypted(&client, "sse-kms", kms, ServerSideEncryption::AwsKms, Some("alias/airlock-test")),
    );
}

/// Delivers a recording with `encryption` and checks the live, final and manifest objects.
async fn encrypted(
    client: &Client,
    id: &str,
    encryption: S3Encryption,
    sse: ServerSideEncryption,
    kms: Option<&str>,
) {
    let sink = S3Sink::new(client.clone(), target(encryption));
    let mut w = Writer::new(id);
    let rec = w.spool();
    let write = async {
        w.append(b"[0.1, \"o\", \"secret\"]\n");
        // A live object exists while the session runs: it is encrypted too.
        let expected = w.bytes.clone();
        wait_live(client, id, &expected).await;
        for key in list(client, &format!("sessions/{id}.cast.live/")).await {
            check_sse(client, &key, &sse, kms).await;
        }
        w.finish();
    };
    let (result, ()) = tokio::join!(sink.deliver(&rec), write);
    result.unwrap();
    assert_delivered(client, &w).await;
    check_sse(client, &format!("sessions/{id}.cast"), &sse, kms).await;
    check_sse(client, &format!("sessions/{id}.manifest.json"), &sse, kms).await;
}

async fn check_sse(client: &Client, key: &str, sse: &ServerSideEncryption, kms: Option<&str>) {
    let head = client.head_object().bucket(BUCKET).key(key).send().await.unwrap();
    assert_eq!(head.server_side_encryption(), Some(sse), "{key}");
    if let Some(kms) = kms {
        assert!(head.ssekms_key_id().is_some_and(|k| k.ends_with(kms)), "{key}: {:?}", head.ssekms_key_id());
    }
}

#[tokio::test]
async fn an_interrupted_delivery_resumes_without_duplicating_bytes() {
    let (moto, client) = moto_with_bucket().await;
    let sink = Arc::new(S3Sink::new(client.clone(), target(S3Encryption::BucketDefault)));
    let mut w = Writer::new("resume-1");
    w.append_lines(11 << 20);
    let rec = w.spool();
    let task = tokio::spawn({
        let sink = sink.clone();
        async move { sink.deliver(&rec).await }
    });
    let start = Instant::now();
    while w.state().is_none_or(|s| s.parts.len() < 2) {
        assert!(start.elapsed() < Duration::from_secs(20), "two parts were not uploaded: {:?}", w.state());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    let _ = task.await;
    let mut state = w.state().unwrap();
    let upload_id = state.upload_id.clone().unwrap();
    let sizes = part_sizes(&moto, "sessions/resume-1.cast", &upload_id).await;
    assert_eq!(sizes, vec![PART_SIZE, PART_SIZE]);

    // As if the broker had died after uploading part 2 but before saving that.
    state.parts.truncate(1);
    state.parts_end = PART_SIZE;
    std::fs::write(state_path(w.dir.path(), &w.id), serde_json::to_vec(&state).unwrap()).unwrap();

    w.append_lines(3 << 20);
    w.finish();
    tokio::time::timeout(Duration::from_secs(30), sink.deliver(&w.spool())).await.unwrap().unwrap();
    assert_delivered(&client, &w).await;
    let head = client.head_object().bucket(BUCKET).key("sessions/resume-1.cast").send().await.unwrap();
    assert!(head.e_tag().is_some_and(|e| e.trim_matches('"').ends_with("-3")), "{:?}", head.e_tag());
    let uploads = client.list_multipart_uploads().bucket(BUCKET).send().await.unwrap();
    assert!(uploads.uploads().is_empty(), "the resumed upload was the same one");
}

/// The sizes of the parts of an upload in progress, by ListParts. Sent by hand: moto 5.2.5
/// answers it with a `ListPartsResponse` root element, which the SDK rejects.
async fn part_sizes(moto: &Moto, key: &str, upload_id: &str) -> Vec<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    assert!(upload_id.bytes().all(|b| b.is_ascii_alphanumeric()), "{upload_id}");
    let mut s = tokio::net::TcpStream::connect(moto.addr).await.unwrap();
    let req = format!(
        "GET /{BUCKET}/{key}?uploadId={upload_id} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        moto.addr
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    reply.split("<Size>").skip(1).map(|r| r.split('<').next().unwrap().parse().unwrap()).collect()
}

#[tokio::test]
async fn a_vanished_upload_starts_over_from_zero() {
    let (_moto, client) = moto_with_bucket().await;
    let sink = S3Sink::new(client.clone(), target(S3Encryption::BucketDefault));
    let mut w = Writer::new("vanished-1");
    w.append_lines(6 << 20);
    let rec = w.spool();
    // One part goes up (the delivery is dropped then); then the bucket loses the upload.
    let one_part = async {
        while w.state().is_none_or(|s| s.parts.is_empty()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let first = async {
        tokio::select! {
            result = sink.deliver(&rec) => panic!("deliver returned {result:?} before the recording finished"),
            () = one_part => {}
        }
    };
    tokio::time::timeout(Duration::from_secs(20), first).await.unwrap();
    let upload_id = w.state().unwrap().upload_id.unwrap();
    client
        .abort_multipart_upload()
        .bucket(BUCKET)
        .key("sessions/vanished-1.cast")
        .upload_id(upload_id)
        .send()
        .await
        .unwrap();
    w.append_lines(1 << 20);
    w.finish();
    tokio::time::timeout(Duration::from_secs(30), sink.deliver(&rec)).await.unwrap().unwrap();
    assert_delivered(&client, &w).await;
}

#[tokio::test]
async fn an_outage_is_retried_and_the_recording_arrives_whole() {
    let (moto, client) = moto_with_bucket().await;
    // Short deadlines, so that calls to the frozen server fail instead of waiting it out.
    let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .read_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(4))
        .build();
    let impatient = Client::from_conf(client.config().to_builder().timeout_config(timeouts).build());
    let sink = Arc::new(S3Sink::new(impatient, target(S3Encryption::S3Managed)));
    let mut w = Writer::new("outage-1");
    let rec = w.spool();
    // What the shipper does: deliver, and on an error wait and deliver again.
    let shipper = tokio::spawn({
        let sink = sink.clone();
        async move {
            let mut errors = Vec::new();
            loop {
                match sink.deliver(&rec).await {
                    Ok(()) => return errors,
                    Err(e) => {
                        errors.push(e);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    });
    w.append_lines(10_000);
    tokio::time::sleep(Duration::from_secs(1)).await;
    moto.pause();
    let paused = Instant::now();
    // At least 10 s, and enough bytes for two parts however slow the writing is on a loaded
    // machine.
    while paused.elapsed() < Duration::from_secs(10) || (w.bytes.len() as u64) < 2 * PART_SIZE + (1 << 20) {
        w.append_lines(300_000);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    moto.resume();
    w.append_lines(1000);
    w.finish();
    let errors: Vec<SinkError> =
        tokio::time::timeout(Duration::from_secs(30), shipper).await.unwrap().unwrap();
    assert!(!errors.is_empty(), "no delivery failed while S3 was frozen");
    assert!(w.bytes.len() as u64 > 2 * PART_SIZE);
    assert_delivered(&client, &w).await;
}

#[tokio::test]
async fn a_missing_bucket_is_named_in_the_error() {
    let (_moto, client) = moto_with_bucket().await;
    let target = S3Target { bucket: "airlock-no-such-bucket".into(), ..target(S3Encryption::BucketDefault) };
    let sink = S3Sink::new(client, target);
    let mut w = Writer::new("nobucket-1");
    w.finish();
    let err =
        tokio::time::timeout(Duration::from_secs(20), sink.deliver(&w.spool())).await.unwrap().unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, SinkError::Remote { service: "s3", .. }), "{err:?}");
    assert!(message.contains("NoSuchBucket") && message.contains("airlock-no-such-bucket"), "{message}");
}
