//! The broker's shared state, handed to the API and the QUIC front.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::ca::CertificateAuthority;
use crate::registry::Registry;
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
    /// Where finished recordings go.
    pub recordings_dir: PathBuf,
}

/// Everything the broker's tasks share.
pub struct App {
    pub store: Arc<dyn Store>,
    pub registry: Registry,
    pub ca: CertificateAuthority,
    pub settings: Settings,
}

/// Now, in integer microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}
