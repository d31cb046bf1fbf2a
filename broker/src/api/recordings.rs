//! Recorded sessions (`AirlockRecordings.*`): list the manifests, hand out a recording's bytes
//! in bounded chunks, and search the text of finished recordings.
//!
//! Recordings are the files the recorder left in the recordings folder
//! (`<session>.cast` + `<session>.manifest.json`); a session still running has only a
//! `.cast.part` and is not served. Every path is built from a parsed [`SessionId`], whose
//! character set has no `/`, so no request can name a file outside the folder.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use airlock_proto::SessionId;
use airlock_recordings::ansi::Stripper;
use airlock_recordings::asciicast::{parse_event, EventCode};
use airlock_recordings::local::recording_paths;
use airlock_recordings::Manifest;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{paginate, session_arn, ApiError, NoMembers, Op};
use crate::authz::{policies_of, Gate};
use crate::policy::{evaluate, Request};

/// Largest chunk one GetRecording returns; clients loop for more.
const MAX_CHUNK: u64 = 1 << 20;
/// Manifests are a few hundred bytes; anything far larger is not one of ours.
const MAX_MANIFEST_BYTES: u64 = 64 << 10;
/// Most recordings a listing or a search looks at, so one request stays bounded.
const MAX_FILES: usize = 100_000;
/// Recordings larger than this are not searched (noted in the answer).
const MAX_SEARCHED_FILE: u64 = 512 << 20;
/// Bytes one search may read in total.
const MAX_SEARCH_BYTES: u64 = 4 << 30;
/// Longest event line parsed; longer ones (never written by our recorder) are skipped.
const MAX_EVENT_LINE: u64 = 16 << 20;
/// Longest text line kept for matching; longer lines are cut into pieces this long.
const MAX_TEXT_LINE: usize = 64 << 10;
/// How much of a matching line is shown (bytes, around the match).
const SHOWN_LINE: usize = 400;
/// Longest search pattern.
const MAX_PATTERN: usize = 256;

/// ListRecordings' input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct ListRecordings {
    max_results: Option<usize>,
    next_token: Option<String>,
}

/// GetRecording's input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct GetRecording {
    session_id: String,
    #[serde(default)]
    offset: u64,
    length: Option<u64>,
}

/// SearchRecordings' input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct SearchRecordings {
    pattern: String,
    max_results: Option<usize>,
}

/// ListRecordings: finished recordings' manifests, newest first.
pub(super) async fn list(gate: &Gate<'_>, req: ListRecordings) -> Result<Value, ApiError> {
    gate.require(Op::ListRecordings, "*").await?;
    list_in(&gate.app.settings.recordings_dir, req).await
}

/// GetRecording: a bounded chunk of one finished recording.
pub(super) async fn get(gate: &Gate<'_>, req: GetRecording) -> Result<Value, ApiError> {
    let id = session_id(&req.session_id)?;
    gate.require(Op::GetRecording, &session_arn(gate.app, id.as_str())).await?;
    get_in(&gate.app.settings.recordings_dir, &id, req.offset, req.length).await
}

/// GetRecordingStatus: spool usage and deliveries not yet confirmed.
pub(super) async fn status(gate: &Gate<'_>, _req: NoMembers) -> Result<Value, ApiError> {
    gate.require(Op::GetRecordingStatus, "*").await?;
    let shipper = &gate.app.shipper;
    Ok(json!({ "Spool": shipper.spool().status(), "PendingDeliveries": shipper.status() }))
}

fn session_id(text: &str) -> Result<SessionId, ApiError> {
    let id: SessionId = text.parse().map_err(|e| ApiError::bad("ValidationException", format!("{e}")))?;
    // Ids with a leading dot are never issued; refusing them keeps hidden files out of reach.
    if id.as_str().starts_with('.') {
        return Err(ApiError::bad("ValidationException", format!("{text:?} is not a session id")));
    }
    Ok(id)
}

fn blocking_failed(e: tokio::task::JoinError) -> ApiError {
    ApiError::internal(format!("recordings task failed: {e}"))
}

