//! The CloudWatch Logs sink against a real moto server: streaming while the session runs,
//! byte-identical reproduction, batching of many lines, delivery at the end only, the
//! encryption requirement, and a service that stops answering for a while.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_recordings::asciicast::{event_line, header_line, parse_event, EventCode, Header};
use airlock_recordings::sink::cloudwatch::CloudWatchSink;
use airlock_recordings::sink::{CloudWatchTarget, Sink, SinkError, SpoolRecording};
use airlock_recordings::testing::Moto;
use airlock_recordings::Progress;
use aws_sdk_cloudwatchlogs::Client;
use tokio::sync::watch;

/// A recording being written into a spool folder the way the broker does it.
struct Cast {
    dir: tempfile::TempDir,
    id: String,
    file: File,
    len: u64,
    tx: watch::Sender<Progress>,
    started: Instant,
}

impl Cast {
    fn new(id: &str) -> Cast {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        Cast::started_at(id, now.as_secs() as i64)
    }

    /// A recording whose header says it started at `timestamp` (Unix seconds).
    fn started_at(id: &str, timestamp: i64) -> Cast {
        let dir = tempfile::tempdir().unwrap();
        let mut file = File::create(dir.path().join(format!("{id}.cast.part"))).unwrap();
        let header = Header {
            version: 2,
            width: 80,
            height: 24,
            timestamp,
            title: Some(format!("{id} test")),
            env: [("TERM".to_string(), "xterm-256color".to_string())].into(),
        };
        let line = header_line(&header);
        file.write_all(line.as_bytes()).unwrap();
        let (tx, _) = watch::channel(Progress { synced: line.len() as u64, finished: false });
        Cast { dir, id: id.into(), file, len: line.len() as u64, tx, started: Instant::now() }
    }

    fn part_path(&self) -> PathBuf {
        self.dir.path().join(format!("{}.cast.part", self.id))
    }

    /// The recording as the shipper gets it: live while written, else found in the spool.
    fn recording(&self) -> SpoolRecording {
        if self.tx.borrow().finished {
            return SpoolRecording::finished(self.dir.path(), self.id.clone()).unwrap();
        }
        let file = Arc::new(File::open(self.part_path()).unwrap());
        SpoolRecording::live(self.dir.path(), self.id.clone(), file, self.tx.subscribe())
    }

    /// Appends output events (made from `texts`) and marks them synced.
    fn output<S: AsRef<str>>(&mut self, texts: &[S]) {
        let mut bytes = String::new();
        for t in texts {
            let us = self.started.elapsed().as_micros() as u64;
            bytes += &event_line(us, EventCode::Output, t.as_ref());
        }
        self.file.write_all(bytes.as_bytes()).unwrap();
        self.len += bytes.len() as u64;
        self.tx.send_replace(Progress { synced: self.len, finished: false });
    }

    /// Publishes the recording as the recorder does; returns the manifest's bytes.
    fn finish(&mut self) -> Vec<u8> {
        self.file.sync_all().unwrap();
        std::fs::rename(self.part_path(), self.dir.path().join(format!("{}.cast", self.id))).unwrap();
        let manifest = format!("{{\n  \"session_id\": \"{}\",\n  \"size\": {}\n}}\n", self.id, self.len);
        std::fs::write(self.dir.path().join(format!("{}.manifest.json", self.id)), &manifest).unwrap();
        self.tx.send_replace(Progress { synced: self.len, finished: true });
        manifest.into_bytes()
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join(format!("{}.cast", self.id))).unwrap()
    }
}

/// A stream's messages from the start; `None` when the stream (or group) does not exist.
async fn read_stream(client: &Client, group: &str, stream: &str) -> Option<Vec<String>> {
    let mut messages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .get_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .start_from_head(true)
            .set_next_token(token.clone())
            .send()
            .await;
        let page = match page {
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
                return None;
            }
            other => other.unwrap(),
        };
        if page.events().is_empty() {
            return Some(messages);
        }
        messages.extend(page.events().iter().map(|e| e.message().unwrap_or_default().to_owned()));
        let next = page.next_forward_token().map(str::to_owned);
        if next.is_none() || next == token {
            return Some(messages);
        }
        token = next;
    }
}

