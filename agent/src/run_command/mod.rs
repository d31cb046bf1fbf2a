//! Run Command on the agent (docs/wire.md §2.7): invocations the broker sends on the control
//! stream run here, one task each, and their results wait in a durable outbox in the data
//! directory until the broker acknowledges them, across reconnects and agent restarts.

mod exec;
mod outbox;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use airlock_proto::{CommandId, CommandOutcome, Control, RunCommand};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
pub use outbox::Outbox;

/// Invocations running at once at most; more are refused with a `StartFailed` result.
pub const MAX_RUNNING: usize = 64;
/// Messages waiting for the link at most; a full queue drops `CommandStarted` notices (the
/// results are on disk and resent on the next connect anyway).
const QUEUE: usize = 256;

/// One running invocation.
struct Running {
    cancel: CancellationToken,
    /// The process group, once it runs.
    pgid: Option<Pid>,
}

/// The agent's Run Command state, shared by the link and the invocation tasks.
#[derive(Clone)]
pub struct Commands {
    outbox: Arc<Outbox>,
    running: Arc<Mutex<HashMap<CommandId, Running>>>,
    to_broker: mpsc::Sender<Control>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Commands {
    /// Opens the outbox under `data_dir` (invocations an earlier agent process left running
    /// are reported `Interrupted`); the receiver yields what goes to the broker.
    pub fn open(data_dir: &Path) -> Result<(Commands, mpsc::Receiver<Control>), Error> {
        let outbox = Outbox::open(data_dir)?;
        let (to_broker, rx) = mpsc::channel(QUEUE);
        let commands = Commands { outbox: Arc::new(outbox), running: Arc::default(), to_broker };
        Ok((commands, rx))
    }

    /// Results not yet acknowledged, to send right after each connect.
    pub async fn unacknowledged(&self) -> Vec<Control> {
        let outbox = self.outbox.clone();
        let results = tokio::task::spawn_blocking(move || outbox.results()).await.unwrap_or_default();
        results.into_iter().map(Control::CommandResult).collect()
    }

    /// Starts an invocation unless this command id was seen before (the broker resends
    /// `RunCommand` after reconnects while it has no result).
    pub fn start(&self, spec: RunCommand) {
        let id = spec.command_id.clone();
        let cancel = CancellationToken::new();
        let refused = {
            let mut running = lock(&self.running);
            if running.contains_key(&id) || self.outbox.seen(&id) {
                tracing::debug!(command = %id, "ignoring a command already run or running");
                return;
            }
            self.outbox.remember(&id);
            if running.len() >= MAX_RUNNING {
                Some(format!("the agent already runs {MAX_RUNNING} commands"))
            } else {
                running.insert(id.clone(), Running { cancel: cancel.clone(), pgid: None });
                None
            }
        };
        let me = self.clone();
        tokio::spawn(async move {
            if let Some(why) = refused {
                me.finish(exec::not_run(&id, CommandOutcome::StartFailed, &why)).await;
                return;
            }
            // Recorded on disk before anything runs: a command is never run twice, even if
            // the agent restarts and the broker sends it again.
            let outbox = me.outbox.clone();
            let mark = id.clone();
            let marked = tokio::task::spawn_blocking(move || outbox.mark_started(&mark))
                .await
                .unwrap_or_else(|e| Err(Error::Spawn(e.to_string())));
            if let Err(e) = marked {
                tracing::error!(command = %id, error = %e, "cannot record the command; refusing it");
                lock(&me.running).remove(&id);
                me.finish(exec::not_run(&id, CommandOutcome::StartFailed, &format!("agent state: {e}")))
                    .await;
                return;
            }
            tracing::info!(command = %id, timeout_s = spec.execution_timeout_s, "running a command");
            let started = |pgid: Pid, started_us: i64| {
                if let Some(r) = lock(&me.running).get_mut(&id) {
                    r.pgid = Some(pgid);
                }
                let _ = me.to_broker.try_send(Control::CommandStarted { command_id: id.clone(), started_us });
            };
            let result = exec::execute(&spec, cancel, started).await;
            tracing::info!(command = %id, outcome = ?result.outcome, code = result.exit_code, "command done");
            me.finish(result).await;
            lock(&me.running).remove(&id);
        });
    }

    /// Saves a result and hands it to the link.
    async fn finish(&self, result: airlock_proto::CommandResult) {
        let outbox = self.outbox.clone();
        let saving = result.clone();
        let saved = tokio::task::spawn_blocking(move || outbox.save_result(&saving))
            .await
            .unwrap_or_else(|e| Err(Error::Spawn(e.to_string())));
        if let Err(e) = saved {
            tracing::error!(command = %result.command_id, error = %e, "cannot save a command result");
        }
        // A full queue or no link: the saved result goes out after the next connect.
        let _ = self.to_broker.try_send(Control::CommandResult(result));
    }

    /// Cancels a running invocation; unknown ids are ignored.
    pub fn cancel(&self, id: &CommandId) {
        if let Some(r) = lock(&self.running).get(id) {
            tracing::info!(command = %id, "cancelling a command");
            r.cancel.cancel();
        }
    }

    /// The broker recorded the result: forget it.
    pub fn acknowledged(&self, id: &CommandId) {
        let outbox = self.outbox.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = outbox.forget(&id) {
                tracing::warn!(command = %id, error = %e, "cannot delete an acknowledged result");
            }
        });
    }

    /// Kills every running invocation's process group at once (the agent is stopping). Their
    /// results are not written: the next agent process reports them `Interrupted`.
    pub fn kill_all(&self) {
        for (id, r) in lock(&self.running).iter() {
            if let Some(pgid) = r.pgid {
                tracing::info!(command = %id, "killing a running command: the agent stops");
                let _ = killpg(pgid, Signal::SIGKILL);
            }
        }
    }
}