/// The recordings in `dir` whose names end in `suffix`: (session id, path, size, modified),
/// at most [`MAX_FILES`] of them. Blocking.
fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<(String, PathBuf, u64, SystemTime)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::error!(dir = %dir.display(), error = %e, "cannot read the recordings folder");
            }
            return Vec::new();
        }
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(suffix)) else { continue };
        if session_id(id).is_err() {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        if found.len() == MAX_FILES {
            tracing::warn!(dir = %dir.display(), limit = MAX_FILES, "too many recordings; the rest are left out");
            break;
        }
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        found.push((id.to_owned(), entry.path(), meta.len(), modified));
    }
    found
}

/// Every readable manifest in `dir`, newest first. Blocking.
fn load_manifests(dir: &Path) -> Vec<Manifest> {
    let mut manifests = Vec::new();
    for (id, path, size, _) in files_with_suffix(dir, ".manifest.json") {
        if size > MAX_MANIFEST_BYTES {
            tracing::warn!(path = %path.display(), size, "manifest too large; skipped");
            continue;
        }
        let parsed = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice::<Manifest>(&bytes).map_err(|e| e.to_string()));
        match parsed {
            Ok(m) if m.meta.session_id == id => manifests.push(m),
            Ok(m) => {
                tracing::warn!(path = %path.display(), names = %m.meta.session_id, "manifest names another session; skipped")
            }
            Err(error) => tracing::warn!(path = %path.display(), %error, "unreadable manifest; skipped"),
        }
    }
    manifests.sort_by(|a, b| {
        (b.started_unix_us, &b.meta.session_id).cmp(&(a.started_unix_us, &a.meta.session_id))
    });
    manifests
}

fn manifest_json(m: &Manifest) -> Value {
    let mut v = json!({
        "SessionId": m.meta.session_id,
        "Target": m.meta.target,
        "Owner": m.meta.owner,
        "Document": m.meta.document,
        "StartDate": m.started_unix_us / 1_000_000,
        "DurationMicros": m.duration_us,
        "EndReason": serde_json::to_value(m.end_reason).unwrap_or(Value::Null),
        "Size": m.size,
        "Sha256": m.sha256,
        "Events": m.events,
    });
    if let Some(code) = m.exit_code {
        v["ExitCode"] = json!(code);
    }
    v
}

async fn list_in(dir: &Path, req: ListRecordings) -> Result<Value, ApiError> {
    let max = req.max_results.unwrap_or(50);
    if !(1..=1000).contains(&max) {
        return Err(ApiError::bad("ValidationException", "MaxResults must be between 1 and 1000"));
    }
    let dir = dir.to_owned();
    let manifests =
        tokio::task::spawn_blocking(move || load_manifests(&dir)).await.map_err(blocking_failed)?;
    let all: Vec<Value> = manifests.iter().map(manifest_json).collect();
    let (page, next) = paginate(all, max, req.next_token.as_deref())?;
    let mut out = json!({ "Recordings": page });
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    Ok(out)
}

async fn get_in(dir: &Path, id: &SessionId, offset: u64, length: Option<u64>) -> Result<Value, ApiError> {
    let (cast, manifest) = recording_paths(dir, id.as_str());
    let io = |e: std::io::Error| ApiError::internal(format!("{}: {e}", cast.display()));
    let mut file = match tokio::fs::File::open(&cast).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let running = tokio::fs::try_exists(cast.with_extension("cast.part")).await.unwrap_or(false);
            let why = if running { "is still being recorded" } else { "has no recording" };
            return Err(ApiError::bad("DoesNotExistException", format!("Session {id} {why}.")));
        }
        Err(e) => return Err(io(e)),
    };
    let total = file.metadata().await.map_err(io)?.len();
    if offset > total {
        return Err(ApiError::bad(
            "ValidationException",
            format!("Offset {offset} is past the end of the recording ({total} bytes)"),
        ));
    }
    let want = length.unwrap_or(MAX_CHUNK).min(MAX_CHUNK).min(total - offset);
    file.seek(std::io::SeekFrom::Start(offset)).await.map_err(io)?;
    // `want` is at most 1 MiB, so the cast cannot truncate.
    let mut data = Vec::with_capacity(want as usize);
    file.take(want).read_to_end(&mut data).await.map_err(io)?;
    let mut out = json!({
        "SessionId": id.as_str(),
        "Offset": offset,
        "Data": base64::engine::general_purpose::STANDARD.encode(&data),
        "TotalSize": total,
    });
    // The manifest lands just after the rename; until then (or if it is damaged) the
    // checksum is left out rather than guessed.
    match tokio::fs::read(&manifest).await.map(|b| serde_json::from_slice::<Manifest>(&b)) {
        Ok(Ok(m)) => out["Sha256"] = json!(m.sha256),
        Ok(Err(error)) => tracing::warn!(path = %manifest.display(), %error, "unreadable manifest"),
        Err(error) => tracing::warn!(path = %manifest.display(), %error, "manifest missing"),
    }
    Ok(out)
}

