//! One command's scheduler: starts invocations as the rate controls allow, delivers them to
//! agents as they connect, records results, and ends the command. It is the only writer of
//! its command's rows.

use std::sync::Arc;
use std::time::Duration;

use airlock_proto::{CommandId, CommandOutcome, CommandResult, Control, RunCommand};
use tokio::sync::mpsc;

use super::plan::Rate;
use super::{Delivery, RunCommands};
use crate::app::now_us;
use crate::store::{CommandRecord, InvocationRecord, RunStatus, Store};

/// How often deadlines are checked.
const TICK: Duration = Duration::from_secs(1);
/// How long past its execution timeout a started invocation whose agent is gone waits for
/// its result before it counts as timed out.
const RESULT_GRACE_US: i64 = 300 * 1_000_000;

/// What a scheduler is told.
#[derive(Debug)]
pub enum Event {
    /// An agent connected.
    AgentOnline(String),
    /// An invocation's process started.
    Started {
        /// The instance.
        instance: String,
        /// When, Unix time in microseconds.
        started_us: i64,
    },
    /// An invocation's result.
    Result {
        /// The instance.
        instance: String,
        /// What the agent reported.
        result: CommandResult,
    },
    /// CancelCommand: on these instances, or all.
    Cancel(Option<Vec<String>>),
}

/// The rate controls of a command, as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Invocations in flight at most.
    pub concurrency: usize,
    /// Errors allowed; one more stops invocations not yet started.
    pub errors: usize,
}

impl Limits {
    /// The limits of a stored command.
    pub fn of(command: &CommandRecord, targets: usize) -> Limits {
        let concurrency = Rate::parse(&command.max_concurrency, false, "MaxConcurrency")
            .map(|r| r.of(targets, true))
            .unwrap_or(50);
        let errors =
            Rate::parse(&command.max_errors, true, "MaxErrors").map(|r| r.of(targets, false)).unwrap_or(0);
        Limits { concurrency: concurrency.max(1), errors }
    }
}

struct Scheduler {
    service: RunCommands,
    store: Arc<dyn Store>,
    command: CommandRecord,
    id: CommandId,
    invocations: Vec<InvocationRecord>,
    limits: Limits,
    errors: usize,
    /// MaxErrors was exceeded: nothing more starts.
    stopped: bool,
    /// The whole command was cancelled: nothing more starts.
    cancelled: bool,
}

/// Runs a command's scheduler until every invocation is settled.
pub(super) async fn run(
    service: RunCommands,
    store: Arc<dyn Store>,
    command: CommandRecord,
    invocations: Vec<InvocationRecord>,
    mut events: mpsc::Receiver<Event>,
) {
    let Ok(id) = command.command_id.parse::<CommandId>() else {
        return tracing::error!(command = %command.command_id, "stored command id is not valid");
    };
    let limits = Limits::of(&command, invocations.len());
    let errors = invocations.iter().filter(|i| counts_as_error(i)).count();
    let cancelled = matches!(command.status, RunStatus::Cancelling | RunStatus::Cancelled);
    let mut s =
        Scheduler { service, store, command, id, invocations, limits, errors, stopped: false, cancelled };
    s.stopped = s.errors > s.limits.errors;
    // After a broker restart, agents that connect get what they were sent again.
    s.pump().await;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !s.settled() {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => s.handle(event).await,
                None => break,
            },
            _ = tick.tick() => s.deadlines().await,
        }
        s.pump().await;
    }
    s.finish().await;
    tracing::info!(command = %s.command.command_id, status = s.command.status.as_str(), "command done");
}

/// Whether an invocation counts against MaxErrors: it ran and failed or timed out. Denied
/// instances never ran and do not.
fn counts_as_error(i: &InvocationRecord) -> bool {
    i.delivered
        && matches!(i.status(), RunStatus::Failed | RunStatus::TimedOut)
        && i.status_details != "DeliveryTimedOut"
}

impl Scheduler {
    fn settled(&self) -> bool {
        self.invocations.iter().all(|i| i.status().is_terminal())
    }

    fn in_flight(&self) -> usize {
        self.invocations
            .iter()
            .filter(|i| {
                matches!(i.status(), RunStatus::Delayed | RunStatus::InProgress | RunStatus::Cancelling)
            })
            .count()
    }

    fn spec(&self) -> Control {
        Control::RunCommand(RunCommand {
            command_id: self.id.clone(),
            script: self.command.script.clone(),
            execution_timeout_s: u32::try_from(self.command.execution_timeout_s).unwrap_or(u32::MAX),
            working_directory: self.command.working_directory.clone(),
            run_as: None,
        })
    }

    async fn save(&self, idx: usize) {
        if let Err(e) = self.store.update_invocation(&self.invocations[idx]).await {
            tracing::error!(command = %self.command.command_id, error = %e, "cannot record an invocation");
        }
    }

    fn set(&mut self, idx: usize, status: RunStatus, details: &str) {
        let inv = &mut self.invocations[idx];
        inv.status = Some(status);
        inv.status_details = details.to_owned();
        if status.is_terminal() && inv.ended_us.is_none() {
            inv.ended_us = Some(now_us());
        }
    }

