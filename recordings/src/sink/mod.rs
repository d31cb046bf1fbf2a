//! Sinks: where recordings go from the spool. Each recording names its sinks when it starts
//! ([`SinkSpec`], saved beside it in the spool); the shipper runs one delivery per sink and
//! removes the recording from the spool only when every one of them has confirmed it.
//!
//! A sink's [`Sink::deliver`] is resumable: it keeps its progress with
//! [`SpoolRecording::save_state`], and when it fails the shipper calls it again after a
//! jittered backoff (also after a broker restart), so it picks up where it left off.

pub mod cloudwatch;
mod cloudwatch_batch;
mod cloudwatch_errors;
pub mod local;
mod recovery;
pub mod s3;
mod s3_plan;
pub mod shipper;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::local::recording_paths;
use crate::spool::Progress;
use crate::Manifest;

/// Server-side encryption of the objects an S3 sink writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum S3Encryption {
    /// The bucket's default.
    BucketDefault,
    /// SSE-S3 (AES256).
    S3Managed,
    /// SSE-KMS with this key (id, alias or ARN).
    Kms {
        /// The KMS key: id, alias or ARN.
        key_id: String,
    },
}

/// An S3 destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Target {
    /// The bucket name.
    pub bucket: String,
    /// Joined to the object names with one `/`; empty for none.
    pub key_prefix: String,
    /// Server-side encryption of the uploaded objects.
    pub encryption: S3Encryption,
}

/// A CloudWatch Logs destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudWatchTarget {
    /// The log group name.
    pub group: String,
    /// Send while the session runs; otherwise once it has ended.
    pub streaming: bool,
    /// Deliver only into a KMS-encrypted log group.
    pub require_encryption: bool,
}

/// Where a recording goes, fixed when it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "sink", rename_all = "snake_case")]
pub enum SinkSpec {
    /// The broker's local recordings folder.
    Local,
    /// An S3 bucket.
    S3(S3Target),
    /// A CloudWatch Logs log group.
    CloudWatch(CloudWatchTarget),
}

impl SinkSpec {
    /// Every value [`SinkSpec::key`] can take.
    pub const KEYS: [&'static str; 3] = ["local", "s3", "cloudwatch"];

    /// A short name, unique among one recording's sinks, used in state file names and logs.
    pub fn key(&self) -> &'static str {
        match self {
            SinkSpec::Local => "local",
            SinkSpec::S3(_) => "s3",
            SinkSpec::CloudWatch(_) => "cloudwatch",
        }
    }
}