/// Polls until the stream holds `n` events (at most 3 s); returns them.
async fn wait_for_events(client: &Client, group: &str, stream: &str, n: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let m = read_stream(client, group, stream).await.unwrap_or_default();
        if m.len() >= n {
            return m;
        }
        assert!(started.elapsed() < Duration::from_secs(3), "{n} events not in {stream} within 3 s: {m:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the stream holds, joined back into the file's bytes.
fn joined(messages: &[String]) -> Vec<u8> {
    let mut text = messages.join("\n");
    text.push('\n');
    text.into_bytes()
}

/// How many PutLogEvents calls the stream received (moto counts them in its sequence token).
async fn put_calls(client: &Client, group: &str, stream: &str) -> u64 {
    let out = client
        .describe_log_streams()
        .log_group_name(group)
        .log_stream_name_prefix(stream)
        .send()
        .await
        .unwrap();
    let s = out.log_streams().iter().find(|s| s.log_stream_name() == Some(stream)).unwrap();
    #[allow(deprecated)]
    s.upload_sequence_token().unwrap().parse().unwrap()
}

fn sink(client: &Client, group: &str, streaming: bool, require_encryption: bool) -> CloudWatchSink {
    CloudWatchSink::new(
        client.clone(),
        CloudWatchTarget { group: group.into(), streaming, require_encryption },
    )
}

/// Delivers like the shipper: again after each failure, a second later. Returns the failures.
fn deliver_until_done(sink: CloudWatchSink, rec: SpoolRecording) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut failures = Vec::new();
        while let Err(e) = sink.deliver(&rec).await {
            failures.push(e.to_string());
            assert!(failures.len() < 60, "delivery keeps failing: {failures:?}");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        failures
    })
}

fn ansi_lines(from: usize, n: usize) -> Vec<String> {
    (from..from + n).map(|i| format!("\u{1b}[31mline {i}\u{1b}[0m ünï 😀\r\n")).collect()
}

