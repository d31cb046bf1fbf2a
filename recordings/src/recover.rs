//! Crash recovery: closes the `<id>.cast.part` files a broker left behind when it died
//! mid-session, so each becomes a valid `<id>.cast` with a manifest, as after `finish`.
//!
//! Every line the recorder wrote is complete once its write returned, so only the last
//! line can be torn (a write cut short by the kill); that line is dropped. A complete line
//! that is not an event means the file was damaged some other way: it is left as is for a
//! person to look at rather than cut down.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::asciicast::{event_line, event_time_us, EventCode, Header};
use crate::local::{end_note, parse_end_note, parse_title, publish, recording_paths, valid_session_id};
use crate::{EndReason, Manifest, RecordingError, RecordingMeta};

/// Closes every unfinished recording in `dir` with a `session ended: BrokerCrashed` marker
/// (unless its last event already is a closing marker) and returns their manifests.
/// Stops at the first file it cannot recover; the ones before stay recovered and the rest
/// are tried again by the next call. A missing `dir` holds none.
pub async fn recover_unfinished(dir: &Path) -> Result<Vec<Manifest>, RecordingError> {
    recover_unfinished_except(dir, &std::collections::HashSet::new()).await
}

/// [`recover_unfinished`], leaving alone the recordings of the sessions in `keep`: a
/// restarted broker resumes them ([`crate::Recorder::reopen`]).
pub async fn recover_unfinished_except(
    dir: &Path,
    keep: &std::collections::HashSet<String>,
) -> Result<Vec<Manifest>, RecordingError> {
    let io = |source| RecordingError::Io { path: dir.to_owned(), source };
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut parts = Vec::new();
    while let Some(entry) = entries.next_entry().await.map_err(io)? {
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".cast.part")) else { continue };
        // Only names the recorder could have made; anything else is not ours to touch.
        if valid_session_id(id) && !keep.contains(id) && entry.file_type().await.map_err(io)?.is_file() {
            parts.push((id.to_owned(), entry.path()));
        }
    }
    parts.sort();
    let mut recovered = Vec::new();
    for (id, part) in parts {
        let (cast, _) = recording_paths(dir, &id);
        if tokio::fs::try_exists(&cast).await.map_err(io)? {
            return Err(RecordingError::Unrecoverable {
                path: part,
                reason: format!("{} exists too; renaming would overwrite it", cast.display()),
            });
        }
        let path = part.clone();
        // Reading a long recording and fsyncing it would stall the runtime's threads.
        let manifest = tokio::task::spawn_blocking(move || close_part(&path, id))
            .await
            .map_err(|e| RecordingError::Io { path: part.clone(), source: std::io::Error::other(e) })??;
        publish(dir, &part, &manifest).await?;
        // Closed for good: its resume checkpoint, if it had one, is of no use any more.
        let frames = crate::resume::frames_path(dir, &manifest.meta.session_id);
        if let Err(e) = tokio::fs::remove_file(&frames).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(RecordingError::Io { path: frames, source: e });
            }
        }
        recovered.push(manifest);
    }
    Ok(recovered)
}

/// What the intact lines of a part file hold.
pub(crate) struct Scan {
    pub(crate) header: Header,
    /// Bytes of complete, valid lines; anything after is a torn line.
    pub(crate) valid_len: u64,
    pub(crate) hasher: Sha256,
    pub(crate) events: u64,
    pub(crate) last_us: u64,
    /// How the session ended, if the last event already says so.
    pub(crate) ended: Option<(EndReason, Option<i32>)>,
}

pub(crate) fn scan(path: &Path, file: &File) -> Result<Scan, RecordingError> {
    let io = |source| RecordingError::Io { path: path.to_owned(), source };
    let bad = |reason: String| RecordingError::Unrecoverable { path: path.to_owned(), reason };
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let (mut header, mut valid_len, mut hasher, mut events, mut last_us) = (None, 0u64, Sha256::new(), 0, 0);
    let mut ended = None;
    for number in 1.. {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        if header.is_none() {
            let h = serde_json::from_slice::<Header>(&line).map_err(|e| bad(format!("header: {e}")))?;
            header = Some(h);
        } else {
            let text = std::str::from_utf8(&line).map_err(|_| bad(format!("line {number} is not UTF-8")))?;
            let parsed = serde_json::from_str::<(serde::de::IgnoredAny, String, String)>(text).ok();
            let event = parsed.zip(event_time_us(text));
            let ((_, code, data), time) =
                event.ok_or_else(|| bad(format!("line {number} is not an asciicast event")))?;
            ended = if code == EventCode::Marker.as_str() { parse_end_note(&data) } else { None };
            // Times only grow in a recording; the max keeps the closing marker last in time
            // even if a line says otherwise.
            last_us = last_us.max(time);
            events += 1;
        }
        hasher.update(&line);
        valid_len += n as u64;
    }
    let header = header.ok_or_else(|| bad("no complete header line".to_owned()))?;
    Ok(Scan { header, valid_len, hasher, events, last_us, ended })
}