    /// Tries to hand invocation `idx` to its agent.
    async fn deliver(&mut self, idx: usize) {
        let instance = self.invocations[idx].instance_id.clone();
        match self.service.send(&instance, self.spec()) {
            Delivery::Sent => {
                self.invocations[idx].delivered = true;
                self.set(idx, RunStatus::InProgress, "InProgress");
            }
            Delivery::Offline => self.set(idx, RunStatus::Delayed, "Delayed"),
            Delivery::Incapable => {
                self.set(idx, RunStatus::Failed, "Undeliverable");
                self.invocations[idx].stderr =
                    "the instance's agent predates Run Command (no run-command capability): upgrade the agent".into();
            }
        }
        self.save(idx).await;
    }

    /// Starts pending invocations while the rate controls allow.
    async fn pump(&mut self) {
        if !self.stopped && !self.cancelled {
            let mut room = self.limits.concurrency.saturating_sub(self.in_flight());
            for idx in 0..self.invocations.len() {
                if room == 0 {
                    break;
                }
                if self.invocations[idx].status() == RunStatus::Pending {
                    self.deliver(idx).await;
                    room -= 1;
                }
            }
        }
        self.update_command().await;
    }

    fn index_of(&self, instance: &str) -> Option<usize> {
        self.invocations.iter().position(|i| i.instance_id == instance)
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::AgentOnline(instance) => {
                let Some(idx) = self.index_of(&instance) else { return };
                match self.invocations[idx].status() {
                    RunStatus::Delayed => self.deliver(idx).await,
                    // It may have missed the message when its link broke; the agent runs a
                    // command id once, so sending again is safe.
                    RunStatus::InProgress => {
                        self.service.send(&instance, self.spec());
                    }
                    RunStatus::Cancelling => {
                        self.service.send(&instance, Control::CancelCommand { command_id: self.id.clone() });
                    }
                    _ => {}
                }
            }
            Event::Started { instance, started_us } => {
                let Some(idx) = self.index_of(&instance) else { return };
                let inv = &mut self.invocations[idx];
                if !inv.status().is_terminal() && inv.started_us.is_none() {
                    inv.started_us = Some(started_us);
                    self.save(idx).await;
                }
            }
            Event::Result { instance, result } => self.result(&instance, result).await,
            Event::Cancel(instances) => self.cancel(instances).await,
        }
    }

    async fn result(&mut self, instance: &str, r: CommandResult) {
        let Some(idx) = self.index_of(instance) else {
            // Not a target of this command: nothing to record, but the agent must stop
            // resending it.
            self.service.send(instance, Control::CommandResultAck { command_id: r.command_id });
            return;
        };
        if !self.invocations[idx].status().is_terminal() {
            let (status, details) = match (r.outcome, r.exit_code) {
                (CommandOutcome::Exited, 0) => (RunStatus::Success, "Success"),
                (CommandOutcome::Exited, _) => (RunStatus::Failed, "Failed"),
                (CommandOutcome::TimedOut, _) => (RunStatus::TimedOut, "ExecutionTimedOut"),
                (CommandOutcome::Cancelled, _) => (RunStatus::Cancelled, "Cancelled"),
                (CommandOutcome::StartFailed | CommandOutcome::Interrupted, _) => {
                    (RunStatus::Failed, "Failed")
                }
            };
            let inv = &mut self.invocations[idx];
            inv.delivered = true;
            inv.exit_code = Some(r.exit_code);
            inv.started_us = (r.started_us > 0).then_some(r.started_us).or(inv.started_us);
            inv.ended_us = Some(r.ended_us);
            inv.stdout = r.stdout;
            inv.stderr = r.stderr;
            inv.stdout_bytes = i64::try_from(r.stdout_bytes).unwrap_or(i64::MAX);
            inv.stderr_bytes = i64::try_from(r.stderr_bytes).unwrap_or(i64::MAX);
            inv.stdout_sha256 = r.stdout_sha256;
            inv.stderr_sha256 = r.stderr_sha256;
            self.set(idx, status, details);
            self.save(idx).await;
            tracing::info!(
                command = %self.command.command_id, instance, status = status.as_str(),
                exit_code = r.exit_code, stdout_sha256 = %self.invocations[idx].stdout_sha256,
                "invocation done"
            );
            if counts_as_error(&self.invocations[idx]) {
                self.errors += 1;
                if self.errors > self.limits.errors && !self.stopped {
                    self.stop_for_errors().await;
                }
            }
        }
        // Recorded (or settled before): the agent may forget it.
        self.service.send(instance, Control::CommandResultAck { command_id: self.id.clone() });
    }

    /// MaxErrors is exceeded: invocations not started yet never start.
    async fn stop_for_errors(&mut self) {
        self.stopped = true;
        tracing::info!(command = %self.command.command_id, errors = self.errors, max_errors = self.limits.errors,
            "MaxErrors exceeded: invocations not started are terminated");
        for idx in 0..self.invocations.len() {
            if matches!(self.invocations[idx].status(), RunStatus::Pending | RunStatus::Delayed) {
                self.set(idx, RunStatus::Cancelled, "Terminated");
                self.invocations[idx].stderr = format!(
                    "not started: the command exceeded its MaxErrors ({}) with {} errors",
                    self.command.max_errors, self.errors
                );
                self.save(idx).await;
            }
        }
    }

    async fn cancel(&mut self, instances: Option<Vec<String>>) {
        if instances.is_none() {
            self.cancelled = true;
        }
        for idx in 0..self.invocations.len() {
            let inv = &self.invocations[idx];
            if instances.as_ref().is_some_and(|list| !list.contains(&inv.instance_id)) {
                continue;
            }
            match inv.status() {
                RunStatus::Pending | RunStatus::Delayed => {
                    self.set(idx, RunStatus::Cancelled, "Cancelled");
                    self.save(idx).await;
                }
                RunStatus::InProgress => {
                    let instance = inv.instance_id.clone();
                    self.service.send(&instance, Control::CancelCommand { command_id: self.id.clone() });
                    self.set(idx, RunStatus::Cancelling, "Cancelling");
                    self.save(idx).await;
                }
                _ => {}
            }
        }
    }

    /// The delivery timeout, and results that never come from agents that are gone.
    async fn deadlines(&mut self) {
        let now = now_us();
        let delivery_deadline =
            self.command.requested_us.saturating_add(self.command.timeout_seconds.saturating_mul(1_000_000));
        for idx in 0..self.invocations.len() {
            let inv = &self.invocations[idx];
            let online = self.service.is_online(&inv.instance_id);
            // Delivered but never started (the agent went away, or the message was lost)
            // counts as not delivered; a cancel makes sure it does not start late.
            let not_started = matches!(inv.status(), RunStatus::Pending | RunStatus::Delayed)
                || (inv.status() == RunStatus::InProgress && inv.started_us.is_none());
            if not_started && now >= delivery_deadline {
                if inv.delivered {
                    let instance = inv.instance_id.clone();
                    self.service.send(&instance, Control::CancelCommand { command_id: self.id.clone() });
                }
                self.set(idx, RunStatus::TimedOut, "DeliveryTimedOut");
                self.save(idx).await;
                continue;
            }
            // A cancel sent to an agent that never started the command and never came back.
            if inv.status() == RunStatus::Cancelling && inv.started_us.is_none() && now >= delivery_deadline {
                self.set(idx, RunStatus::Cancelled, "Cancelled");
                self.save(idx).await;
                continue;
            }
            // The agent kills the command at its execution timeout; a result this late is
            // not coming (the agent went away, or lost it).
            let overdue = inv.started_us.is_some_and(|s| {
                now > s
                    .saturating_add(self.command.execution_timeout_s.saturating_mul(1_000_000))
                    .saturating_add(RESULT_GRACE_US)
            });
            if overdue && matches!(inv.status(), RunStatus::InProgress | RunStatus::Cancelling) {
                self.set(idx, RunStatus::TimedOut, "ExecutionTimedOut");
                self.invocations[idx].stderr = if online {
                    "the agent did not report a result after the execution timeout".into()
                } else {
                    "the agent went away and did not report a result".into()
                };
                self.save(idx).await;
            }
        }
    }

    /// The command's status from its invocations'.
    fn overall(&self) -> (RunStatus, &'static str) {
        let statuses: Vec<RunStatus> = self.invocations.iter().map(InvocationRecord::status).collect();
        if statuses.is_empty() {
            return (RunStatus::Failed, "NoInstancesInTag");
        }
        if statuses.iter().any(|s| !s.is_terminal()) {
            if self.cancelled {
                return (RunStatus::Cancelling, "Cancelling");
            }
            if statuses.iter().all(|s| *s == RunStatus::Pending) {
                return (RunStatus::Pending, "Pending");
            }
            return (RunStatus::InProgress, "InProgress");
        }
        if self.cancelled {
            (RunStatus::Cancelled, "Cancelled")
        } else if statuses.contains(&RunStatus::Failed) || self.stopped {
            (RunStatus::Failed, "Failed")
        } else if statuses.contains(&RunStatus::TimedOut) {
            let all_delivery = self
                .invocations
                .iter()
                .all(|i| i.status() != RunStatus::TimedOut || i.status_details == "DeliveryTimedOut");
            (RunStatus::TimedOut, if all_delivery { "DeliveryTimedOut" } else { "ExecutionTimedOut" })
        } else if statuses.contains(&RunStatus::Cancelled) {
            (RunStatus::Cancelled, "Cancelled")
        } else {
            (RunStatus::Success, "Success")
        }
    }

    async fn update_command(&mut self) {
        let (status, details) = self.overall();
        if status != self.command.status || details != self.command.status_details {
            self.command.status = status;
            self.command.status_details = details.to_owned();
            if let Err(e) = self.store.set_command_status(&self.command.command_id, status, details).await {
                tracing::error!(command = %self.command.command_id, error = %e, "cannot record a command status");
            }
        }
    }

    async fn finish(&mut self) {
        self.update_command().await;
    }
}
