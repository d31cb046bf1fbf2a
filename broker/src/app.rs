//! The broker's shared state, handed to the API and the QUIC front.

use std::path::PathBuf;
use std::sync::Arc;

use std::collections::HashMap;
use std::sync::Mutex;

use airlock_recordings::sink::shipper::Shipper;

use crate::ca::CertificateAuthority;
use crate::policy::Policy;
use crate::registry::Registry;
use crate::secrets::MasterKey;
use crate::store::Store;

/// Settings the API needs to answer.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Account id used in ARNs.
    pub account: String,
    /// The `scheme://host:port` clients use; the QUIC port is the same number over UDP.
    pub public_url: String,
    /// Region named in ARNs.
    pub region: String,
    /// The local-folder sink: where finished recordings are kept for `airlock recordings`.
    pub recordings_dir: PathBuf,
}

/// Everything the broker's tasks share.
pub struct App {
    /// The database.
    pub store: Arc<dyn Store>,
    /// Live agent links and pending session tokens.
    pub registry: Registry,
    /// The CA that signs agent and broker certificates.
    pub ca: CertificateAuthority,
    /// Key that seals stored secrets.
    pub master: MasterKey,
    /// Parsed policies, by principal.
    pub policy_cache: PolicyCache,
    /// Broker-wide settings fixed at start.
    pub settings: Settings,
    /// Delivers recordings from the spool to their sinks.
    pub shipper: Shipper,
    /// Browser console sessions and the sign-in slow-down.
    pub console: crate::console::Console,
    /// Run Command: the commands' schedulers and the agents' queues.
    pub commands: crate::run_command::RunCommands,
}

/// Compiled policies per principal; cleared on every identity change (one broker process
/// owns its store, so nothing else can change them behind its back).
#[derive(Default)]
pub struct PolicyCache {
    map: Mutex<HashMap<String, Arc<Vec<Policy>>>>,
}

impl PolicyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Vec<Policy>>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached policies of a principal.
    pub fn get(&self, principal: &str) -> Option<Arc<Vec<Policy>>> {
        self.lock().get(principal).cloned()
    }

    /// Caches a principal's policies.
    pub fn put(&self, principal: &str, policies: Arc<Vec<Policy>>) {
        self.lock().insert(principal.to_owned(), policies);
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.lock().clear();
    }
}

pub use airlock_proto::clock::now_us;