/// SearchRecordings: the recordings the caller may read whose text matches.
pub(super) async fn search(gate: &Gate<'_>, req: SearchRecordings) -> Result<Value, ApiError> {
    gate.require(Op::SearchRecordings, "*").await?;
    let max = req.max_results.unwrap_or(100);
    if !(1..=1000).contains(&max) {
        return Err(ApiError::bad("ValidationException", "MaxResults must be between 1 and 1000"));
    }
    let pattern = req.pattern;
    if pattern.is_empty() || pattern.len() > MAX_PATTERN || pattern.contains(['\n', '\r']) {
        return Err(ApiError::bad(
            "ValidationException",
            format!("Pattern must be 1 to {MAX_PATTERN} bytes on one line"),
        ));
    }
    let app = gate.app;
    let dir = app.settings.recordings_dir.clone();
    let policies = policies_of(app, &gate.caller.principal.name).await?;
    let ctx = gate.context();
    let arn_prefix = session_arn(app, "");
    let found = tokio::task::spawn_blocking(move || {
        let mut files = files_with_suffix(&dir, ".cast");
        // A match shows a recording's content, so only recordings the caller may read are
        // searched; decided silently, since not being able to read most of them is normal.
        files.retain(|(id, ..)| {
            let resource = format!("{arn_prefix}{id}");
            let request = Request { action: "airlock:GetRecording", resource: &resource, context: &ctx };
            evaluate(&policies, &request).is_allowed()
        });
        files.sort_by(|a, b| (b.3, &b.0).cmp(&(a.3, &a.0)));
        scan(files, &pattern, max)
    })
    .await
    .map_err(blocking_failed)?;
    Ok(json!({ "Matches": found.matches, "Truncated": found.truncated, "Skipped": found.skipped }))
}

/// What a search found (`{SessionId, TimeMicros, Line}`), what it could not look at
/// (`{SessionId, Reason}`), and whether it stopped at MaxResults.
#[derive(Debug, Default)]
struct Found {
    matches: Vec<Value>,
    skipped: Vec<Value>,
    truncated: bool,
}

/// Searches the files (newest first) for `pattern`, stopping at `max` matches. Blocking.
fn scan(files: Vec<(String, PathBuf, u64, SystemTime)>, pattern: &str, max: usize) -> Found {
    let mut found = Found::default();
    let mut budget = MAX_SEARCH_BYTES;
    for (id, path, size, _) in files {
        if found.truncated {
            break;
        }
        if size > MAX_SEARCHED_FILE {
            tracing::info!(session = %id, size, "recording too large to search; skipped");
            let why = format!("larger than {} MiB", MAX_SEARCHED_FILE >> 20);
            found.skipped.push(json!({ "SessionId": id, "Reason": why }));
            continue;
        }
        if size > budget {
            let why = format!(
                "search stopped after {} GiB; this and older recordings were not read",
                MAX_SEARCH_BYTES >> 30
            );
            found.skipped.push(json!({ "SessionId": id, "Reason": why }));
            break;
        }
        budget -= size;
        let result = std::fs::File::open(&path).and_then(|f| {
            scan_stream(BufReader::with_capacity(64 << 10, f), pattern, max - found.matches.len())
        });
        match result {
            Ok((hits, full)) => {
                found.truncated = full;
                found.matches.extend(
                    hits.into_iter().map(
                        |(time_us, line)| json!({ "SessionId": id, "TimeMicros": time_us, "Line": line }),
                    ),
                );
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot search recording");
                found.skipped.push(json!({ "SessionId": id, "Reason": "unreadable" }));
            }
        }
    }
    found
}

