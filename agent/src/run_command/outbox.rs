//! The durable outbox: `commands/<id>.run` is written before an invocation starts and
//! `commands/<id>.result` when it ends; both go when the broker acknowledges the result.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use airlock_proto::{CommandId, CommandOutcome, CommandResult};

use crate::error::Error;

const DIR: &str = "commands";
/// A result file is at most this long (the inline output is bounded well below it).
const MAX_RESULT_FILE: u64 = 256 * 1024;
/// Files of the outbox looked at, at most: a directory filled by something else must not
/// stall the agent or exhaust its memory.
const MAX_FILES: usize = 4096;

/// The outbox directory.
pub struct Outbox {
    dir: PathBuf,
    /// Command ids with a file here, known in memory so the link never waits on the disk to
    /// tell a repeated `RunCommand`.
    seen: Mutex<HashSet<CommandId>>,
}

fn state_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::State { path: path.to_owned(), detail: e.to_string() }
}

impl Outbox {
    /// Opens (creating) `data_dir/commands`, turning invocations that were running when an
    /// earlier agent process ended into `Interrupted` results.
    pub fn open(data_dir: &Path) -> Result<Outbox, Error> {
        let dir = data_dir.join(DIR);
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| state_err(&dir, e))?;
        let outbox = Outbox { dir, seen: Mutex::default() };
        let mut seen: HashSet<CommandId> = outbox.ids("result").into_iter().collect();
        for id in outbox.ids("run") {
            seen.insert(id.clone());
            if !outbox.path(&id, "result").exists() {
                tracing::warn!(command = %id, "a command was running when the agent stopped; reporting it interrupted");
                let result = super::exec::not_run(
                    &id,
                    CommandOutcome::Interrupted,
                    "the agent stopped or restarted while the command ran",
                );
                outbox.save_result(&result)?;
            }
        }
        *outbox.lock() = seen;
        Ok(outbox)
    }

    fn path(&self, id: &CommandId, ext: &str) -> PathBuf {
        // A CommandId is a UUID: a safe file name.
        self.dir.join(format!("{id}.{ext}"))
    }

    /// The command ids with a file of this extension.
    fn ids(&self, ext: &str) -> Vec<CommandId> {
        let Ok(entries) = fs::read_dir(&self.dir) else { return Vec::new() };
        entries
            .take(MAX_FILES)
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(&format!(".{ext}"))?.parse().ok()
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<CommandId>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the command ran (or runs) here and is not yet forgotten.
    pub fn seen(&self, id: &CommandId) -> bool {
        self.lock().contains(id)
    }

    /// Notes a command id before its files are written.
    pub fn remember(&self, id: &CommandId) {
        self.lock().insert(id.clone());
    }

    /// Records that the command starts now.
    pub fn mark_started(&self, id: &CommandId) -> Result<(), Error> {
        write_durably(&self.path(id, "run"), b"")
    }

    /// Stores a result until it is acknowledged.
    pub fn save_result(&self, result: &CommandResult) -> Result<(), Error> {
        let path = self.path(&result.command_id, "result");
        let bytes = postcard::to_allocvec(result).map_err(|e| state_err(&path, e))?;
        write_durably(&path, &bytes)
    }

    /// Every stored result.
    pub fn results(&self) -> Vec<CommandResult> {
        let mut out = Vec::new();
        for id in self.ids("result") {
            let path = self.path(&id, "result");
            let read = fs::metadata(&path)
                .ok()
                .filter(|m| m.len() <= MAX_RESULT_FILE)
                .and_then(|_| fs::read(&path).ok())
                .and_then(|bytes| postcard::from_bytes::<CommandResult>(&bytes).ok())
                .filter(|r| r.command_id == id);
            match read {
                Some(r) => out.push(r),
                None => tracing::warn!(path = %path.display(), "ignoring an unreadable command result"),
            }
        }
        out
    }

    /// Deletes what is kept of the command.
    pub fn forget(&self, id: &CommandId) -> Result<(), Error> {
        self.lock().remove(id);
        for ext in ["result", "run"] {
            let path = self.path(id, ext);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(state_err(&path, e)),
            }
        }
        Ok(())
    }
}

/// Writes to a temporary name, syncs, and renames into place.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| state_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_survive_until_forgotten_and_running_ones_become_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let (done, running) = (CommandId::generate(), CommandId::generate());
        outbox.remember(&done);
        outbox.mark_started(&done).unwrap();
        outbox.save_result(&super::super::exec::not_run(&done, CommandOutcome::Exited, "x")).unwrap();
        outbox.remember(&running);
        outbox.mark_started(&running).unwrap();
        assert!(outbox.seen(&done) && outbox.seen(&running));
        drop(outbox);

        let again = Outbox::open(dir.path()).unwrap();
        let mut results = again.results();
        results.sort_by_key(|r| r.command_id == running);
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].outcome, CommandOutcome::Exited);
        assert_eq!(results[1].outcome, CommandOutcome::Interrupted);
        again.forget(&done).unwrap();
        assert!(!again.seen(&done));
        assert_eq!(again.results().len(), 1);
        // Stray files are ignored.
        fs::write(dir.path().join(DIR).join("../../x.result"), b"junk").ok();
        fs::write(dir.path().join(DIR).join("nonsense.result"), b"junk").unwrap();
        assert_eq!(again.results().len(), 1);
    }
}
