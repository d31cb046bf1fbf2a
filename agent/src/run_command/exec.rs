//! Runs one invocation: `sh -c` in a process group of its own, stdin closed, output captured
//! with a cap, the whole group killed on timeout or cancel.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use airlock_proto::clock::now_us;
use airlock_proto::command::{
    MAX_INLINE_STDERR_BYTES, MAX_INLINE_STDERR_CHARS, MAX_INLINE_STDOUT_BYTES, MAX_INLINE_STDOUT_CHARS,
};
use airlock_proto::{CommandOutcome, CommandResult, RunCommand};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

const SH: &str = "/bin/sh";
/// How long a killed group gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// How long output may keep flowing after the script exited (a background job holding the
/// pipes must not hold the result back).
const DRAIN: Duration = Duration::from_secs(2);
/// Read size of the output pipes.
const CHUNK: usize = 16 * 1024;

/// One output pipe, as far as it is kept: a bounded prefix, the length and the digest.
#[derive(Default)]
pub(crate) struct Captured {
    prefix: Vec<u8>,
    total: u64,
    digest: Sha256,
}

impl Captured {
    /// Takes one chunk: all of it goes into the digest, the prefix keeps at most `cap` bytes.
    pub(crate) fn push(&mut self, chunk: &[u8], cap: usize) {
        self.digest.update(chunk);
        self.total = self.total.saturating_add(chunk.len() as u64);
        let room = cap.saturating_sub(self.prefix.len());
        self.prefix.extend_from_slice(&chunk[..room.min(chunk.len())]);
    }

    /// The prefix as text cut at `max_chars`, the total length and the hex digest.
    pub(crate) fn finish(self, max_chars: usize) -> (String, u64, String) {
        // A prefix cut inside a multi-byte character loses that partial character, not a
        // replacement character at the end.
        let valid = match std::str::from_utf8(&self.prefix) {
            Ok(_) => self.prefix.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.prefix.len(),
        };
        let text: String = String::from_utf8_lossy(&self.prefix[..valid]).chars().take(max_chars).collect();
        let digest: String = self.digest.finalize().iter().map(|b| format!("{b:02x}")).collect();
        (text, self.total, digest)
    }
}

async fn capture(mut pipe: impl AsyncRead + Unpin, cap: usize) -> Captured {
    let mut captured = Captured::default();
    let mut buf = vec![0u8; CHUNK];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return captured,
            Ok(n) => captured.push(&buf[..n], cap),
        }
    }
}

/// A result for an invocation that never ran.
pub(crate) fn not_run(
    spec_id: &airlock_proto::CommandId,
    outcome: CommandOutcome,
    why: &str,
) -> CommandResult {
    let empty: String = Sha256::digest([]).iter().map(|b| format!("{b:02x}")).collect();
    let stderr: String = why.chars().take(MAX_INLINE_STDERR_CHARS).collect();
    let stderr_sha256: String =
        Sha256::digest(stderr.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    CommandResult {
        command_id: spec_id.clone(),
        outcome,
        exit_code: -1,
        stdout: String::new(),
        stdout_bytes: 0,
        stderr_bytes: stderr.len() as u64,
        stderr,
        stdout_sha256: empty,
        stderr_sha256,
        started_us: 0,
        ended_us: now_us(),
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(-1)
}

/// Sends `signal` to the whole group; a group already gone is fine.
fn signal_group(pgid: Pid, signal: Signal) {
    let _ = killpg(pgid, signal);
}

/// Why a running invocation is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    TimedOut,
    Cancelled,
}

/// Runs `spec` to its end. `started` is told the process's group id once it runs (so the
/// agent can kill it on shutdown); `cancel` kills it.
pub(crate) async fn execute(
    spec: &RunCommand,
    cancel: CancellationToken,
    started: impl FnOnce(Pid, i64),
) -> CommandResult {
    if let Some(user) = &spec.run_as {
        return not_run(
            &spec.command_id,
            CommandOutcome::StartFailed,
            &format!("this agent runs commands as its own user only; run-as {user:?} is not supported"),
        );
    }
    let mut cmd = tokio::process::Command::new(SH);
    cmd.arg("-c").arg(&spec.script);
    if !spec.working_directory.is_empty() {
        cmd.current_dir(&spec.working_directory);
    } else if let Some(home) = std::env::var_os("HOME").filter(|h| std::path::Path::new(h).is_dir()) {
        cmd.current_dir(home);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return not_run(&spec.command_id, CommandOutcome::StartFailed, &format!("sh -c: {e}")),
    };
    let pid = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw);
    let (Some(pgid), Some(stdout), Some(stderr)) = (pid, child.stdout.take(), child.stderr.take()) else {
        let _ = child.start_kill();
        return not_run(&spec.command_id, CommandOutcome::StartFailed, "the shell has no pid or pipes");
    };
    let started_us = now_us();
    started(pgid, started_us);
    let out = tokio::spawn(capture(stdout, MAX_INLINE_STDOUT_BYTES));
    let err = tokio::spawn(capture(stderr, MAX_INLINE_STDERR_BYTES));

    let limit = Duration::from_secs(u64::from(spec.execution_timeout_s.max(1)));
    let stop = tokio::select! {
        status = child.wait() => match status {
            Ok(status) => Err(status),
            Err(_) => Ok(Stop::Cancelled),
        },
        _ = tokio::time::sleep(limit) => Ok(Stop::TimedOut),
        _ = cancel.cancelled() => Ok(Stop::Cancelled),
    };
    let (outcome, status) = match stop {
        Err(status) => (CommandOutcome::Exited, Some(status)),
        Ok(why) => {
            signal_group(pgid, Signal::SIGTERM);
            let status = match tokio::time::timeout(TERM_GRACE, child.wait()).await {
                Ok(status) => status.ok(),
                Err(_) => None,
            };
            // SIGKILL whatever is left in the group, the shell's children included.
            signal_group(pgid, Signal::SIGKILL);
            let status = match status {
                Some(s) => Some(s),
                None => child.wait().await.ok(),
            };
            let outcome =
                if why == Stop::TimedOut { CommandOutcome::TimedOut } else { CommandOutcome::Cancelled };
            (outcome, status)
        }
    };
    let exit = status.map(exit_code).unwrap_or(-1);
    let ended_us = now_us();
    let (stdout, stdout_bytes, stdout_sha256) = drain(out).await.finish(MAX_INLINE_STDOUT_CHARS);
    let (stderr, stderr_bytes, stderr_sha256) = drain(err).await.finish(MAX_INLINE_STDERR_CHARS);
    CommandResult {
        command_id: spec.command_id.clone(),
        outcome,
        exit_code: exit,
        stdout,
        stderr,
        stdout_bytes,
        stderr_bytes,
        stdout_sha256,
        stderr_sha256,
        started_us,
        ended_us,
    }
}

