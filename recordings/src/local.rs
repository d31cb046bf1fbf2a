//! The local-folder recorder: one `<session>.cast` per session plus a manifest beside it.
//!
//! While the session runs the file is `<session>.cast.part`; `finish` appends a closing
//! marker, syncs, renames it to `<session>.cast` and writes `<session>.manifest.json`.
//! If the broker dies first, [`crate::recover`] closes the `.part` file on its next start.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::asciicast::{event_line, header_line, EventCode, Header};
use crate::clock::unix_us;
use crate::sink::SinkSpec;
use crate::spool::{Active, Spool};
use crate::utf8::Utf8Carry;

/// Errors of the recording pipeline.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// Writing a recording file failed.
    #[error("cannot write recording {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The session has no recording.
    #[error("session {0} is not recorded")]
    NotRecorded(String),
    /// The session id cannot be used as a file name.
    #[error("invalid session id for a file name: {0:?}")]
    BadName(String),
    /// The spool is over its cap, so no new recording is started.
    #[error(
        "the recording spool is full ({used} of {cap} bytes): sinks are not taking recordings \
         (see `airlock recordings status`)"
    )]
    SpoolFull {
        /// Bytes the spool holds.
        used: u64,
        /// The spool's cap in bytes.
        cap: u64,
    },
    /// An unfinished recording found at startup could not be closed.
    #[error("cannot recover recording {path}: {reason}")]
    Unrecoverable {
        /// The unfinished file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// What a recording is about, written into its header and manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingMeta {
    /// The recorded session.
    pub session_id: String,
    /// The managed instance the session ran on.
    pub target: String,
    /// The principal who started the session.
    pub owner: String,
    /// The session document the session was started with.
    pub document: String,
    /// Initial terminal width in columns.
    pub width: u16,
    /// Initial terminal height in rows.
    pub height: u16,
    /// The client's `TERM`.
    pub term: String,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndReason {
    /// The remote process exited.
    Exited,
    /// TerminateSession ended it.
    Terminated,
    /// The client went away.
    ClientLost,
    /// The agent went away.
    AgentLost,
    /// A peer broke the protocol.
    ProtocolError,
    /// The broker died mid-session; the recording was closed when it next started.
    BrokerCrashed,
    /// No input for the preferences' idleSessionTimeout.
    IdleTimeout,
    /// The preferences' maxSessionDuration was reached.
    MaxDuration,
}

/// Written beside each finished recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// What the recording is about.
    pub meta: RecordingMeta,
    /// Session start, Unix time in microseconds.
    pub started_unix_us: u64,
    /// Session end, Unix time in microseconds.
    pub ended_unix_us: u64,
    /// Length of the session in microseconds.
    pub duration_us: u64,
    /// The remote process's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// How the session ended.
    pub end_reason: EndReason,
    /// Size of the recording file in bytes.
    pub size: u64,
    /// Hex SHA-256 of the recording file.
    pub sha256: String,
    /// Number of events in the recording.
    pub events: u64,
}

/// The most text one output or input event holds. JSON escaping grows text at most six-fold
/// (`\u001b`), so every event line stays below CloudWatch Logs' 256 KiB per event.
pub const MAX_EVENT_TEXT: usize = 40 * 1024;

/// Writes one session's recording into the spool.
pub struct Recorder {
    /// None when the session runs unrecorded (the preferences allow it and recording failed).
    pub(crate) writing: Option<Writing>,
    pub(crate) meta: RecordingMeta,
    pub(crate) started: Instant,
    pub(crate) started_unix_us: u64,
    pub(crate) hasher: Sha256,
    pub(crate) size: u64,
    pub(crate) events: u64,
    pub(crate) out_carry: Utf8Carry,
    pub(crate) in_carry: Utf8Carry,
    /// Where each direction's frames stand, for a session that survives a broker restart
    /// ([`crate::resume`]).
    pub(crate) frames: Option<crate::resume::FrameLog>,
}

/// The open spool file of a recorded session.
pub(crate) struct Writing {
    pub(crate) file: tokio::fs::File,
    pub(crate) part_path: PathBuf,
    pub(crate) spool: Spool,
    pub(crate) active: Arc<Active>,
}