/// Cuts the torn tail, appends the closing marker and syncs; returns the manifest to publish.
fn close_part(path: &Path, session_id: String) -> Result<Manifest, RecordingError> {
    let io = |source| RecordingError::Io { path: path.to_owned(), source };
    let mut file = OpenOptions::new().read(true).write(true).open(path).map_err(io)?;
    let Scan { header, mut valid_len, mut hasher, mut events, last_us, ended } = scan(path, &file)?;
    file.set_len(valid_len).map_err(io)?;
    // A closing marker already last: the broker died after writing it (in `finish`, or in an
    // earlier recovery) but before the rename, and that ending is the true one.
    let (end_reason, exit_code) = match ended {
        Some(end) => end,
        None => {
            file.seek(SeekFrom::Start(valid_len)).map_err(io)?;
            // When the broker died is unknown; the last recorded event is the latest time known.
            let marker = event_line(last_us, EventCode::Marker, &end_note(EndReason::BrokerCrashed, None));
            file.write_all(marker.as_bytes()).map_err(io)?;
            hasher.update(marker.as_bytes());
            valid_len += marker.len() as u64;
            events += 1;
            (EndReason::BrokerCrashed, None)
        }
    };
    file.sync_all().map_err(io)?;
    let started_unix_us = u64::try_from(header.timestamp).unwrap_or(0).saturating_mul(1_000_000);
    let (target, owner) =
        header.title.as_deref().and_then(|t| parse_title(&session_id, t)).unwrap_or_default();
    let meta = RecordingMeta {
        session_id,
        target,
        owner,
        // The header does not carry the document; the session's row in the store does.
        document: String::new(),
        width: header.width,
        height: header.height,
        term: header.env.get("TERM").cloned().unwrap_or_default(),
    };
    Ok(Manifest {
        meta,
        started_unix_us,
        ended_unix_us: started_unix_us.saturating_add(last_us),
        duration_us: last_us,
        exit_code,
        end_reason,
        size: valid_len,
        sha256: hex::encode(hasher.finalize()),
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::part_path;
    use crate::Recorder;

    fn meta(id: &str) -> RecordingMeta {
        RecordingMeta {
            session_id: id.into(),
            target: "mi-0123456789abcdef0".into(),
            owner: "arn:airlock:iam::000000000000:user/admin".into(),
            document: "SSM-SessionManagerRunShell".into(),
            width: 100,
            height: 30,
            term: "xterm".into(),
        }
    }

    fn check_published(dir: &Path, id: &str, m: &Manifest) -> Vec<serde_json::Value> {
        let (cast, man) = recording_paths(dir, id);
        assert!(!part_path(dir, id).exists());
        let bytes = std::fs::read(&cast).unwrap();
        assert_eq!(m.sha256, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(m.size, bytes.len() as u64);
        let on_disk: Manifest = serde_json::from_slice(&std::fs::read(man).unwrap()).unwrap();
        assert_eq!(&on_disk, m);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.ends_with('\n'));
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"))).collect();
        assert_eq!(m.events, lines.len() as u64 - 1);
        let last = lines.last().unwrap();
        assert_eq!(
            (&last[1], &last[2]),
            (&serde_json::json!("m"), &serde_json::json!("session ended: BrokerCrashed"))
        );
        lines
    }

    #[tokio::test]
    async fn torn_last_line_is_cut_and_the_recording_closed() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec =
            Recorder::create(&crate::Spool::open(dir.path(), 1 << 30).unwrap().0, meta("admin-1"), &[])
                .await
                .unwrap();
        rec.output(b"hello\r\n").await.unwrap();
        rec.input(b"ls\r").await.unwrap();
        // The broker dies: the recorder is never finished, and a last write is cut short.
        drop(rec);
        let part = part_path(dir.path(), "admin-1");
        let mut f = OpenOptions::new().append(true).open(&part).unwrap();
        f.write_all(b"[3.250000, \"o\", \"half a li").unwrap();
        drop(f);
        // Known times, so the duration can be checked exactly.
        let text = std::fs::read_to_string(&part).unwrap();
        let mut lines: Vec<&str> = text.split('\n').collect();
        lines[1] = "[1.000001, \"o\", \"hello\\r\\n\"]";
        lines[2] = "[2.123456, \"i\", \"ls\\r\"]";
        std::fs::write(&part, lines.join("\n")).unwrap();

        let got = recover_unfinished(dir.path()).await.unwrap();
        assert_eq!(got.len(), 1);
        let m = &got[0];
        let lines = check_published(dir.path(), "admin-1", m);
        assert_eq!(lines.len(), 4, "header, two events, the closing marker");
        assert_eq!(lines[1][2], "hello\r\n");
        assert!(!lines.iter().any(|l| l.to_string().contains("half a li")));
        assert_eq!(m.end_reason, EndReason::BrokerCrashed);
        assert_eq!((m.exit_code, m.events, m.duration_us), (None, 3, 2_123_456));
        assert_eq!(m.started_unix_us % 1_000_000, 0);
        assert_eq!(m.ended_unix_us, m.started_unix_us + 2_123_456);
        assert_eq!(m.meta, RecordingMeta { document: String::new(), ..meta("admin-1") });
        // The marker is stamped with the last event's exact time.
        assert!(std::fs::read_to_string(recording_paths(dir.path(), "admin-1").0)
            .unwrap()
            .ends_with("[2.123456, \"m\", \"session ended: BrokerCrashed\"]\n"));
        // Nothing is left to recover.
        assert!(recover_unfinished(dir.path()).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn header_only_part_recovers() {
        let dir = tempfile::tempdir().unwrap();
        drop(
            Recorder::create(&crate::Spool::open(dir.path(), 1 << 30).unwrap().0, meta("admin-2"), &[])
                .await
                .unwrap(),
        );
        let got = recover_unfinished(dir.path()).await.unwrap();
        assert_eq!(got.len(), 1);
        let lines = check_published(dir.path(), "admin-2", &got[0]);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["width"], 100);
        assert_eq!((got[0].events, got[0].duration_us), (1, 0));
        assert!(lines[1][0].is_number());
    }

    #[tokio::test]
    async fn a_closing_marker_already_written_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let header = "{\"version\": 2, \"width\": 80, \"height\": 24, \"timestamp\": 2}\n";
        let body = format!(
            "{header}[0.5, \"o\", \"a\"]\n[0.700000, \"m\", \"session ended: Exited, exit code 3\"]\n[0.8"
        );
        std::fs::write(part_path(dir.path(), "s-1"), &body).unwrap();
        let got = recover_unfinished(dir.path()).await.unwrap();
        assert_eq!((got[0].end_reason, got[0].exit_code, got[0].events), (EndReason::Exited, Some(3), 2));
        assert_eq!((got[0].started_unix_us, got[0].duration_us), (2_000_000, 700_000));
        let text = std::fs::read_to_string(recording_paths(dir.path(), "s-1").0).unwrap();
        assert_eq!(text, &body[..body.len() - 4]);
        assert_eq!(got[0].sha256, hex::encode(Sha256::digest(text.as_bytes())));
    }

    #[tokio::test]
    async fn other_files_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let files: [(&str, &[u8]); 4] = [
            (
                "done.cast",
                b"{\"version\": 2, \"width\": 80, \"height\": 24, \"timestamp\": 1}\n[0.5, \"o\", \"x",
            ),
            ("notes.txt", b"hello"),
            (".hidden.cast.part", b"{\"version\": 2, \"width\": 80, \"height\": 24, \"timestamp\": 1}\n"),
            ("x.cast.part.bak", b"junk"),
        ];
        for (name, bytes) in files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        std::fs::create_dir(dir.path().join("folder.cast.part")).unwrap();
        assert!(recover_unfinished(dir.path()).await.unwrap().is_empty());
        for (name, bytes) in files {
            assert_eq!(std::fs::read(dir.path().join(name)).unwrap(), bytes, "{name}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 5);
        assert!(recover_unfinished(&dir.path().join("missing")).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn damaged_files_are_refused_not_cut() {
        let dir = tempfile::tempdir().unwrap();
        let header = "{\"version\": 2, \"width\": 80, \"height\": 24, \"timestamp\": 1}\n";
        let body = format!("{header}[0.5, \"o\", \"a\"]\nnot json\n[0.7, \"o\", \"b\"]\n");
        std::fs::write(part_path(dir.path(), "s-1"), &body).unwrap();
        let err = recover_unfinished(dir.path()).await.unwrap_err();
        assert!(
            matches!(&err, RecordingError::Unrecoverable { reason, .. } if reason.contains("line 3")),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(part_path(dir.path(), "s-1")).unwrap(), body);

        // A header cut short: nothing to build a recording on.
        std::fs::write(part_path(dir.path(), "s-1"), &header[..10]).unwrap();
        let err = recover_unfinished(dir.path()).await.unwrap_err();
        assert!(matches!(err, RecordingError::Unrecoverable { .. }), "{err}");
    }
}