/// Why a delivery attempt failed; the shipper retries every one of them.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Reading the recording from the spool failed.
    #[error("spool file {path}: {source}")]
    Spool {
        /// The spool file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The service answered with an error.
    #[error("{service} {operation}: {message}")]
    Remote {
        /// The service called (`s3`, `logs`).
        service: &'static str,
        /// The API operation called.
        operation: &'static str,
        /// The service's error.
        message: String,
    },
    /// A call that got no answer (connection refused or broken, or a timeout): the service
    /// may be down, and the shipper probes it to retry the moment it answers again.
    #[error("{service} {operation}: no answer: {message}")]
    Unanswered {
        /// The service called (`s3`, `logs`).
        service: &'static str,
        /// The API operation called.
        operation: &'static str,
        /// What went wrong with the call.
        message: String,
    },
    /// The destination is not acceptable (e.g. an unencrypted log group where encryption
    /// is required); the message says why.
    #[error("{0}")]
    Refused(String),
    /// The broker has no client for this service.
    #[error("no {0} client is configured on this broker")]
    NotConfigured(&'static str),
}

impl SinkError {
    /// A failed call to a remote service, with the SDK error's full chain as message.
    pub fn remote(service: &'static str, operation: &'static str, err: &dyn std::error::Error) -> Self {
        SinkError::Remote { service, operation, message: chain(err) }
    }

    /// Whether the service did not answer at all (see [`SinkError::Unanswered`]).
    pub fn is_unanswered(&self) -> bool {
        matches!(self, SinkError::Unanswered { .. })
    }
}

/// Whether an SDK call got no answer: it timed out, or the request could not be sent or its
/// connection broke. (A response that could not be parsed is an answer.)
pub(crate) fn no_answer<E, R>(err: &aws_sdk_s3::error::SdkError<E, R>) -> bool {
    use aws_sdk_s3::error::SdkError;
    matches!(err, SdkError::TimeoutError(_) | SdkError::DispatchFailure(_))
}

/// Whether an SDK call certainly never reached the service: its connection was refused.
pub(crate) fn refused<E, R>(err: &aws_sdk_s3::error::SdkError<E, R>) -> bool
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    use aws_sdk_s3::error::SdkError;
    if !matches!(err, SdkError::DispatchFailure(_)) {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// An error and its sources, joined with ": ".
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

/// Receives a sink's notices: its key and the text.
type NoticeFn = Box<dyn Fn(&str, String) + Send + Sync>;

/// A recording in the spool, as a sink reads it.
pub struct SpoolRecording {
    session_id: String,
    dir: PathBuf,
    /// The open `.cast.part` while the recording is written (its name changes at finish).
    /// Dropped once it is finished: a long outage may leave thousands of finished recordings
    /// waiting, and each holding a descriptor would exhaust the process's limit; finished
    /// ones are opened by name for each read instead.
    live_file: std::sync::Mutex<Option<Arc<std::fs::File>>>,
    progress: watch::Receiver<Progress>,
    /// Where [`SpoolRecording::notice`] goes besides the log (the shipper's status).
    notices: Option<NoticeFn>,
}

impl SpoolRecording {
    /// A recording being written now.
    pub fn live(
        dir: &Path,
        session_id: String,
        file: Arc<std::fs::File>,
        progress: watch::Receiver<Progress>,
    ) -> Self {
        SpoolRecording {
            session_id,
            dir: dir.to_owned(),
            live_file: std::sync::Mutex::new(Some(file)),
            progress,
            notices: None,
        }
    }

    /// A finished recording found in the spool (`<id>.cast` with its manifest).
    pub fn finished(dir: &Path, session_id: String) -> Result<Self, SinkError> {
        let (cast, _) = recording_paths(dir, &session_id);
        let len = std::fs::metadata(&cast).map_err(|source| SinkError::Spool { path: cast, source })?.len();
        let (_, progress) = watch::channel(Progress { synced: len, finished: true });
        Ok(SpoolRecording {
            session_id,
            dir: dir.to_owned(),
            live_file: std::sync::Mutex::new(None),
            progress,
            notices: None,
        })
    }

    /// A handle to read the recording through: the live file while it is written, else the
    /// finished `.cast`, opened now (on a blocking thread).
    async fn file(&self) -> Result<Arc<std::fs::File>, SinkError> {
        let finished = self.progress().finished;
        {
            let mut live = self.live_file.lock().unwrap_or_else(|p| p.into_inner());
            match (&*live, finished) {
                (Some(f), false) => return Ok(f.clone()),
                (Some(_), true) => *live = None,
                (None, _) => {}
            }
        }
        let path = self.path();
        let opened = tokio::task::spawn_blocking({
            let path = path.clone();
            move || std::fs::File::open(path)
        })
        .await
        .map_err(std::io::Error::other);
        let file = opened.and_then(|r| r).map_err(|source| SinkError::Spool { path, source })?;
        Ok(Arc::new(file))
    }

    /// Sends what a sink reports with [`SpoolRecording::notice`] to `f` (sink key, text).
    pub fn on_notice(&mut self, f: impl Fn(&str, String) + Send + Sync + 'static) {
        self.notices = Some(Box::new(f));
    }

    /// Something about this recording's delivery to `sink` that operators should know
    /// (the sink logs it too); shown with the pending delivery in the shipper's status.
    pub fn notice(&self, sink: &str, text: String) {
        if let Some(f) = &self.notices {
            f(sink, text);
        }
    }

    /// The session recorded.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// How far the recording has come now.
    pub fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// Waits until more than `seen` bytes are synced or the recording is finished, or until
    /// `deadline`; returns the progress then.
    pub async fn wait_beyond(&self, seen: u64, deadline: Option<Instant>) -> Progress {
        let mut rx = self.progress.clone();
        let wait = async {
            if rx.wait_for(|p| p.finished || p.synced > seen).await.is_err() {
                // The writer is gone without finishing (it failed): nothing will change
                // until a restart recovers the file, so wait out the deadline, not spin.
                std::future::pending::<()>().await;
            }
        };
        match deadline {
            Some(d) => {
                let _ = tokio::time::timeout_at(d, wait).await;
            }
            None => wait.await,
        }
        self.progress()
    }

    /// Waits until the recording is finished.
    pub async fn wait_finished(&self) -> Progress {
        let mut rx = self.progress.clone();
        if rx.wait_for(|p| p.finished).await.is_err() {
            std::future::pending::<()>().await;
        }
        self.progress()
    }

    /// Reads `range` of the recording; the range must lie within the synced bytes.
    pub async fn read(&self, range: Range<u64>) -> Result<Vec<u8>, SinkError> {
        let synced = self.progress().synced;
        let path = self.path();
        if range.start > range.end || range.end > synced {
            let msg = format!("read {range:?} beyond the {synced} synced bytes");
            return Err(SinkError::Spool { path, source: std::io::Error::other(msg) });
        }
        let file = self.file().await?;
        let len = (range.end - range.start) as usize;
        let result = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0; len];
            file.read_exact_at(&mut buf, range.start).map(|()| buf)
        })
        .await
        .map_err(std::io::Error::other);
        result.and_then(|r| r).map_err(|source| SinkError::Spool { path, source })
    }

    /// Copies the synced bytes into a new file at `dest`, durably (written aside, synced,
    /// renamed), a megabyte at a time, so a long recording never sits in memory whole.
    pub async fn copy_to(&self, dest: &Path) -> Result<(), SinkError> {
        let (file, len, dest) = (self.file().await?, self.progress().synced, dest.to_owned());
        let path = dest.clone();
        let copied = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            use std::os::unix::fs::FileExt;
            let mut tmp = dest.clone().into_os_string();
            tmp.push(".tmp");
            let mut out = create_private(&tmp)?;
            let mut buf = vec![0; 1 << 20];
            let mut at = 0;
            while at < len {
                let n = buf.len().min((len - at) as usize);
                file.read_exact_at(&mut buf[..n], at)?;
                out.write_all(&buf[..n])?;
                at += n as u64;
            }
            out.sync_all()?;
            std::fs::rename(&tmp, &dest)
        })
        .await
        .map_err(std::io::Error::other);
        copied.and_then(|r| r).map_err(|source| SinkError::Spool { path, source })
    }

    /// The manifest, once the recording is finished.
    pub async fn manifest(&self) -> Result<Option<Manifest>, SinkError> {
        if !self.progress().finished {
            return Ok(None);
        }
        let (_, path) = recording_paths(&self.dir, &self.session_id);
        let bytes =
            tokio::fs::read(&path).await.map_err(|source| SinkError::Spool { path: path.clone(), source })?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| SinkError::Spool { path, source: std::io::Error::other(e) })
    }

    /// The manifest file's bytes as written to the spool, once the recording is finished.
    pub async fn manifest_bytes(&self) -> Result<Option<Vec<u8>>, SinkError> {
        if !self.progress().finished {
            return Ok(None);
        }
        let (_, path) = recording_paths(&self.dir, &self.session_id);
        tokio::fs::read(&path).await.map(Some).map_err(|source| SinkError::Spool { path, source })
    }

    /// Where the recording's bytes are (the `.cast.part` name while it runs is not stable).
    fn path(&self) -> PathBuf {
        recording_paths(&self.dir, &self.session_id).0
    }

    fn state_path(&self, sink: &str) -> PathBuf {
        self.dir.join(format!("{}.{sink}.state.json", self.session_id))
    }

    /// A sink's saved progress for this recording, if any.
    pub async fn load_state<T: DeserializeOwned>(&self, sink: &str) -> Result<Option<T>, SinkError> {
        let path = self.state_path(sink);
        match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| SinkError::Spool { path, source: std::io::Error::other(e) }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SinkError::Spool { path, source }),
        }
    }

    /// Saves a sink's progress durably (written aside, synced, renamed over the old one).
    pub async fn save_state<T: Serialize>(&self, sink: &str, state: &T) -> Result<(), SinkError> {
        let path = self.state_path(sink);
        let bytes = serde_json::to_vec(state)
            .map_err(|e| SinkError::Spool { path: path.clone(), source: e.into() })?;
        write_durably(&path, bytes).await.map_err(|source| SinkError::Spool { path, source })
    }
}

