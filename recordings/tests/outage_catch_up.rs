//! The shipper after an outage of S3 and CloudWatch Logs (moto killed, so connections are
//! refused, then started again empty on the same port): output written once the service
//! answers again is durable in both within seconds, not after the retry backoff, and the
//! recording still ends complete in both.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use airlock_recordings::sink::shipper::Shipper;
use airlock_recordings::sink::{CloudWatchTarget, S3Encryption, S3Target, SinkSpec};
use airlock_recordings::testing::Moto;
use airlock_recordings::{EndReason, Recorder, RecordingMeta, Spool};

const BUCKET: &str = "airlock-outage";
const GROUP: &str = "/airlock/outage";

fn meta(id: &str) -> RecordingMeta {
    RecordingMeta {
        session_id: id.into(),
        target: "mi-0123456789abcdef0".into(),
        owner: "arn:airlock:iam::000000000000:user/admin".into(),
        document: "SSM-SessionManagerRunShell".into(),
        width: 80,
        height: 24,
        term: "xterm".into(),
    }
}

/// The live S3 objects of `id` concatenated in name order.
async fn live_bytes(s3: &aws_sdk_s3::Client, id: &str) -> Vec<u8> {
    let mut all = Vec::new();
    let Ok(list) = s3.list_objects_v2().bucket(BUCKET).prefix(format!("{id}.cast.live/")).send().await else {
        return all;
    };
    for key in list.contents().iter().filter_map(|o| o.key()) {
        if let Ok(out) = s3.get_object().bucket(BUCKET).key(key).send().await {
            all.extend(out.body.collect().await.unwrap().into_bytes());
        }
    }
    all
}

/// The messages of a log stream from the start; empty when it does not exist (yet).
async fn stream(logs: &aws_sdk_cloudwatchlogs::Client, name: &str) -> Vec<String> {
    let mut messages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = logs
            .get_log_events()
            .log_group_name(GROUP)
            .log_stream_name(name)
            .start_from_head(true)
            .set_next_token(token.clone())
            .send()
            .await;
        let Ok(page) = page else { return messages };
        if page.events().is_empty() {
            return messages;
        }
        messages.extend(page.events().iter().map(|e| e.message().unwrap_or_default().to_owned()));
        let next = page.next_forward_token().map(str::to_owned);
        if next.is_none() || next == token {
            return messages;
        }
        token = next;
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Polls S3 and CloudWatch every 50 ms until both hold `marker`; returns when each first did,
/// counted from `since` (at most 20 s).
async fn time_to_durable(moto: &Moto, id: &str, marker: &str, since: Instant) -> (Duration, Duration) {
    let clients = moto.clients().await;
    let (mut s3_at, mut cw_at) = (None, None);
    while s3_at.is_none() || cw_at.is_none() {
        assert!(
            since.elapsed() < Duration::from_secs(20),
            "{marker} not durable: S3 {s3_at:?}, CloudWatch {cw_at:?}"
        );
        if s3_at.is_none() && contains(&live_bytes(&clients.s3, id).await, marker.as_bytes()) {
            s3_at = Some(since.elapsed());
        }
        if cw_at.is_none() && stream(&clients.logs, id).await.iter().any(|m| m.contains(marker)) {
            cw_at = Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (s3_at.unwrap_or_default(), cw_at.unwrap_or_default())
}

fn spool_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map(|d| d.count() == 0).unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_refused_outage_new_output_is_durable_within_seconds_and_nothing_is_lost() {
    let mut moto = Moto::start();
    let clients = moto.clients().await;
    clients.s3.create_bucket().bucket(BUCKET).send().await.unwrap();
    let root = tempfile::tempdir().unwrap();
    let (spool_dir, local) = (root.path().join("spool"), root.path().join("recordings"));
    let (spool, rx) = Spool::open(&spool_dir, 1 << 30).unwrap();
    let shipper = Shipper::start(spool.clone(), rx, local.clone(), Some(clients.clone())).await.unwrap();
    let sinks = [
        SinkSpec::Local,
        SinkSpec::S3(S3Target {
            bucket: BUCKET.into(),
            key_prefix: String::new(),
            encryption: S3Encryption::BucketDefault,
        }),
        SinkSpec::CloudWatch(CloudWatchTarget {
            group: GROUP.into(),
            streaming: true,
            require_encryption: false,
        }),
    ];
    let id = "outage-1";
    let mut rec = Recorder::create(&spool, meta(id), &sinks).await.unwrap();
    rec.output(b"before the outage\r\n").await.unwrap();
    let up = time_to_durable(&moto, id, "before the outage", Instant::now()).await;
    eprintln!("before the outage: S3 {:?}, CloudWatch {:?}", up.0, up.1);

    tokio::task::block_in_place(|| moto.kill());
    // Long enough for the deliveries' backoff to grow well past a few seconds.
    let down = Instant::now();
    let mut i = 0;
    while down.elapsed() < Duration::from_secs(20) {
        rec.output(format!("during the outage {i}\r\n").as_bytes()).await.unwrap();
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::task::block_in_place(|| moto.start_again());
    let answering = Instant::now();
    rec.output(b"after the recovery\r\n").await.unwrap();
    // The service came back empty; the bucket is the operator's and is there again at once.
    clients.s3.create_bucket().bucket(BUCKET).send().await.unwrap();
    let (s3, cw) = time_to_durable(&moto, id, "after the recovery", answering).await;
    eprintln!("CATCH-UP after the service answered again: S3 {s3:?}, CloudWatch {cw:?}");
    // The lost stream is being filled again, and `airlock recordings status` says so.
    let status = shipper.status();
    let cloudwatch = status.iter().find(|s| s.sink == "cloudwatch").expect("CloudWatch delivery pending");
    eprintln!("notice: {:?}", cloudwatch.notice);
    assert!(cloudwatch.notice.as_deref().is_some_and(|n| n.contains("vanished")), "{status:?}");

    rec.finish(EndReason::Exited, Some(0)).await.unwrap();
    let started = Instant::now();
    while !spool_is_empty(&spool_dir) {
        assert!(started.elapsed() < Duration::from_secs(30), "not delivered: {:?}", shipper.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Complete in both, though the service lost everything it had before the outage.
    let recording = std::fs::read(local.join(format!("{id}.cast"))).unwrap();
    let object = clients.s3.get_object().bucket(BUCKET).key(format!("{id}.cast")).send().await.unwrap();
    assert_eq!(object.body.collect().await.unwrap().into_bytes().to_vec(), recording, "S3 object");
    let mut joined = stream(&clients.logs, id).await.join("\n");
    joined.push('\n');
    assert_eq!(joined.into_bytes(), recording, "CloudWatch stream");

    // The bound: durable within 3 s of the service answering again.
    assert!(s3 < Duration::from_secs(3), "S3 caught up after {s3:?}");
    assert!(cw < Duration::from_secs(3), "CloudWatch caught up after {cw:?}");
}