/// Whether a session id is safe as a file name stem: no separators, no leading dot.
pub(crate) fn valid_session_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@+=,".contains(&b))
}

/// The header's title; [`parse_title`] reads it back when a recording is recovered.
fn title_of(meta: &RecordingMeta) -> String {
    format!("{} on {} by {}", meta.session_id, meta.target, meta.owner)
}

/// The (target, owner) of a title written by [`title_of`].
pub(crate) fn parse_title(session_id: &str, title: &str) -> Option<(String, String)> {
    let rest = title.strip_prefix(session_id)?.strip_prefix(" on ")?;
    // Instance ids have no spaces, so the first " by " ends the target.
    let (target, owner) = rest.split_once(" by ")?;
    Some((target.to_owned(), owner.to_owned()))
}

/// The closing marker's note.
pub(crate) fn end_note(end_reason: EndReason, exit_code: Option<i32>) -> String {
    match exit_code {
        Some(code) => format!("session ended: {end_reason:?}, exit code {code}"),
        None => format!("session ended: {end_reason:?}"),
    }
}

/// The (reason, exit code) of a note written by [`end_note`].
pub(crate) fn parse_end_note(note: &str) -> Option<(EndReason, Option<i32>)> {
    let rest = note.strip_prefix("session ended: ")?;
    let (name, code) = match rest.split_once(", exit code ") {
        Some((name, code)) => (name, Some(code.parse().ok()?)),
        None => (rest, None),
    };
    let reason = serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()?;
    Some((reason, code))
}

/// Publishes a recording whose `.part` file is complete and synced: renames it to its final
/// name, then writes the manifest beside it. Shared by [`Recorder::finish`] and crash recovery.
/// Returns the manifest's size.
pub(crate) async fn publish(dir: &Path, part: &Path, manifest: &Manifest) -> Result<u64, RecordingError> {
    let (cast_path, manifest_path) = recording_paths(dir, &manifest.meta.session_id);
    tokio::fs::rename(part, &cast_path)
        .await
        .map_err(|source| RecordingError::Io { path: cast_path.clone(), source })?;
    let json = serde_json::to_vec_pretty(manifest).unwrap_or_default();
    let tmp = manifest_path.with_extension("json.tmp");
    let io = |source| RecordingError::Io { path: manifest_path.clone(), source };
    // Private to the broker's user: manifests name who did what, recordings hold typed input.
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .await
        .map_err(io)?;
    file.write_all(&json).await.map_err(io)?;
    // Synced before the rename, so a crash cannot leave an empty manifest under the final name.
    file.sync_all().await.map_err(io)?;
    drop(file);
    tokio::fs::rename(&tmp, &manifest_path).await.map_err(io)?;
    // Makes both renames durable; some file systems cannot sync a folder, and the data is
    // already safe in the files, so a failure here is not worth failing the session end.
    if let Ok(d) = tokio::fs::File::open(dir).await {
        let _ = d.sync_all().await;
    }
    Ok(json.len() as u64)
}

/// The file a session's recording is written to while it runs.
pub fn part_path(dir: &Path, session_id: &str) -> PathBuf {
    dir.join(format!("{session_id}.cast.part"))
}

/// The file naming a recording's sinks, written before the recording itself.
pub fn sinks_path(dir: &Path, session_id: &str) -> PathBuf {
    dir.join(format!("{session_id}.sinks.json"))
}

/// Paths of a session's finished recording and manifest in `dir`.
pub fn recording_paths(dir: &Path, session_id: &str) -> (PathBuf, PathBuf) {
    (dir.join(format!("{session_id}.cast")), dir.join(format!("{session_id}.manifest.json")))
}

