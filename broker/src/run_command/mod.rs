//! Run Command on the broker: one scheduler task per command owns its invocations' states
//! (the only writer of its rows), and this service routes between schedulers and the agent
//! links: commands out to connected agents, results and reconnects back in.

pub mod document;
pub mod plan;
mod scheduler;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use airlock_proto::{CommandId, CommandResult, Control};
use tokio::sync::mpsc;

use crate::store::{CommandRecord, InvocationRecord, Store};
pub use scheduler::{Event, Limits};

/// Messages queued for one agent's control stream at most.
const AGENT_QUEUE: usize = 256;
/// Events queued for one scheduler at most.
const EVENT_QUEUE: usize = 1024;
/// Commands in progress at once at most; SendCommand is throttled beyond (each holds a
/// scheduler task until its last invocation settles, up to its delivery timeout).
pub const MAX_LIVE_COMMANDS: usize = 1000;

/// How an agent can be reached.
enum Reach {
    /// Connected with the `run-command` capability: its control stream's queue.
    Capable { generation: u64, tx: mpsc::Sender<Control> },
    /// Connected, but its agent predates Run Command.
    Incapable { generation: u64 },
}

/// What sending to an agent found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued on its control stream.
    Sent,
    /// Not connected (or its queue is full): try again when it connects.
    Offline,
    /// Connected, but it cannot run commands.
    Incapable,
}

#[derive(Default)]
struct Inner {
    agents: Mutex<HashMap<String, Reach>>,
    schedulers: Mutex<HashMap<String, mpsc::Sender<Event>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The Run Command service, shared by the API and the agent links.
#[derive(Clone, Default)]
pub struct RunCommands {
    inner: Arc<Inner>,
}

impl RunCommands {
    /// An agent connected; with the capability, the returned queue feeds its control stream.
    pub fn agent_online(
        &self,
        instance_id: &str,
        generation: u64,
        capable: bool,
    ) -> Option<mpsc::Receiver<Control>> {
        let (reach, rx) = if capable {
            let (tx, rx) = mpsc::channel(AGENT_QUEUE);
            (Reach::Capable { generation, tx }, Some(rx))
        } else {
            (Reach::Incapable { generation }, None)
        };
        lock(&self.inner.agents).insert(instance_id.to_owned(), reach);
        let schedulers: Vec<mpsc::Sender<Event>> = lock(&self.inner.schedulers).values().cloned().collect();
        let instance = instance_id.to_owned();
        tokio::spawn(async move {
            for s in schedulers {
                let _ = s.send(Event::AgentOnline(instance.clone())).await;
            }
        });
        rx
    }

    /// An agent's link of this generation ended.
    pub fn agent_offline(&self, instance_id: &str, generation: u64) {
        let mut agents = lock(&self.inner.agents);
        let current = match agents.get(instance_id) {
            Some(Reach::Capable { generation: g, .. } | Reach::Incapable { generation: g }) => *g,
            None => return,
        };
        if current == generation {
            agents.remove(instance_id);
        }
    }

    /// Whether the agent is connected now.
    pub fn is_online(&self, instance_id: &str) -> bool {
        lock(&self.inner.agents).contains_key(instance_id)
    }

    /// Queues a message for an agent.
    pub fn send(&self, instance_id: &str, msg: Control) -> Delivery {
        match lock(&self.inner.agents).get(instance_id) {
            Some(Reach::Capable { tx, .. }) => match tx.try_send(msg) {
                Ok(()) => Delivery::Sent,
                Err(_) => Delivery::Offline,
            },
            Some(Reach::Incapable { .. }) => Delivery::Incapable,
            None => Delivery::Offline,
        }
    }

    /// agent → broker: an invocation started.
    pub async fn started(&self, instance_id: &str, command_id: CommandId, started_us: i64) {
        let to = lock(&self.inner.schedulers).get(command_id.as_str()).cloned();
        if let Some(to) = to {
            let _ = to.send(Event::Started { instance: instance_id.to_owned(), started_us }).await;
        }
    }

    /// agent → broker: a result. Its scheduler records it and acknowledges it; a result of a
    /// command that is finished (or unknown) is acknowledged at once, so the agent stops
    /// resending it, and recorded nowhere: the first result is the one that counts.
    pub async fn result(&self, store: &dyn Store, instance_id: &str, result: CommandResult) {
        let command_id = result.command_id.clone();
        let to = lock(&self.inner.schedulers).get(command_id.as_str()).cloned();
        if let Some(to) = to {
            if to.send(Event::Result { instance: instance_id.to_owned(), result }).await.is_ok() {
                return;
            }
        }
        match store.invocations(Some(command_id.as_str()), Some(instance_id)).await {
            Ok(found) if found.first().is_none_or(|i| i.status().is_terminal()) => {
                tracing::debug!(command = %command_id, instance = %instance_id, "acknowledging a result already settled");
                self.send(instance_id, Control::CommandResultAck { command_id });
            }
            Ok(_) => {
                tracing::warn!(command = %command_id, instance = %instance_id, "a result for a command nobody schedules")
            }
            Err(e) => tracing::error!(error = %e, "cannot look up an invocation"),
        }
    }

    /// Tells a command's scheduler something; false if the command is not running here.
    pub async fn tell(&self, command_id: &str, event: Event) -> bool {
        let to = lock(&self.inner.schedulers).get(command_id).cloned();
        match to {
            Some(to) => to.send(event).await.is_ok(),
            None => false,
        }
    }

    /// How many commands are in progress.
    pub fn live(&self) -> usize {
        lock(&self.inner.schedulers).len()
    }

    /// Starts the scheduler of a command whose rows are stored.
    pub fn schedule(
        &self,
        store: Arc<dyn Store>,
        command: CommandRecord,
        invocations: Vec<InvocationRecord>,
    ) {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let id = command.command_id.clone();
        lock(&self.inner.schedulers).insert(id.clone(), tx);
        let me = self.clone();
        tokio::spawn(async move {
            scheduler::run(me.clone(), store, command, invocations, rx).await;
            lock(&me.inner.schedulers).remove(&id);
        });
    }

    /// Resumes the commands a previous broker process left unfinished.
    pub async fn resume(&self, store: Arc<dyn Store>) {
        let ids = match store.unfinished_commands().await {
            Ok(ids) => ids,
            Err(e) => return tracing::error!(error = %e, "cannot list unfinished commands"),
        };
        for id in ids {
            let loaded = async {
                let command = store.command(&id).await?;
                let invocations = store.invocations(Some(&id), None).await?;
                Ok::<_, crate::store::StoreError>(command.map(|c| (c, invocations)))
            };
            match loaded.await {
                Ok(Some((command, mut invocations))) => {
                    invocations.sort_by_key(|i| i.seq);
                    tracing::info!(command = %id, "resuming a command");
                    self.schedule(store.clone(), command, invocations);
                }
                Ok(None) => {}
                Err(e) => tracing::error!(command = %id, error = %e, "cannot resume a command"),
            }
        }
    }
}
