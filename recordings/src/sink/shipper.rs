//! The shipper: delivers every spooled recording to each of its sinks, retrying with
//! jittered backoff for as long as a sink is down, and removes a recording from the spool
//! only once every sink has confirmed it. A delivery whose service did not answer also
//! retries as soon as a recovery probe finds the service answering again (see `recovery`),
//! so that after an outage delivery resumes within about a second, not after the backoff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use super::cloudwatch::CloudWatchSink;
use super::local::LocalSink;
use super::recovery::Recovery;
use super::s3::S3Sink;
use super::{write_durably, Backoff, Sink, SinkError, SinkSpec, SpoolRecording};
use crate::aws::AwsClients;
use crate::clock::unix_us;
use crate::local::{part_path, recording_paths, sinks_path, valid_session_id};
use crate::spool::{NewRecording, Spool};

/// First wait after a failed delivery.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between attempts while a sink stays down.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Deliveries of finished recordings running at once. After an outage thousands may wait;
/// they go a few at a time rather than all at the service together. Live recordings do
/// not wait for a slot: their delivery runs as long as their session.
const FINISHED_AT_ONCE: usize = 16;

/// A delivery that has not completed, for operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeliveryStatus {
    /// The recorded session.
    pub session_id: String,
    /// The sink's key (`local`, `s3`, `cloudwatch`).
    pub sink: String,
    /// Bucket and prefix, or log group.
    pub destination: String,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Why the latest attempt failed, if it did.
    pub last_error: Option<String>,
    /// The latest thing the sink reported about this delivery that operators should know,
    /// e.g. that a CloudWatch log stream vanished and is being filled again from the start.
    pub notice: Option<String>,
    /// When the delivery was queued, Unix time in microseconds.
    pub since_unix_us: u64,
}

struct Inner {
    spool: Spool,
    local_dir: PathBuf,
    aws: Option<AwsClients>,
    /// Recovery probes for S3 and CloudWatch Logs, when AWS is configured.
    recovery: Option<(Arc<Recovery>, Arc<Recovery>)>,
    pending: Mutex<BTreeMap<(String, &'static str), DeliveryStatus>>,
    finished_slots: tokio::sync::Semaphore,
}

/// Runs the deliveries; cheap to clone.
#[derive(Clone)]
pub struct Shipper {
    inner: Arc<Inner>,
}

fn destination(spec: &SinkSpec, local_dir: &Path) -> String {
    match spec {
        SinkSpec::Local => local_dir.display().to_string(),
        SinkSpec::S3(t) => format!("s3://{}/{}", t.bucket, t.key_prefix.trim_matches('/')),
        SinkSpec::CloudWatch(t) => format!("log group {}", t.group),
    }
}

fn done_path(dir: &Path, session_id: &str, sink: &str) -> PathBuf {
    dir.join(format!("{session_id}.{sink}.done"))
}

impl Shipper {
    /// Starts delivering: first every finished recording already in the spool (left by an
    /// earlier run; run crash recovery before this), then each new one `new` announces.
    pub async fn start(
        spool: Spool,
        mut new: mpsc::Receiver<NewRecording>,
        local_dir: PathBuf,
        aws: Option<AwsClients>,
    ) -> Result<Shipper, SinkError> {
        let recovery = aws.as_ref().map(|a| (Recovery::s3(&a.s3), Recovery::logs(&a.logs)));
        let shipper = Shipper {
            inner: Arc::new(Inner {
                spool,
                local_dir,
                aws,
                recovery,
                pending: Mutex::new(BTreeMap::new()),
                finished_slots: tokio::sync::Semaphore::new(FINISHED_AT_ONCE),
            }),
        };
        for (id, sinks) in shipper.spooled().await? {
            match SpoolRecording::finished(shipper.inner.spool.dir(), id.clone()) {
                Ok(rec) => shipper.launch(rec, sinks),
                Err(e) => tracing::error!(session = %id, error = %e, "cannot deliver a spooled recording"),
            }
        }
        let s = shipper.clone();
        tokio::spawn(async move {
            while let Some(n) = new.recv().await {
                let rec = SpoolRecording::live(s.inner.spool.dir(), n.session_id, n.file, n.progress);
                s.launch(rec, n.sinks);
            }
        });
        Ok(shipper)
    }