impl Recorder {
    /// Starts a recording in the spool, bound for `sinks`, and writes its header.
    pub async fn create(
        spool: &Spool,
        meta: RecordingMeta,
        sinks: &[SinkSpec],
    ) -> Result<Self, RecordingError> {
        if !valid_session_id(&meta.session_id) {
            return Err(RecordingError::BadName(meta.session_id));
        }
        spool.admit()?;
        let dir = spool.dir();
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| RecordingError::Io { path, source }
        };
        // Where it goes is on disk before any of it is, so a restart knows where to ship it.
        let sinks_path = sinks_path(dir, &meta.session_id);
        let sinks_json = serde_json::to_vec(sinks).unwrap_or_default();
        let sinks_len = sinks_json.len() as u64;
        crate::sink::write_durably(&sinks_path, sinks_json).await.map_err(io(&sinks_path))?;
        spool.grew(sinks_len);
        let part_path = part_path(dir, &meta.session_id);
        // Readable too: the shipper reads through a clone of this handle, which survives the
        // rename at finish.
        // Private to the broker's user: it holds typed input, passwords included.
        let opened =
            std::fs::OpenOptions::new().create_new(true).read(true).append(true).mode(0o600).open(&part_path);
        let file = opened.map_err(io(&part_path))?;
        let active = spool.register(&meta.session_id, sinks, &file).await?;
        let mut rec = Recorder::unrecorded(meta);
        rec.writing =
            Some(Writing { file: tokio::fs::File::from_std(file), part_path, spool: spool.clone(), active });
        rec.write(header_line(&rec.header())).await?;
        rec.events = 0;
        Ok(rec)
    }

    /// A recorder that records nothing, for a session whose preferences let it run when it
    /// cannot be recorded; [`Recorder::finish`] then says so.
    pub fn unrecorded(meta: RecordingMeta) -> Self {
        Recorder {
            writing: None,
            meta,
            started: Instant::now(),
            started_unix_us: unix_us(),
            hasher: Sha256::new(),
            size: 0,
            events: 0,
            out_carry: Utf8Carry::default(),
            in_carry: Utf8Carry::default(),
            frames: None,
        }
    }

    pub(crate) fn header(&self) -> Header {
        let mut env = std::collections::BTreeMap::new();
        if !self.meta.term.is_empty() {
            env.insert("TERM".to_owned(), self.meta.term.clone());
        }
        Header {
            version: 2,
            width: self.meta.width.max(1),
            height: self.meta.height.max(1),
            timestamp: (self.started_unix_us / 1_000_000) as i64,
            title: Some(title_of(&self.meta)),
            env,
        }
    }

    /// Whether anything is being recorded.
    pub fn is_recording(&self) -> bool {
        self.writing.is_some()
    }

    /// The session this recording belongs to.
    pub fn meta(&self) -> &RecordingMeta {
        &self.meta
    }

    pub(crate) async fn write(&mut self, line: String) -> Result<(), RecordingError> {
        let Some(w) = &mut self.writing else { return Ok(()) };
        self.hasher.update(line.as_bytes());
        self.size += line.len() as u64;
        self.events += 1;
        let result = async {
            w.file.write_all(line.as_bytes()).await?;
            // Waits until the bytes reached the OS: whatever is forwarded after this is on disk
            // or in the page cache, never only in our memory; the spool's syncer fsyncs it.
            w.file.flush().await
        };
        result.await.map_err(|source| RecordingError::Io { path: w.part_path.clone(), source })?;
        w.active.wrote(self.size);
        w.spool.grew(line.len() as u64);
        Ok(())
    }

    /// Writes `text` as events of `code`, none longer than [`MAX_EVENT_TEXT`].
    async fn write_text(&mut self, code: EventCode, text: &str) -> Result<(), RecordingError> {
        let at = self.elapsed_us();
        let mut rest = text;
        while !rest.is_empty() {
            let mut cut = rest.len().min(MAX_EVENT_TEXT);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let (piece, tail) = rest.split_at(cut);
            self.write(event_line(at, code, piece)).await?;
            rest = tail;
        }
        Ok(())
    }

    pub(crate) fn elapsed_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// Records terminal output (stdout and stderr alike).
    pub async fn output(&mut self, data: &[u8]) -> Result<(), RecordingError> {
        let text = self.out_carry.push(data);
        self.write_text(EventCode::Output, &text).await
    }

    /// Records keyboard input.
    pub async fn input(&mut self, data: &[u8]) -> Result<(), RecordingError> {
        let text = self.in_carry.push(data);
        self.write_text(EventCode::Input, &text).await
    }

    /// Records a terminal resize.
    pub async fn resize(&mut self, cols: u16, rows: u16) -> Result<(), RecordingError> {
        self.write(event_line(self.elapsed_us(), EventCode::Resize, &format!("{cols}x{rows}"))).await?;
        self.checkpoint().await
    }

    /// Records bytes of forwarded connection `conn`, when the preferences ask for them:
    /// marker events `conn N > BASE64` (client to target) or `conn N < BASE64` (back), each
    /// within [`MAX_EVENT_TEXT`]. Binary data cannot be asciicast text, hence base64.
    pub async fn connection_data(
        &mut self,
        conn: u64,
        from_client: bool,
        data: &[u8],
    ) -> Result<(), RecordingError> {
        use base64::Engine;
        let arrow = if from_client { '>' } else { '<' };
        // 3 bytes become 4 characters; leave room for the prefix.
        for chunk in data.chunks((MAX_EVENT_TEXT - 64) / 4 * 3) {
            let text = base64::engine::general_purpose::STANDARD.encode(chunk);
            self.write(event_line(
                self.elapsed_us(),
                EventCode::Marker,
                &format!("conn {conn} {arrow} {text}"),
            ))
            .await?;
        }
        Ok(())
    }

    /// Records a lifecycle note, e.g. a forwarded connection opening or closing.
    pub async fn marker(&mut self, note: &str) -> Result<(), RecordingError> {
        self.write(event_line(self.elapsed_us(), EventCode::Marker, note)).await?;
        self.checkpoint().await
    }

    /// Closes the recording: flushes held-back bytes, notes how it ended, syncs, renames
    /// it to its final name and writes the manifest; then the sinks may take all of it.
    pub async fn finish(
        mut self,
        end_reason: EndReason,
        exit_code: Option<i32>,
    ) -> Result<Manifest, RecordingError> {
        if self.writing.is_none() {
            return Err(RecordingError::NotRecorded(self.meta.session_id));
        }
        let rest = self.out_carry.finish();
        self.write_text(EventCode::Output, &rest).await?;
        let note = end_note(end_reason, exit_code);
        let duration_us = self.elapsed_us();
        self.write(event_line(duration_us, EventCode::Marker, &note)).await?;
        let Some(w) = self.writing.take() else {
            return Err(RecordingError::NotRecorded(self.meta.session_id));
        };
        let part = w.part_path.clone();
        w.file.sync_all().await.map_err(|source| RecordingError::Io { path: part.clone(), source })?;
        let manifest = Manifest {
            meta: self.meta,
            started_unix_us: self.started_unix_us,
            ended_unix_us: self.started_unix_us + duration_us,
            duration_us,
            exit_code,
            end_reason,
            size: self.size,
            sha256: hex::encode(self.hasher.finalize()),
            events: self.events,
        };
        let manifest_len = publish(w.spool.dir(), &part, &manifest).await?;
        w.spool.grew(manifest_len);
        w.active.finished(self.size);
        if let Some(frames) = self.frames.take() {
            frames.remove(&w.spool).await;
        }
        Ok(manifest)
    }
}

