//! `SessionSpec::Command`: `sh -c <command>` with stdin closed and stdout, stderr on pipes.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::process::{self, Output, Process, ProcessControl, CHUNK, OUTPUT_QUEUE, UNKNOWN_EXIT};
use super::run_as::RunAs;
use crate::error::Error;

const SH: &str = "/bin/sh";

/// Starts `command` as `who` in a process group of its own, so a kill reaches everything it
/// started.
pub(crate) fn spawn(command: &str, who: &RunAs, drain: Duration) -> Result<Process, Error> {
    let mut cmd = match who {
        RunAs::Agent { .. } => {
            let mut cmd = tokio::process::Command::new(SH);
            cmd.arg("-c").arg(command);
            if let Some(home) = process::home_dir() {
                cmd.current_dir(home);
            }
            cmd
        }
        RunAs::Switch(user) => {
            // setpriv execs `sh -c` in place as the user (see `run_as`), in a login's
            // environment and the user's home.
            let mut cmd = tokio::process::Command::new(user.setpriv());
            cmd.args(user.setpriv_args(Path::new(SH), &[OsStr::new("-c"), OsStr::new(command)]))
                .env_clear()
                .envs(user.env())
                .current_dir(user.workdir());
            cmd
        }
    };
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = cmd.spawn().map_err(|e| Error::Spawn(format!("sh -c: {e}")))?;
    let pid = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw);
    let (Some(pid), Some(stdout), Some(stderr)) = (pid, child.stdout.take(), child.stderr.take()) else {
        // Not reachable with piped stdio; kill rather than leave it running unobserved.
        let _ = child.start_kill();
        return Err(Error::Spawn("child has no pid or pipes".into()));
    };

    let (out_tx, out_rx) = mpsc::channel(OUTPUT_QUEUE);
    let readers = vec![
        tokio::spawn(forward(stdout, out_tx.clone(), Output::Stdout)),
        tokio::spawn(forward(stderr, out_tx, Output::Stderr)),
    ];
    let (exit_tx, exit_rx) = watch::channel(None);
    tokio::spawn(async move {
        let code = match child.wait().await {
            Ok(status) => process::exit_code(status),
            Err(e) => {
                tracing::warn!("waiting for the command failed: {e}");
                UNKNOWN_EXIT
            }
        };
        let _ = exit_tx.send(Some(code));
        drain_or_abort(readers, drain).await;
    });
    Ok(Process { output: out_rx, input: None, control: ProcessControl::new(pid, exit_rx, None, None) })
}

/// Lets the readers finish, but only for `drain`: a background job that inherited the
/// pipes must not hold the session open after the command exited.
async fn drain_or_abort(mut readers: Vec<JoinHandle<()>>, drain: Duration) {
    let all = async {
        for reader in readers.iter_mut() {
            let _ = reader.await;
        }
    };
    if tokio::time::timeout(drain, all).await.is_err() {
        tracing::debug!("output still open {drain:?} after exit; closing it");
        for reader in &readers {
            reader.abort();
        }
    }
}

/// Copies one pipe into the output queue in chunks of at most [`CHUNK`] bytes.
async fn forward(mut pipe: impl AsyncRead + Unpin, tx: mpsc::Sender<Output>, wrap: fn(Bytes) -> Output) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                // A full queue waits here, which stops reading the pipe: backpressure.
                if tx.send(wrap(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!("reading command output: {e}");
                return;
            }
        }
    }
}
