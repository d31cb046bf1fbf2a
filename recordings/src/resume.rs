//! Recordings that survive a broker restart (wire contract §2.4).
//!
//! A shell's or command's frames are numbered per direction, and the broker records a frame
//! only when its number is past what the recording already holds. To resume a session after
//! the broker process died, a new process must know, for the bytes on disk, which frame
//! numbers they end at. The recorder keeps that in `<id>.frames` beside `<id>.cast.part`:
//! after every write it saves a checkpoint (the part file's size, the next output and input
//! frame numbers, and the bytes of an incomplete UTF-8 character held back in each
//! direction). A checkpoint is written after the lines it covers and before the frames are
//! forwarded, so what it claims is always on disk, and a frame it does not claim was never
//! forwarded (the endpoint that owns it still keeps it and resends it).
//!
//! Two 64-byte slots are written in turn, each with a counter and a checksum, so a write
//! cut short leaves the previous checkpoint whole. [`Recorder::reopen`] takes the newest
//! valid one, cuts the part file back to its size (dropping a torn line, or lines written
//! after it that the checkpoint does not cover: they are resent), and appends from there.

use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::clock::unix_us;
use crate::local::{parse_title, part_path, sinks_path, valid_session_id, Writing};
use crate::sink::SinkSpec;
use crate::spool::Spool;
use crate::utf8::Utf8Carry;
use crate::{Recorder, RecordingError, RecordingMeta};

/// Size of one checkpoint slot.
const SLOT: usize = 64;
/// Marks a checkpoint slot (and its layout's version).
const MAGIC: &[u8; 4] = b"ALF1";

/// The file holding a resumable recording's checkpoints.
pub fn frames_path(dir: &Path, session_id: &str) -> PathBuf {
    dir.join(format!("{session_id}.frames"))
}

/// Whether the spool in `dir` holds a recording of `session_id` that can be reopened: an
/// unfinished part file with checkpoints.
pub fn can_reopen(dir: &Path, session_id: &str) -> bool {
    valid_session_id(session_id)
        && part_path(dir, session_id).is_file()
        && frames_path(dir, session_id).is_file()
}

/// Checks at start-up, before the spool is opened, that the unfinished recording of
/// `session_id` in `dir` can be reopened; cuts it back to its last checkpoint and returns
/// what that holds. [`Recorder::reopen`] then finds it ready.
pub async fn check_reopen(dir: &Path, session_id: &str) -> Result<FramePositions, RecordingError> {
    if !can_reopen(dir, session_id) {
        return Err(RecordingError::NotRecorded(session_id.to_owned()));
    }
    let (dir, id) = (dir.to_owned(), session_id.to_owned());
    let path = part_path(&dir, &id);
    let opened = tokio::task::spawn_blocking(move || open_at_checkpoint(&dir, &id)).await;
    let (_, _, checkpoint, _) =
        opened.map_err(|e| RecordingError::Io { path, source: std::io::Error::other(e) })??;
    Ok(checkpoint.positions)
}

/// The frames a recording holds: every frame below these numbers is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FramePositions {
    /// The next output frame (agent to client) to record.
    pub output_next: u64,
    /// The next input frame (client to agent) to record.
    pub input_next: u64,
}

/// A recording reopened after a broker restart.
pub struct Reopened {
    /// Appends where the previous broker stopped.
    pub recorder: Recorder,
    /// What the recording already holds.
    pub positions: FramePositions,
}

/// The checkpoint file of a recording being written.
pub(crate) struct FrameLog {
    file: Arc<std::fs::File>,
    path: PathBuf,
    /// Counter of the last checkpoint written (its slot is `seq % 2`).
    seq: u64,
    positions: FramePositions,
}

impl FrameLog {
    /// Deletes the checkpoints of a finished recording.
    pub(crate) async fn remove(self, spool: &Spool) {
        match tokio::fs::remove_file(&self.path).await {
            Ok(()) => spool.shrank(2 * SLOT as u64),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot delete a recording's checkpoints")
            }
        }
    }
}

/// One checkpoint, as saved.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Checkpoint {
    seq: u64,
    size: u64,
    positions: FramePositions,
    started_unix_us: u64,
    out_carry: Vec<u8>,
    in_carry: Vec<u8>,
}