/// Matches the output and input text of one recording; returns up to `max` (time, line)
/// hits and whether it stopped because it had `max`.
pub(super) fn scan_stream(
    mut reader: impl BufRead,
    pattern: &str,
    max: usize,
) -> std::io::Result<(Vec<(u64, String)>, bool)> {
    let (mut output, mut input) = (LineScanner::default(), LineScanner::default());
    let mut hits = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if (&mut reader).take(MAX_EVENT_LINE).read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if line.last() != Some(&b'\n') && line.len() as u64 == MAX_EVENT_LINE {
            skip_line(&mut reader)?;
            continue;
        }
        let Some(event) = std::str::from_utf8(&line).ok().and_then(parse_event) else {
            continue;
        };
        match event.code {
            Some(EventCode::Output) => output.push(event.time_us, &event.data, pattern, &mut hits),
            Some(EventCode::Input) => input.push(event.time_us, &event.data, pattern, &mut hits),
            _ => {}
        }
        if hits.len() >= max {
            hits.truncate(max);
            return Ok((hits, true));
        }
    }
    output.finish(pattern, &mut hits);
    input.finish(pattern, &mut hits);
    let full = hits.len() >= max;
    hits.truncate(max);
    Ok((hits, full))
}

fn skip_line(reader: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            reader.consume(i + 1);
            return Ok(());
        }
        let n = buf.len();
        reader.consume(n);
    }
}

/// Turns one stream's stripped text into lines and keeps the lines holding the pattern.
#[derive(Default)]
struct LineScanner {
    strip: Stripper,
    text: String,
    line: String,
    start_us: u64,
}

impl LineScanner {
    fn push(&mut self, time_us: u64, data: &str, pattern: &str, hits: &mut Vec<(u64, String)>) {
        let mut text = std::mem::take(&mut self.text);
        text.clear();
        self.strip.push(data, &mut text);
        self.take(time_us, &text, pattern, hits);
        self.text = text;
    }

    fn take(&mut self, time_us: u64, text: &str, pattern: &str, hits: &mut Vec<(u64, String)>) {
        for c in text.chars() {
            // A lone `\r` ends a line too: typed commands end with it, and progress output
            // rewrites its line with it.
            if c == '\n' || c == '\r' {
                self.end_line(pattern, hits);
                continue;
            }
            if self.line.len() >= MAX_TEXT_LINE {
                self.end_line(pattern, hits);
            }
            if self.line.is_empty() {
                self.start_us = time_us;
            }
            self.line.push(c);
        }
    }

    fn end_line(&mut self, pattern: &str, hits: &mut Vec<(u64, String)>) {
        if let Some(at) = self.line.find(pattern) {
            hits.push((self.start_us, excerpt(&self.line, at, pattern.len())));
        }
        self.line.clear();
    }

    fn finish(&mut self, pattern: &str, hits: &mut Vec<(u64, String)>) {
        let mut tail = String::new();
        self.strip.finish(&mut tail);
        let at = self.start_us;
        self.take(at, &tail, pattern, hits);
        self.end_line(pattern, hits);
    }
}

/// At most [`SHOWN_LINE`] bytes of `line` around the match at `at`.
pub(super) fn excerpt(line: &str, at: usize, len: usize) -> String {
    if line.len() <= SHOWN_LINE {
        return line.to_owned();
    }
    let room = SHOWN_LINE.saturating_sub(len) / 2;
    let start = line.floor_char_boundary(at.saturating_sub(room));
    let end = line.ceil_char_boundary((at + len + room).min(line.len()));
    let mut out = String::with_capacity(end - start + 6);
    if start > 0 {
        out.push('…');
    }
    out.push_str(&line[start..end]);
    if end < line.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
#[path = "recordings_tests.rs"]
mod tests;