/// What a reader captured, waiting at most [`DRAIN`] for a pipe held open by a background job.
async fn drain(mut reader: tokio::task::JoinHandle<Captured>) -> Captured {
    match tokio::time::timeout(DRAIN, &mut reader).await {
        Ok(Ok(c)) => c,
        _ => {
            reader.abort();
            Captured::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(script: &str, timeout_s: u32) -> RunCommand {
        RunCommand {
            command_id: airlock_proto::CommandId::generate(),
            script: script.into(),
            execution_timeout_s: timeout_s,
            working_directory: String::new(),
            run_as: None,
        }
    }

    #[tokio::test]
    async fn exit_codes_and_output_are_reported() {
        let r =
            execute(&spec("echo out; echo err >&2; exit 3", 60), CancellationToken::new(), |_, _| {}).await;
        assert_eq!(r.outcome, CommandOutcome::Exited);
        assert_eq!(r.exit_code, 3);
        assert_eq!(r.stdout, "out\n");
        assert_eq!(r.stderr, "err\n");
        assert_eq!(r.stdout_bytes, 4);
        let want: String = Sha256::digest(b"out\n").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(r.stdout_sha256, want);
    }

    #[tokio::test]
    async fn stdin_is_closed() {
        let r = execute(&spec("cat; echo done", 60), CancellationToken::new(), |_, _| {}).await;
        assert_eq!(r.stdout, "done\n");
    }

    #[tokio::test]
    async fn long_output_is_cut_but_counted_and_digested_whole() {
        let r =
            execute(&spec("yes 0123456789 | head -c 1000000", 60), CancellationToken::new(), |_, _| {}).await;
        assert_eq!(r.exit_code, 0);
        assert_eq!(r.stdout.chars().count(), MAX_INLINE_STDOUT_CHARS);
        assert_eq!(r.stdout_bytes, 1_000_000);
        let full: Vec<u8> = b"0123456789\n".iter().copied().cycle().take(1_000_000).collect();
        let want: String = Sha256::digest(&full).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(r.stdout_sha256, want);
    }

    #[test]
    fn multibyte_prefixes_are_cut_on_characters() {
        let mut c = Captured::default();
        c.push("é".repeat(30_000).as_bytes(), MAX_INLINE_STDOUT_BYTES);
        let (text, total, _) = c.finish(MAX_INLINE_STDOUT_CHARS);
        assert_eq!(total, 60_000);
        assert_eq!(text.chars().count(), 20_000);
        assert!(text.chars().all(|ch| ch == 'é'));
    }

    #[tokio::test]
    async fn timeout_and_cancel_kill_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        let script = format!("sleep 600 & echo $! > {}; wait", pidfile.display());
        let r = execute(&spec(&script, 1), CancellationToken::new(), |_, _| {}).await;
        assert_eq!(r.outcome, CommandOutcome::TimedOut);
        let child: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        // The background sleep was in the group and is gone (a zombie reaped by init at worst).
        assert!(!alive(child), "the background sleep survived");

        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        let task = tokio::spawn(async move { execute(&spec("sleep 600", 3600), cancel, |_, _| {}).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        trigger.cancel();
        let r = task.await.unwrap();
        assert_eq!(r.outcome, CommandOutcome::Cancelled);
        assert!(r.exit_code == 128 + 15 || r.exit_code == 128 + 9, "{}", r.exit_code);
    }

    fn alive(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // State Z (zombie) is dead, waiting for its parent to reap it.
            Ok(stat) => !stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
            Err(_) => false,
        }
    }
}