impl Checkpoint {
    fn encode(&self) -> [u8; SLOT] {
        let mut b = [0u8; SLOT];
        b[0..4].copy_from_slice(MAGIC);
        b[4..12].copy_from_slice(&self.seq.to_le_bytes());
        b[12..20].copy_from_slice(&self.size.to_le_bytes());
        b[20..28].copy_from_slice(&self.positions.output_next.to_le_bytes());
        b[28..36].copy_from_slice(&self.positions.input_next.to_le_bytes());
        b[36..44].copy_from_slice(&self.started_unix_us.to_le_bytes());
        for (at, carry) in [(44, &self.out_carry), (48, &self.in_carry)] {
            // A carry is at most 3 bytes (an incomplete UTF-8 character).
            let n = carry.len().min(3);
            b[at] = n as u8;
            b[at + 1..at + 1 + n].copy_from_slice(&carry[..n]);
        }
        let sum = Sha256::digest(&b[..56]);
        b[56..64].copy_from_slice(&sum[..8]);
        b
    }

    fn decode(b: &[u8]) -> Option<Checkpoint> {
        if b.len() != SLOT || &b[0..4] != MAGIC || Sha256::digest(&b[..56])[..8] != b[56..64] {
            return None;
        }
        let u64_at = |at: usize| b.get(at..at + 8).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes);
        let carry = |at: usize| {
            let n = usize::from(b[at]);
            (n <= 3).then(|| b[at + 1..at + 1 + n].to_vec())
        };
        Some(Checkpoint {
            seq: u64_at(4)?,
            size: u64_at(12)?,
            positions: FramePositions { output_next: u64_at(20)?, input_next: u64_at(28)? },
            started_unix_us: u64_at(36)?,
            out_carry: carry(44)?,
            in_carry: carry(48)?,
        })
    }

    /// The newest valid checkpoint of a frames file.
    fn newest(bytes: &[u8]) -> Option<Checkpoint> {
        bytes.chunks_exact(SLOT).filter_map(Checkpoint::decode).max_by_key(|c| c.seq)
    }
}

impl Recorder {
    /// Keeps checkpoints of this recording from now on, so a restarted broker can reopen it
    /// ([`Recorder::reopen`]). For shells and commands, whose frames are numbered.
    pub async fn track_frames(&mut self) -> Result<(), RecordingError> {
        let Some(w) = &self.writing else { return Ok(()) };
        let path = frames_path(w.spool.dir(), &self.meta.session_id);
        let opened =
            std::fs::OpenOptions::new().create_new(true).read(true).write(true).mode(0o600).open(&path);
        let file = opened.map_err(|source| RecordingError::Io { path: path.clone(), source })?;
        w.spool.grew(2 * SLOT as u64);
        // The first checkpoint is counter 0; the first save below writes counter 1.
        self.frames =
            Some(FrameLog { file: Arc::new(file), path, seq: 0, positions: FramePositions::default() });
        self.save_checkpoint().await
    }

    /// What the recording holds, when it keeps checkpoints.
    pub fn frame_positions(&self) -> Option<FramePositions> {
        self.frames.as_ref().map(|f| f.positions)
    }

    /// Records output frames below `next` (`data` is theirs not recorded yet).
    pub async fn output_frames(&mut self, data: &[u8], next: u64) -> Result<(), RecordingError> {
        self.output(data).await?;
        if let Some(f) = &mut self.frames {
            f.positions.output_next = next;
        }
        self.checkpoint().await
    }

    /// Records input frames below `next` (`data` is theirs not recorded yet).
    pub async fn input_frames(&mut self, data: &[u8], next: u64) -> Result<(), RecordingError> {
        self.input(data).await?;
        if let Some(f) = &mut self.frames {
            f.positions.input_next = next;
        }
        self.checkpoint().await
    }

    /// Saves a checkpoint of what is written, if this recording keeps them.
    pub(crate) async fn checkpoint(&mut self) -> Result<(), RecordingError> {
        if self.frames.is_none() || self.writing.is_none() {
            return Ok(());
        }
        self.save_checkpoint().await
    }

    async fn save_checkpoint(&mut self) -> Result<(), RecordingError> {
        let Some(f) = &mut self.frames else { return Ok(()) };
        f.seq += 1;
        let c = Checkpoint {
            seq: f.seq,
            size: self.size,
            positions: f.positions,
            started_unix_us: self.started_unix_us,
            out_carry: self.out_carry.pending().to_vec(),
            in_carry: self.in_carry.pending().to_vec(),
        };
        let (file, offset, bytes) = (f.file.clone(), (f.seq % 2) * SLOT as u64, c.encode());
        // One small positioned write on the blocking pool: the slot not written stays whole.
        let written = tokio::task::spawn_blocking(move || file.write_all_at(&bytes, offset)).await;
        let io = |source| RecordingError::Io { path: f.path.clone(), source };
        written.map_err(|e| io(std::io::Error::other(e)))?.map_err(io)
    }