/// Writes 7 lines every 100 ms for `d`.
async fn write_for(cast: &mut Cast, n: &mut usize, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        cast.output(&ansi_lines(*n, 7));
        *n += 7;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn streams_while_the_session_runs_and_reproduces_the_file_exactly() {
    let moto = Moto::start();
    let client = moto.clients().await.logs;
    let mut cast = Cast::new("stream-1");
    // The group does not exist yet: the sink creates it.
    let task = deliver_until_done(sink(&client, "/airlock/sessions", true, false), cast.recording());

    // The header goes out at once; lines written later within about a second.
    wait_for_events(&client, "/airlock/sessions", "stream-1", 1).await;
    cast.output(&ansi_lines(0, 5));
    let appended = Instant::now();
    let messages = wait_for_events(&client, "/airlock/sessions", "stream-1", 6).await;
    assert!(appended.elapsed() < Duration::from_secs(3), "lines not streamed within 3 s");
    eprintln!("streamed after {:?}", appended.elapsed());
    assert!(!task.is_finished(), "the recording is still open");
    let first = parse_event(&messages[1]).unwrap();
    assert_eq!(first.data, "\u{1b}[31mline 0\u{1b}[0m ünï 😀\r\n", "ANSI and UTF-8 kept");

    for burst in 0..3 {
        cast.output(&ansi_lines(5 + burst * 10, 10));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let manifest = cast.finish();
    let failures = tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
    assert!(failures.is_empty(), "{failures:?}");

    let messages = read_stream(&client, "/airlock/sessions", "stream-1").await.unwrap();
    assert_eq!(messages.len(), 36);
    assert_eq!(joined(&messages), cast.bytes(), "the stream reproduces the spool file byte for byte");
    let man = read_stream(&client, "/airlock/sessions", "stream-1.manifest").await.unwrap();
    assert_eq!(man, vec![String::from_utf8(manifest).unwrap()]);
}

#[tokio::test]
async fn many_lines_go_in_several_calls_in_order() {
    let moto = Moto::start();
    let client = moto.clients().await.logs;
    client.create_log_group().log_group_name("many").send().await.unwrap();
    let mut cast = Cast::new("many-1");
    let lines: Vec<String> = (0..25_000).map(|i| format!("{i}\r\n")).collect();
    for part in lines.chunks(5_000) {
        cast.output(part);
    }
    cast.finish();
    let started = Instant::now();
    sink(&client, "many", true, false).deliver(&cast.recording()).await.unwrap();
    eprintln!("25,000 lines delivered in {:?}", started.elapsed());

    let messages = read_stream(&client, "many", "many-1").await.unwrap();
    assert_eq!(messages.len(), 25_001);
    for (i, m) in messages[1..].iter().enumerate() {
        assert_eq!(parse_event(m).unwrap().data, format!("{i}\r\n"));
    }
    assert_eq!(joined(&messages), cast.bytes());
    let calls = put_calls(&client, "many", "many-1").await;
    assert!((3..=6).contains(&calls), "{calls} PutLogEvents calls for 25,001 events");
}

#[tokio::test]
async fn without_streaming_everything_goes_at_the_end() {
    let moto = Moto::start();
    let client = moto.clients().await.logs;
    let mut cast = Cast::new("end-1");
    let task = deliver_until_done(sink(&client, "at-end", false, false), cast.recording());
    cast.output(&ansi_lines(0, 20));
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(read_stream(&client, "at-end", "end-1").await.unwrap_or_default(), Vec::<String>::new());
    assert!(!task.is_finished());

    cast.output(&ansi_lines(20, 20));
    cast.finish();
    let failures = tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    let messages = read_stream(&client, "at-end", "end-1").await.unwrap();
    assert_eq!(joined(&messages), cast.bytes());
    assert_eq!(put_calls(&client, "at-end", "end-1").await, 1);
    assert_eq!(read_stream(&client, "at-end", "end-1.manifest").await.unwrap().len(), 1);
}

#[tokio::test]
async fn required_encryption_refuses_an_unencrypted_group() {
    let moto = Moto::start();
    let client = moto.clients().await.logs;
    client.create_log_group().log_group_name("secure-sessions").send().await.unwrap();
    let mut cast = Cast::new("enc-1");
    cast.output(&ansi_lines(0, 3));
    cast.finish();
    let rec = cast.recording();
    let sink = sink(&client, "secure-sessions", false, true);

    let err = sink.deliver(&rec).await.unwrap_err();
    assert!(
        matches!(&err, SinkError::Refused(m) if m.contains("secure-sessions") && m.contains("KMS")),
        "{err}"
    );
    assert!(read_stream(&client, "secure-sessions", "enc-1").await.is_none(), "nothing sent");

    client.delete_log_group().log_group_name("secure-sessions").send().await.unwrap();
    let err = sink.deliver(&rec).await.unwrap_err();
    assert!(matches!(&err, SinkError::Refused(m) if m.contains("does not exist")), "{err}");

    client
        .create_log_group()
        .log_group_name("secure-sessions")
        .kms_key_id("arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab")
        .send()
        .await
        .unwrap();
    sink.deliver(&rec).await.unwrap();
    assert_eq!(joined(&read_stream(&client, "secure-sessions", "enc-1").await.unwrap()), cast.bytes());
}

#[tokio::test]
async fn a_service_that_stops_answering_delays_delivery_but_loses_nothing() {
    let moto = Moto::start();
    let client = moto.clients().await.logs;
    let mut cast = Cast::new("pause-1");
    let task = deliver_until_done(sink(&client, "paused", true, false), cast.recording());
    let mut n = 0;
    write_for(&mut cast, &mut n, Duration::from_secs(2)).await;
    moto.pause();
    write_for(&mut cast, &mut n, Duration::from_secs(10)).await;
    moto.resume();
    write_for(&mut cast, &mut n, Duration::from_secs(1)).await;
    cast.finish();
    let failures = tokio::time::timeout(Duration::from_secs(40), task).await.unwrap().unwrap();
    eprintln!("failed attempts while paused: {failures:?}");

    let messages = read_stream(&client, "paused", "pause-1").await.unwrap();
    assert_eq!(joined(&messages), cast.bytes(), "every line once, in order");
    assert_eq!(read_stream(&client, "paused", "pause-1.manifest").await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_deleted_stream_is_filled_again_from_the_start() {
    let moto = Moto::start();
    let client = moto.clients().await.logs;
    let mut cast = Cast::new("gone-1");
    let task = deliver_until_done(sink(&client, "deleted", true, false), cast.recording());
    cast.output(&ansi_lines(0, 4));
    wait_for_events(&client, "deleted", "gone-1", 5).await;
    client.delete_log_stream().log_group_name("deleted").log_stream_name("gone-1").send().await.unwrap();
    cast.output(&ansi_lines(4, 4));
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    cast.output(&ansi_lines(8, 4));
    cast.finish();
    let failures = tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
    eprintln!("failures: {failures:?}");
    // Delivered only once the new stream holds the whole recording, once.
    let messages = read_stream(&client, "deleted", "gone-1").await.unwrap();
    let expected = 1 + 12;
    eprintln!("events: {} of {expected}, {} duplicated", messages.len(), duplicates(&messages));
    assert_eq!(joined(&messages), cast.bytes(), "the recreated stream holds the whole recording");
    assert_eq!(read_stream(&client, "deleted", "gone-1.manifest").await.unwrap().len(), 1);
}

/// How many messages are repeats of an earlier one (every line of a recording is unique).
fn duplicates(messages: &[String]) -> usize {
    let unique: std::collections::HashSet<&String> = messages.iter().collect();
    messages.len() - unique.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_restarted_empty_gets_the_whole_recording_again() {
    let mut moto = Moto::start();
    let client = moto.clients().await.logs;
    let mut cast = Cast::new("empty-1");
    let task = deliver_until_done(sink(&client, "restarted", true, false), cast.recording());
    let mut n = 0;
    write_for(&mut cast, &mut n, Duration::from_secs(2)).await;
    wait_for_events(&client, "restarted", "empty-1", n + 1).await;
    // Everything so far is in the stream; the service then loses it all.
    tokio::task::block_in_place(|| {
        moto.kill();
        moto.start_again();
    });
    write_for(&mut cast, &mut n, Duration::from_secs(2)).await;
    cast.finish();
    let failures = tokio::time::timeout(Duration::from_secs(30), task).await.unwrap().unwrap();
    eprintln!("failures: {failures:?}");
    let messages = read_stream(&client, "restarted", "empty-1").await.unwrap_or_default();
    eprintln!("events: {} of {}, {} duplicated", messages.len(), n + 1, duplicates(&messages));
    assert_eq!(joined(&messages), cast.bytes(), "the stream holds the whole recording once");
    assert_eq!(read_stream(&client, "restarted", "empty-1.manifest").await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_stall_longer_than_the_request_timeout_duplicates_nothing() {
    let moto = Moto::start();
    // The broker's client with a 3 s response deadline instead of 60 s; its retry policy is
    // what the broker has.
    let timeouts = aws_sdk_cloudwatchlogs::config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .read_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(3))
        .operation_timeout(Duration::from_secs(15))
        .build();
    let client = moto.clients().await.logs;
    let impatient = Client::from_conf(client.config().to_builder().timeout_config(timeouts).build());
    let mut cast = Cast::new("stall-1");
    let task = deliver_until_done(sink(&impatient, "stalled", true, false), cast.recording());
    let mut n = 0;
    write_for(&mut cast, &mut n, Duration::from_secs(1)).await;
    wait_for_events(&client, "stalled", "stall-1", n + 1).await;
    // A call goes out into the frozen service, times out, and more lines wait behind it.
    cast.output(&ansi_lines(n, 7));
    n += 7;
    moto.pause();
    write_for(&mut cast, &mut n, Duration::from_secs(9)).await;
    moto.resume();
    write_for(&mut cast, &mut n, Duration::from_secs(1)).await;
    cast.finish();
    let failures = tokio::time::timeout(Duration::from_secs(40), task).await.unwrap().unwrap();
    eprintln!("failed attempts: {failures:?}");
    let messages = read_stream(&client, "stalled", "stall-1").await.unwrap();
    eprintln!("events: {} of {}, {} duplicated", messages.len(), n + 1, duplicates(&messages));
    assert_eq!(duplicates(&messages), 0, "events sent twice");
    assert_eq!(joined(&messages), cast.bytes(), "every line once, in order");
}

#[tokio::test]
async fn events_too_old_for_cloudwatch_are_counted_not_sent_again() {
    let moto = Moto::start();
    let client = moto.clients().await.logs;
    let twenty_days_ago = chrono::Utc::now().timestamp() - 20 * 86_400;
    let mut cast = Cast::started_at("old-1", twenty_days_ago);
    cast.output(&ansi_lines(0, 10));
    cast.finish();
    let sink = sink(&client, "old", false, false);
    sink.deliver(&cast.recording()).await.unwrap();
    assert!(sink.rejected_events() >= 10, "{} rejected", sink.rejected_events());
    assert_eq!(read_stream(&client, "old", "old-1").await.unwrap(), Vec::<String>::new());
    assert_eq!(read_stream(&client, "old", "old-1.manifest").await.unwrap().len(), 1, "the manifest is new");
}

#[tokio::test]
async fn a_call_that_landed_without_confirmation_is_not_sent_again() {
    let moto = Moto::start();
    let client = moto.clients().await.logs;
    let mut cast = Cast::new("landed-1");
    cast.output(&ansi_lines(0, 5));
    let first = deliver_until_done(sink(&client, "landed", true, false), cast.recording());
    wait_for_events(&client, "landed", "landed-1", 6).await;
    first.abort();
    let _ = first.await;
    // As if the broker died after PutLogEvents took effect but before it saved that: the
    // state still says nothing is sent, and that a call's outcome is unknown.
    let state_path = cast.dir.path().join("landed-1.cloudwatch.state.json");
    let mut state: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    state["sent_end"] = 0.into();
    state["last_timestamp_ms"] = 0.into();
    state["unconfirmed"] = true.into();
    std::fs::write(&state_path, state.to_string()).unwrap();

    cast.output(&ansi_lines(5, 3));
    cast.finish();
    let failures = deliver_until_done(sink(&client, "landed", true, false), cast.recording()).await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    let messages = read_stream(&client, "landed", "landed-1").await.unwrap();
    assert_eq!(joined(&messages), cast.bytes(), "events were sent twice or lost");
}
