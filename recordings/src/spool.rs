//! The spool: the broker's local folder every recording is written to first, and where it
//! stays until every sink it is configured for has confirmed it.
//!
//! Writes are appended and reach the OS before the relay forwards the bytes they record;
//! a background task fsyncs every file written to since its last pass in one go (group
//! commit), so a busy broker pays one fsync per file per [`SYNC_INTERVAL`], not one per
//! write. Sinks only ever read bytes that are synced: what a sink holds is always a prefix
//! of what the spool holds, even after a power cut.
//!
//! The spool has a disk-usage cap. Above it, new recordings are refused (sessions that must
//! be recorded are then refused too) and an alarm is raised: logged as an error, and shown by
//! [`Spool::status`]. Recordings already running keep writing: cutting them would lose data.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::sink::SinkSpec;
use crate::RecordingError;

/// How often written bytes are fsynced, at most.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// How many new recordings may wait for the shipper before creating one waits.
const NEW_QUEUE: usize = 256;

/// How far a recording in the spool has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Bytes durably on disk (fsynced), always at a line boundary.
    pub synced: u64,
    /// The recording is finished: `synced` is its final size and its manifest exists.
    pub finished: bool,
}

/// A recording being written: shared by its writer, the syncer and its readers.
pub(crate) struct Active {
    pub(crate) session_id: String,
    /// A second handle on the file being written, for fsync.
    file: std::fs::File,
    /// Bytes handed to the OS so far.
    written: AtomicU64,
    progress: watch::Sender<Progress>,
}

impl Active {
    /// Notes that the file now holds `len` bytes written to the OS.
    pub(crate) fn wrote(&self, len: u64) {
        self.written.store(len, Ordering::Release);
    }

    /// Notes that the recording is complete and synced at `len` bytes.
    pub(crate) fn finished(&self, len: u64) {
        self.written.store(len, Ordering::Release);
        self.progress.send_replace(Progress { synced: len, finished: true });
    }

    /// A receiver of this recording's progress.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }
}

/// A new recording announced to the shipper.
pub struct NewRecording {
    /// The recorded session.
    pub session_id: String,
    /// Where it goes.
    pub sinks: Vec<SinkSpec>,
    /// How far the recording has been written.
    pub progress: watch::Receiver<Progress>,
    /// The file being written (its `.cast.part`, open, so a rename at finish does not matter).
    pub file: Arc<std::fs::File>,
}

/// The spool's state as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SpoolStatus {
    /// The spool directory.
    pub path: PathBuf,
    /// Bytes the spool holds.
    pub used_bytes: u64,
    /// The spool's cap in bytes.
    pub cap_bytes: u64,
    /// Used bytes are above the cap: new recordings are refused.
    pub alarm: bool,
    /// Recordings being written now.
    pub active_recordings: usize,
}

struct Inner {
    dir: PathBuf,
    cap: u64,
    used: AtomicU64,
    alarm: AtomicBool,
    active: Mutex<Vec<Weak<Active>>>,
    new_tx: mpsc::Sender<NewRecording>,
}

/// The spool folder; cheap to clone.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