/// Creates (or truncates) a file only the broker's user can read: recordings hold typed input.
fn create_private(path: impl AsRef<Path>) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)
}

/// Writes `bytes` to `path` so that after a crash the file holds either the old or the new
/// content, never a mix: a synced temporary file renamed over it.
pub(crate) async fn write_durably(path: &Path, bytes: Vec<u8>) -> std::io::Result<()> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let mut file = create_private(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// A destination for recordings.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Delivers the whole recording and its manifest; returns once both are durable in the
    /// sink and the recording is finished. While it runs it should deliver as the recording
    /// grows. On error the shipper calls it again later; it resumes from its saved state.
    async fn deliver(&self, rec: &SpoolRecording) -> Result<(), SinkError>;
}

/// Jittered exponential backoff for retried deliveries: full jitter over a doubling ceiling.
#[derive(Debug, Clone)]
pub struct Backoff {
    next_ceiling: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at `first`, doubling up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff { next_ceiling: first, max }
    }

    /// The next wait: uniformly random in [ceiling/2, ceiling], then the ceiling doubles.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.next_ceiling;
        self.next_ceiling = (ceiling * 2).min(self.max);
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// Back to the first delay after a success.
    pub fn reset(&mut self, first: Duration) {
        self.next_ceiling = first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<_> = (0..8).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays[1] >= Duration::from_millis(100) && delays[1] <= Duration::from_millis(200));
        assert!(delays[7] >= Duration::from_millis(500) && delays[7] <= Duration::from_secs(1));
    }

    #[test]
    fn sink_specs_round_trip_as_json() {
        let specs = vec![
            SinkSpec::Local,
            SinkSpec::S3(S3Target {
                bucket: "b".into(),
                key_prefix: "p".into(),
                encryption: S3Encryption::Kms { key_id: "alias/x".into() },
            }),
            SinkSpec::CloudWatch(CloudWatchTarget {
                group: "g".into(),
                streaming: true,
                require_encryption: false,
            }),
        ];
        let json = serde_json::to_string(&specs).unwrap();
        assert_eq!(serde_json::from_str::<Vec<SinkSpec>>(&json).unwrap(), specs);
        let keys: Vec<&str> = specs.iter().map(SinkSpec::key).collect();
        assert_eq!(keys, SinkSpec::KEYS, "KEYS lists every key");
    }

    #[tokio::test]
    async fn reads_are_limited_to_synced_bytes_and_state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.cast"), b"0123456789").unwrap();
        let rec = SpoolRecording::finished(dir.path(), "s".into()).unwrap();
        assert_eq!(rec.progress(), Progress { synced: 10, finished: true });
        assert_eq!(rec.read(2..5).await.unwrap(), b"234");
        assert!(rec.read(5..11).await.is_err());
        assert_eq!(rec.load_state::<u64>("s3").await.unwrap(), None);
        rec.save_state("s3", &42u64).await.unwrap();
        assert_eq!(rec.load_state::<u64>("s3").await.unwrap(), Some(42));
    }

    #[tokio::test]
    async fn an_abandoned_recording_waits_out_the_deadline_instead_of_spinning() {
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(std::fs::File::create(dir.path().join("s.cast.part")).unwrap());
        let (tx, rx) = watch::channel(Progress { synced: 5, finished: false });
        let rec = SpoolRecording::live(dir.path(), "s".into(), file, rx);
        drop(tx);
        let start = Instant::now();
        let p = rec.wait_beyond(5, Some(start + Duration::from_millis(200))).await;
        assert!(start.elapsed() >= Duration::from_millis(200));
        assert_eq!(p, Progress { synced: 5, finished: false });
    }

    #[tokio::test]
    async fn a_finished_recording_is_read_by_name_and_holds_no_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("s.cast.part");
        std::fs::write(&part, b"0123456789").unwrap();
        let file = Arc::new(std::fs::File::open(&part).unwrap());
        let (tx, rx) = watch::channel(Progress { synced: 4, finished: false });
        let rec = SpoolRecording::live(dir.path(), "s".into(), file, rx);
        assert_eq!(rec.read(0..4).await.unwrap(), b"0123");
        std::fs::rename(&part, dir.path().join("s.cast")).unwrap();
        tx.send_replace(Progress { synced: 10, finished: true });
        assert_eq!(rec.read(4..10).await.unwrap(), b"456789");
        assert!(rec.live_file.lock().unwrap().is_none(), "the live descriptor is let go");
    }
}