/// A recording's description for tests across this crate.
#[cfg(test)]
pub(crate) fn test_meta(id: &str) -> RecordingMeta {
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

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_meta as meta;

    fn spool(dir: &Path) -> Spool {
        Spool::open(dir, 1 << 30).unwrap().0
    }

    #[tokio::test]
    async fn records_and_finalizes() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool(dir.path());
        let mut rec = Recorder::create(&spool, meta("admin-1"), &[SinkSpec::Local]).await.unwrap();
        rec.output(b"hello \xe2\x82").await.unwrap();
        rec.output(b"\xac\r\n").await.unwrap();
        rec.input(b"ls\r").await.unwrap();
        rec.resize(120, 40).await.unwrap();
        rec.marker("conn 1 open").await.unwrap();
        let manifest = rec.finish(EndReason::Exited, Some(7)).await.unwrap();
        let (cast, man) = recording_paths(dir.path(), "admin-1");
        let text = std::fs::read_to_string(&cast).unwrap();
        assert!(!dir.path().join("admin-1.cast.part").exists());
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(lines[0]["width"], 80);
        assert_eq!(lines[1][1], "o");
        assert_eq!(lines[1][2], "hello ");
        assert_eq!(lines[2][2], "€\r\n");
        assert_eq!(lines[3][1], "i");
        assert_eq!(lines[4][2], "120x40");
        assert_eq!(
            (&lines[5][1], &lines[5][2]),
            (&serde_json::json!("m"), &serde_json::json!("conn 1 open"))
        );
        assert_eq!(lines[6][1], "m");
        assert!(lines[6][2].as_str().unwrap().contains("exit code 7"));
        assert_eq!(manifest.size, text.len() as u64);
        assert_eq!(manifest.events, 6);
        assert_eq!(manifest.sha256, hex::encode(Sha256::digest(text.as_bytes())));
        let on_disk: Manifest = serde_json::from_slice(&std::fs::read(man).unwrap()).unwrap();
        assert_eq!(on_disk, manifest);
        let sinks: Vec<SinkSpec> =
            serde_json::from_slice(&std::fs::read(sinks_path(dir.path(), "admin-1")).unwrap()).unwrap();
        assert_eq!(sinks, vec![SinkSpec::Local]);
        let size = std::fs::metadata(&cast).unwrap().len()
            + std::fs::metadata(man_path(&dir, "admin-1")).unwrap().len();
        let sinks_len = std::fs::metadata(sinks_path(dir.path(), "admin-1")).unwrap().len();
        assert_eq!(spool.status().used_bytes, size + sinks_len);
    }

    fn man_path(dir: &tempfile::TempDir, id: &str) -> PathBuf {
        recording_paths(dir.path(), id).1
    }

    #[tokio::test]
    async fn long_output_is_cut_into_bounded_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = Recorder::create(&spool(dir.path()), meta("long"), &[]).await.unwrap();
        let text = "é".repeat(MAX_EVENT_TEXT); // two bytes each: 2.0 events' worth
        rec.output(text.as_bytes()).await.unwrap();
        rec.finish(EndReason::Exited, Some(0)).await.unwrap();
        let cast = std::fs::read_to_string(recording_paths(dir.path(), "long").0).unwrap();
        let outputs: Vec<String> = cast
            .lines()
            .skip(1)
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v[1] == "o")
            .map(|v| v[2].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(outputs.len(), 2);
        assert!(outputs.iter().all(|o| o.len() <= MAX_EVENT_TEXT));
        assert_eq!(outputs.concat(), text);
    }

    #[tokio::test]
    async fn a_full_spool_refuses_and_unrecorded_sessions_say_so() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("filler"), [0u8; 20]).unwrap();
        let (spool, _rx) = Spool::open(dir.path(), 10).unwrap();
        assert!(matches!(
            Recorder::create(&spool, meta("s"), &[]).await,
            Err(RecordingError::SpoolFull { used: 20, cap: 10 })
        ));
        let mut rec = Recorder::unrecorded(meta("s"));
        assert!(!rec.is_recording());
        rec.output(b"not kept").await.unwrap();
        assert!(matches!(rec.finish(EndReason::Exited, None).await, Err(RecordingError::NotRecorded(_))));
    }

    #[test]
    fn end_notes_read_back() {
        for (reason, code) in [(EndReason::Exited, Some(-1)), (EndReason::BrokerCrashed, None)] {
            assert_eq!(parse_end_note(&end_note(reason, code)), Some((reason, code)));
        }
        for bad in ["session ended: Nope", "session ended: Exited, exit code x", "conn 1 open"] {
            assert_eq!(parse_end_note(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn refuses_path_tricks_and_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool(dir.path());
        assert!(matches!(Recorder::create(&spool, meta("../x"), &[]).await, Err(RecordingError::BadName(_))));
        assert!(matches!(Recorder::create(&spool, meta(""), &[]).await, Err(RecordingError::BadName(_))));
        let _first = Recorder::create(&spool, meta("dup"), &[]).await.unwrap();
        assert!(matches!(Recorder::create(&spool, meta("dup"), &[]).await, Err(RecordingError::Io { .. })));
    }

    #[tokio::test]
    async fn unwritable_spool_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool(dir.path());
        // Root ignores permission bits, so make the folder unusable another way: replace it.
        std::fs::remove_dir(dir.path()).unwrap();
        std::fs::write(dir.path(), b"x").unwrap();
        assert!(matches!(Recorder::create(&spool, meta("s"), &[]).await, Err(RecordingError::Io { .. })));
        std::fs::remove_file(dir.path()).unwrap();
        std::fs::create_dir(dir.path()).unwrap();
    }
}