impl Spool {
    /// Opens (creating) the spool at `dir` with a cap of `cap` bytes and starts its syncer.
    /// Returns the receiver of new recordings for the shipper.
    pub fn open(dir: &Path, cap: u64) -> Result<(Spool, mpsc::Receiver<NewRecording>), RecordingError> {
        let io = |source| RecordingError::Io { path: dir.to_owned(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        // Recordings hold everything typed and shown in sessions: the broker's user only.
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).map_err(io)?;
        let mut used = 0;
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let meta = entry.and_then(|e| e.metadata()).map_err(io)?;
            if meta.is_file() {
                used += meta.len();
            }
        }
        let (new_tx, new_rx) = mpsc::channel(NEW_QUEUE);
        let spool = Spool {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                cap,
                used: AtomicU64::new(used),
                alarm: AtomicBool::new(false),
                active: Mutex::new(Vec::new()),
                new_tx,
            }),
        };
        spool.check_cap();
        tokio::spawn(sync_loop(Arc::downgrade(&spool.inner)));
        Ok((spool, new_rx))
    }

    /// The spool folder.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Refuses a new recording when the spool is over its cap.
    pub(crate) fn admit(&self) -> Result<(), RecordingError> {
        let used = self.inner.used.load(Ordering::Relaxed);
        if used >= self.inner.cap {
            self.check_cap();
            return Err(RecordingError::SpoolFull { used, cap: self.inner.cap });
        }
        Ok(())
    }

    /// Registers a recording whose file was just created, and tells the shipper.
    pub(crate) async fn register(
        &self,
        session_id: &str,
        sinks: &[SinkSpec],
        file: &std::fs::File,
    ) -> Result<Arc<Active>, RecordingError> {
        let io = |source| RecordingError::Io { path: self.inner.dir.clone(), source };
        let active = Arc::new(Active {
            session_id: session_id.to_owned(),
            file: file.try_clone().map_err(io)?,
            written: AtomicU64::new(0),
            progress: watch::Sender::new(Progress::default()),
        });
        let reader = Arc::new(file.try_clone().map_err(io)?);
        {
            let mut list = self.inner.active.lock().unwrap_or_else(|p| p.into_inner());
            list.retain(|w| w.strong_count() > 0);
            list.push(Arc::downgrade(&active));
        }
        let announce = NewRecording {
            session_id: session_id.to_owned(),
            sinks: sinks.to_vec(),
            progress: active.subscribe(),
            file: reader,
        };
        // A closed receiver means no shipper runs (a unit test, or shutdown): the recording
        // stays in the spool and the next start delivers it.
        let _ = self.inner.new_tx.send(announce).await;
        Ok(active)
    }

    /// Counts bytes added to the spool.
    pub(crate) fn grew(&self, bytes: u64) {
        self.inner.used.fetch_add(bytes, Ordering::Relaxed);
        self.check_cap();
    }

    /// Counts bytes removed from the spool.
    pub fn shrank(&self, bytes: u64) {
        let _ = self
            .inner
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| Some(u.saturating_sub(bytes)));
        self.check_cap();
    }

    /// Raises or clears the alarm on crossing the cap, logging each crossing once.
    fn check_cap(&self) {
        let used = self.inner.used.load(Ordering::Relaxed);
        let over = used >= self.inner.cap;
        if self.inner.alarm.swap(over, Ordering::Relaxed) != over {
            if over {
                tracing::error!(
                    used_bytes = used,
                    cap_bytes = self.inner.cap,
                    spool = %self.inner.dir.display(),
                    "ALARM: the recording spool is over its cap; new sessions that require recording are \
                     refused until sinks take recordings (see `airlock recordings status`)"
                );
            } else {
                tracing::warn!(
                    used_bytes = used,
                    cap_bytes = self.inner.cap,
                    "the recording spool is below its cap again"
                );
            }
        }
    }

    /// The spool's usage and alarm.
    pub fn status(&self) -> SpoolStatus {
        let active = self.inner.active.lock().unwrap_or_else(|p| p.into_inner());
        SpoolStatus {
            path: self.inner.dir.clone(),
            used_bytes: self.inner.used.load(Ordering::Relaxed),
            cap_bytes: self.inner.cap,
            alarm: self.inner.alarm.load(Ordering::Relaxed),
            active_recordings: active.iter().filter(|w| w.strong_count() > 0).count(),
        }
    }
}

/// Fsyncs every recording written to since the last pass, all in one blocking task.
async fn sync_loop(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(SYNC_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let dirty: Vec<(Arc<Active>, u64)> = {
            let mut list = inner.active.lock().unwrap_or_else(|p| p.into_inner());
            list.retain(|w| w.strong_count() > 0);
            list.iter()
                .filter_map(Weak::upgrade)
                .filter_map(|a| {
                    let written = a.written.load(Ordering::Acquire);
                    let p = *a.progress.borrow();
                    (!p.finished && written > p.synced).then_some((a, written))
                })
                .collect()
        };
        drop(inner);
        if dirty.is_empty() {
            continue;
        }
        let synced = tokio::task::spawn_blocking(move || {
            dirty
                .into_iter()
                .filter_map(|(a, written)| match a.file.sync_data() {
                    Ok(()) => Some((a, written)),
                    Err(e) => {
                        // The writer sees the same disk trouble on its next write and ends
                        // the recording; here it only means this pass promises nothing.
                        tracing::error!(session = %a.session_id, error = %e, "cannot fsync a spooled recording");
                        None
                    }
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (a, written) in synced {
            a.progress.send_if_modified(|p| {
                let advance = !p.finished && written > p.synced;
                if advance {
                    p.synced = written;
                }
                advance
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn written_bytes_become_synced_within_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, mut rx) = Spool::open(dir.path(), 1 << 30).unwrap();
        let mut file = std::fs::File::create(dir.path().join("s.cast.part")).unwrap();
        let active = spool.register("s", &[SinkSpec::Local], &file).await.unwrap();
        let mut new = rx.recv().await.unwrap();
        assert_eq!(new.session_id, "s");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777, 0o700);
        file.write_all(b"line\n").unwrap();
        active.wrote(5);
        tokio::time::timeout(SYNC_INTERVAL * 20, new.progress.wait_for(|p| p.synced == 5))
            .await
            .unwrap()
            .unwrap();
        active.finished(9);
        assert_eq!(*new.progress.borrow(), Progress { synced: 9, finished: true });
        assert_eq!(spool.status().active_recordings, 1);
        drop(active);
        assert_eq!(spool.status().active_recordings, 0);
    }

    #[tokio::test]
    async fn the_cap_refuses_new_recordings_and_raises_the_alarm() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old.cast"), vec![b'x'; 100]).unwrap();
        let (spool, _rx) = Spool::open(dir.path(), 150).unwrap();
        assert_eq!(spool.status().used_bytes, 100);
        assert!(!spool.status().alarm);
        spool.admit().unwrap();
        spool.grew(60);
        assert!(spool.status().alarm);
        assert!(matches!(spool.admit(), Err(RecordingError::SpoolFull { used: 160, cap: 150 })));
        spool.shrank(100);
        assert!(!spool.status().alarm);
        spool.admit().unwrap();
    }
}