    /// Reopens the unfinished recording of `session_id` in `spool` after a broker restart:
    /// cut back to its last checkpoint, registered with the spool again, appending from
    /// there. `document` is the session's (the recording's header does not carry it).
    pub async fn reopen(spool: &Spool, session_id: &str, document: &str) -> Result<Reopened, RecordingError> {
        if !valid_session_id(session_id) {
            return Err(RecordingError::BadName(session_id.to_owned()));
        }
        let dir = spool.dir().to_owned();
        let id = session_id.to_owned();
        let opened = tokio::task::spawn_blocking(move || open_at_checkpoint(&dir, &id)).await;
        let part = part_path(spool.dir(), session_id);
        let (file, frames_file, checkpoint, scan) = opened
            .map_err(|e| RecordingError::Io { path: part.clone(), source: std::io::Error::other(e) })??;
        let sinks_file = sinks_path(spool.dir(), session_id);
        let sinks: Vec<SinkSpec> = match tokio::fs::read(&sinks_file).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| RecordingError::Unrecoverable {
                path: sinks_file.clone(),
                reason: e.to_string(),
            })?,
            Err(source) => return Err(RecordingError::Io { path: sinks_file, source }),
        };
        let active = spool.register(session_id, &sinks, &file).await?;
        active.wrote(checkpoint.size);
        let header = scan.header;
        let (target, owner) =
            header.title.as_deref().and_then(|t| parse_title(session_id, t)).unwrap_or_default();
        let meta = RecordingMeta {
            session_id: session_id.to_owned(),
            target,
            owner,
            document: document.to_owned(),
            width: header.width,
            height: header.height,
            term: header.env.get("TERM").cloned().unwrap_or_default(),
        };
        // Event times go on from the session's start; never before the last one recorded.
        let since_start =
            Duration::from_micros(unix_us().saturating_sub(checkpoint.started_unix_us).max(scan.last_us));
        let started = Instant::now().checked_sub(since_start).unwrap_or_else(Instant::now);
        let mut recorder = Recorder::unrecorded(meta);
        recorder.started = started;
        recorder.started_unix_us = checkpoint.started_unix_us;
        recorder.hasher = scan.hasher;
        recorder.size = checkpoint.size;
        recorder.events = scan.events;
        recorder.out_carry = Utf8Carry::with_pending(&checkpoint.out_carry);
        recorder.in_carry = Utf8Carry::with_pending(&checkpoint.in_carry);
        recorder.writing = Some(Writing {
            file: tokio::fs::File::from_std(file),
            part_path: part,
            spool: spool.clone(),
            active,
        });
        recorder.frames = Some(FrameLog {
            file: Arc::new(frames_file),
            path: frames_path(spool.dir(), session_id),
            seq: checkpoint.seq,
            positions: checkpoint.positions,
        });
        Ok(Reopened { recorder, positions: checkpoint.positions })
    }
}

type Opened = (std::fs::File, std::fs::File, Checkpoint, crate::recover::Scan);

/// Reads the newest checkpoint, cuts the part file back to it and scans what stays.
fn open_at_checkpoint(dir: &Path, session_id: &str) -> Result<Opened, RecordingError> {
    let fpath = frames_path(dir, session_id);
    let part = part_path(dir, session_id);
    let bad = |path: &Path, reason: String| RecordingError::Unrecoverable { path: path.to_owned(), reason };
    let mut frames_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fpath)
        .map_err(|source| RecordingError::Io { path: fpath.clone(), source })?;
    let mut bytes = Vec::with_capacity(2 * SLOT);
    // Two slots at most; a longer file is read no further.
    std::io::Read::read_to_end(&mut std::io::Read::take(&mut frames_file, 2 * SLOT as u64), &mut bytes)
        .map_err(|source| RecordingError::Io { path: fpath.clone(), source })?;
    let checkpoint = Checkpoint::newest(&bytes).ok_or_else(|| bad(&fpath, "no valid checkpoint".into()))?;
    let io = |source| RecordingError::Io { path: part.clone(), source };
    // Appending, as when it was created; readable for the shipper's clone of the handle.
    let file = std::fs::OpenOptions::new().read(true).append(true).open(&part).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len < checkpoint.size {
        return Err(bad(
            &part,
            format!("{len} bytes, shorter than its checkpoint of {} bytes: lost data", checkpoint.size),
        ));
    }
    // Lines past the checkpoint are not claimed by it: their frames are resent.
    file.set_len(checkpoint.size).map_err(io)?;
    let scan = crate::recover::scan(&part, &file)?;
    if scan.valid_len != checkpoint.size {
        return Err(bad(&part, format!("its checkpoint ends inside a line at byte {}", checkpoint.size)));
    }
    Ok((file, frames_file, checkpoint, scan))
}

#[cfg(test)]
mod tests;