    /// The finished recordings in the spool with their sinks; cleans up what a removal that
    /// a crash cut short left behind.
    async fn spooled(&self) -> Result<Vec<(String, Vec<SinkSpec>)>, SinkError> {
        let dir = self.inner.spool.dir().to_owned();
        let io = |source| SinkError::Spool { path: dir.clone(), source };
        let mut entries = tokio::fs::read_dir(&dir).await.map_err(io)?;
        let mut ids = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(io)? {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let id = name.strip_suffix(".sinks.json").or_else(|| name.strip_suffix(".cast"));
            if let Some(id) = id.filter(|id| valid_session_id(id)) {
                ids.push(id.to_owned());
            }
        }
        ids.sort();
        ids.dedup();
        let mut found = Vec::new();
        for id in ids {
            let (cast, _) = recording_paths(&dir, &id);
            if tokio::fs::try_exists(part_path(&dir, &id)).await.unwrap_or(true) {
                tracing::error!(session = %id, "an unfinished recording is in the spool; it is delivered once recovered");
                continue;
            }
            let sinks_file = sinks_path(&dir, &id);
            if !tokio::fs::try_exists(&cast).await.unwrap_or(true) {
                // Removal deletes the recording first and its sinks file last.
                self.remove(&id).await;
                continue;
            }
            let sinks = match tokio::fs::read(&sinks_file).await {
                Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    tracing::error!(session = %id, error = %e, "unreadable sinks file; delivering to the local folder only");
                    vec![SinkSpec::Local]
                }),
                Err(_) => vec![SinkSpec::Local],
            };
            found.push((id, sinks));
        }
        Ok(found)
    }

    fn launch(&self, mut rec: SpoolRecording, sinks: Vec<SinkSpec>) {
        let this = self.clone();
        let reporter = Arc::downgrade(&self.inner);
        let id = rec.session_id().to_owned();
        rec.on_notice(move |sink, text| {
            let Some(inner) = reporter.upgrade() else { return };
            let mut pending = inner.pending.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = pending.values_mut().find(|s| s.session_id == id && s.sink == sink) {
                s.notice = Some(text);
            }
        });
        tokio::spawn(async move {
            let rec = Arc::new(rec);
            let mut tasks = tokio::task::JoinSet::new();
            for spec in sinks {
                let (this, rec) = (this.clone(), rec.clone());
                tasks.spawn(async move { this.deliver_to(&rec, spec).await });
            }
            while tasks.join_next().await.is_some() {}
            this.remove(rec.session_id()).await;
        });
    }

    fn sink_for(&self, spec: &SinkSpec) -> Result<Box<dyn Sink>, SinkError> {
        Ok(match spec {
            SinkSpec::Local => Box::new(LocalSink::new(self.inner.local_dir.clone())),
            SinkSpec::S3(t) => {
                let aws = self.inner.aws.as_ref().ok_or(SinkError::NotConfigured("AWS"))?;
                Box::new(S3Sink::new(aws.s3.clone(), t.clone()))
            }
            SinkSpec::CloudWatch(t) => {
                let aws = self.inner.aws.as_ref().ok_or(SinkError::NotConfigured("AWS"))?;
                Box::new(CloudWatchSink::new(aws.logs.clone(), t.clone()))
            }
        })
    }

    /// Delivers `rec` to one sink, however many attempts it takes.
    async fn deliver_to(&self, rec: &SpoolRecording, spec: SinkSpec) {
        let dir = self.inner.spool.dir().to_owned();
        let id = rec.session_id().to_owned();
        let key = spec.key();
        let done = done_path(&dir, &id, key);
        if tokio::fs::try_exists(&done).await.unwrap_or(false) {
            return;
        }
        let status = DeliveryStatus {
            session_id: id.clone(),
            sink: key.to_owned(),
            destination: destination(&spec, &self.inner.local_dir),
            attempts: 0,
            last_error: None,
            notice: None,
            since_unix_us: unix_us(),
        };
        self.pending().insert((id.clone(), key), status);
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        loop {
            let slot = match rec.progress().finished {
                true => self.inner.finished_slots.acquire().await.ok(),
                false => None,
            };
            self.update(&id, key, |s| s.attempts += 1);
            let result = match self.sink_for(&spec) {
                Ok(sink) => sink.deliver(rec).await,
                Err(e) => Err(e),
            };
            // Not held through the backoff below.
            drop(slot);
            match result {
                Ok(()) => {
                    let marked = write_durably(&done, Vec::new()).await;
                    if let Err(e) = marked {
                        tracing::error!(session = %id, sink = key, error = %e, "cannot note a finished delivery");
                    }
                    self.pending().remove(&(id.clone(), key));
                    tracing::info!(session = %id, sink = key, "recording delivered");
                    return;
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        session = %id, sink = key, error = %e, retry_in_ms = delay.as_millis() as u64,
                        "recording delivery failed; it stays in the spool"
                    );
                    self.update(&id, key, |s| s.last_error = Some(e.to_string()));
                    let recovery = self.recovery_for(&spec).filter(|_| e.is_unanswered());
                    match recovery {
                        Some(r) => {
                            if r.wait(delay).await {
                                tracing::info!(session = %id, sink = key, "the service answers again; retrying now");
                                // A fresh start: the outage is over.
                                backoff.reset(RETRY_FIRST);
                            }
                        }
                        None => tokio::time::sleep(delay).await,
                    }
                }
            }
        }
    }

    /// The recovery probe of the service behind `spec`, if it is remote.
    fn recovery_for(&self, spec: &SinkSpec) -> Option<Arc<Recovery>> {
        let (s3, logs) = self.inner.recovery.as_ref()?;
        match spec {
            SinkSpec::Local => None,
            SinkSpec::S3(_) => Some(s3.clone()),
            SinkSpec::CloudWatch(_) => Some(logs.clone()),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, &'static str), DeliveryStatus>> {
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, id: &str, key: &'static str, f: impl FnOnce(&mut DeliveryStatus)) {
        if let Some(s) = self.pending().get_mut(&(id.to_owned(), key)) {
            f(s);
        }
    }

    /// Deletes a fully delivered recording's files from the spool: the recording first and
    /// the sinks file last, so a crash in between leaves something [`Shipper::spooled`]
    /// recognizes and finishes removing.
    async fn remove(&self, id: &str) {
        let dir = self.inner.spool.dir().to_owned();
        let (cast, manifest) = recording_paths(&dir, id);
        let mut files = vec![cast, manifest];
        for key in SinkSpec::KEYS {
            files.push(dir.join(format!("{id}.{key}.state.json")));
            files.push(done_path(&dir, id, key));
        }
        files.push(sinks_path(&dir, id));
        let mut freed = 0;
        for f in files {
            let len = tokio::fs::metadata(&f).await.map(|m| m.len()).unwrap_or(0);
            match tokio::fs::remove_file(&f).await {
                Ok(()) => freed += len,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(file = %f.display(), error = %e, "cannot remove a delivered recording")
                }
            }
        }
        self.inner.spool.shrank(freed);
    }

    /// Deliveries not yet confirmed, oldest first.
    pub fn status(&self) -> Vec<DeliveryStatus> {
        let mut list: Vec<_> = self.pending().values().cloned().collect();
        list.sort_by_key(|s| s.since_unix_us);
        list
    }

    /// The spool the shipper empties.
    pub fn spool(&self) -> &Spool {
        &self.inner.spool
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::test_meta as meta;
    use crate::{EndReason, Recorder};

    async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..200 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("timed out waiting until {what}");
    }

    #[tokio::test]
    async fn a_finished_recording_moves_to_the_local_folder_and_leaves_the_spool() {
        let root = tempfile::tempdir().unwrap();
        let (spool_dir, local) = (root.path().join("spool"), root.path().join("recordings"));
        let (spool, rx) = Spool::open(&spool_dir, 1 << 30).unwrap();
        let _shipper = Shipper::start(spool.clone(), rx, local.clone(), None).await.unwrap();
        let mut rec = Recorder::create(&spool, meta("s1"), &[SinkSpec::Local]).await.unwrap();
        rec.output(b"hello\r\n").await.unwrap();
        let manifest = rec.finish(EndReason::Exited, Some(0)).await.unwrap();
        let (cast, man) = recording_paths(&local, "s1");
        wait_until("the spool is empty", || std::fs::read_dir(&spool_dir).unwrap().count() == 0).await;
        assert_eq!(spool.status().used_bytes, 0);
        assert_eq!(std::fs::metadata(&cast).unwrap().len(), manifest.size);
        assert!(man.exists());
    }

    #[tokio::test]
    async fn a_sink_that_cannot_work_keeps_the_recording_and_says_why() {
        let root = tempfile::tempdir().unwrap();
        let spool_dir = root.path().join("spool");
        let (spool, rx) = Spool::open(&spool_dir, 1 << 30).unwrap();
        let shipper = Shipper::start(spool.clone(), rx, root.path().join("recordings"), None).await.unwrap();
        let target = super::super::S3Target {
            bucket: "b".into(),
            key_prefix: String::new(),
            encryption: super::super::S3Encryption::BucketDefault,
        };
        let sinks = [SinkSpec::Local, SinkSpec::S3(target)];
        let rec = Recorder::create(&spool, meta("s2"), &sinks).await.unwrap();
        rec.finish(EndReason::Exited, Some(0)).await.unwrap();
        wait_until("the local copy is done", || done_path(&spool_dir, "s2", "local").exists()).await;
        wait_until("the S3 error shows", || shipper.status().iter().any(|s| s.last_error.is_some())).await;
        let status = shipper.status();
        assert_eq!(status.len(), 1);
        assert_eq!(status[0].sink, "s3");
        assert!(status[0].last_error.as_deref().unwrap_or("").contains("no AWS client"), "{status:?}");
        assert!(recording_paths(&spool_dir, "s2").0.exists());
    }

    #[tokio::test]
    async fn a_restart_delivers_what_the_spool_holds_and_finishes_cut_removals() {
        let root = tempfile::tempdir().unwrap();
        let (spool_dir, local) = (root.path().join("spool"), root.path().join("recordings"));
        {
            let (spool, _no_shipper) = Spool::open(&spool_dir, 1 << 30).unwrap();
            let rec = Recorder::create(&spool, meta("s3"), &[SinkSpec::Local]).await.unwrap();
            rec.finish(EndReason::Exited, Some(0)).await.unwrap();
        }
        // A removal cut short: only the sinks file of an old recording is left.
        std::fs::write(sinks_path(&spool_dir, "old"), b"[]").unwrap();
        let (spool, rx) = Spool::open(&spool_dir, 1 << 30).unwrap();
        let _shipper = Shipper::start(spool, rx, local.clone(), None).await.unwrap();
        wait_until("the spool is empty", || std::fs::read_dir(&spool_dir).unwrap().count() == 0).await;
        assert!(recording_paths(&local, "s3").1.exists());
    }
}
