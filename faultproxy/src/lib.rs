//! A fault-injecting loopback proxy for UDP (QUIC) and TCP, for hermetic tests of sessions
//! that must outlive their connections (issue 10).
//!
//! Put a [`UdpProxy`] or [`TcpProxy`] between a client and its server on 127.0.0.1, point the
//! client at [`UdpProxy::local_addr`], and break the path through the shared [`Faults`] handle:
//! cut it (for a while), lose or reorder datagrams, delay them, change the source port the
//! server sees (NAT rebinding), or reset every TCP connection. [`Faults::stats`] counts what
//! was forwarded and dropped so a test can assert the fault really happened.
//!
//! ```no_run
//! # async fn demo(server: std::net::SocketAddr) -> Result<(), airlock_faultproxy::ProxyError> {
//! use std::time::Duration;
//! let proxy = airlock_faultproxy::UdpProxy::start(server).await?;
//! let faults = proxy.faults();
//! // ... connect the client to proxy.local_addr() ...
//! faults.cut_for(Duration::from_millis(300));
//! faults.rebind();
//! assert!(faults.stats().to_upstream.forwarded > 0);
//! # Ok(()) }
//! ```
//!
//! Dropping a proxy stops all its tasks and closes its sockets.

#![forbid(unsafe_code)]

mod faults;
mod tcp;
mod udp;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

pub use faults::{DirStats, Direction, Faults, Stats};
pub use tcp::TcpProxy;
pub use udp::UdpProxy;

/// Largest UDP payload the proxy relays (the IPv4/IPv6 UDP maximum).
pub const MAX_DATAGRAM: usize = 65_535;

/// Errors starting a proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listening socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bound socket's address could not be read.
    #[error("cannot read the local address: {0}")]
    LocalAddr(std::io::Error),
}

/// How a proxy is started; [`ProxyConfig::default`] suits tests.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Address the proxy listens on (default 127.0.0.1:0, an ephemeral port).
    pub listen: SocketAddr,
    /// Most UDP client mappings or live TCP connections at once; more are refused.
    pub max_clients: usize,
    /// A UDP mapping with no datagram either way for this long is forgotten, as a NAT would.
    pub idle_timeout: Duration,
    /// Seed of the per-direction random generators (drops, reordering); `None` picks one.
    pub seed: Option<u64>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            max_clients: 1024,
            idle_timeout: Duration::from_secs(120),
            seed: None,
        }
    }
}

impl ProxyConfig {
    /// Seeds the random generators so drops and shuffles are reproducible.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Listens on `addr` instead of an ephemeral loopback port.
    #[must_use]
    pub fn with_listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Caps the number of UDP mappings or TCP connections.
    #[must_use]
    pub fn with_max_clients(mut self, max: usize) -> Self {
        self.max_clients = max.max(1);
        self
    }

    /// Sets how long an idle UDP mapping is kept.
    #[must_use]
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }
}
