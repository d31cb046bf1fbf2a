//! The TCP proxy: one upstream connection per accepted connection, half-close kept.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::faults::{Direction, Faults, Gauge, Shared};
use crate::{ProxyConfig, ProxyError};

/// Bytes read from one side before they are written to the other.
const CHUNK: usize = 64 * 1024;
/// How long an upstream connect may take once the path is open (loopback: refused at once).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP proxy on loopback; dropping it stops every task and closes every connection.
#[derive(Debug)]
pub struct TcpProxy {
    local: SocketAddr,
    faults: Faults,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Starts a proxy to `upstream` on an ephemeral 127.0.0.1 port.
    pub async fn start(upstream: SocketAddr) -> Result<Self, ProxyError> {
        Self::start_with(upstream, ProxyConfig::default()).await
    }

    /// Starts a proxy to `upstream` as `config` says (`idle_timeout` is not used for TCP).
    pub async fn start_with(upstream: SocketAddr, config: ProxyConfig) -> Result<Self, ProxyError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ProxyError::Bind { addr: config.listen, source })?;
        let local = listener.local_addr().map_err(ProxyError::LocalAddr)?;
        let faults = Faults::new(config.seed);
        let task =
            tokio::spawn(accept_loop(listener, upstream, config.max_clients.max(1), faults.shared.clone()));
        Ok(Self { local, faults, task })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The fault switches and counters of this proxy.
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, max: usize, shared: Arc<Shared>) {
    let mut tasks = JoinSet::new();
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                // Out of descriptors and the like: back off rather than spin.
                tracing::warn!(error = %e, "tcp proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while tasks.try_join_next().is_some() {}
        if tasks.len() >= max {
            shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            reset(client);
            continue;
        }
        shared.counters.connections.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(relay(client, upstream, shared.clone()));
    }
}

/// Closes with an RST rather than a FIN.
fn reset(stream: TcpStream) {
    if let Err(e) = stream.set_zero_linger() {
        tracing::debug!(error = %e, "tcp proxy: cannot set SO_LINGER 0");
    }
    drop(stream);
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>) {
    let _alive = Gauge::hold(&shared.counters.active_connections);
    let mut resets = shared.subscribe_reset();
    resets.borrow_and_update();
    // A connection accepted during a cut is held here, unconnected upstream, until restore.
    let connect = async {
        shared.wait_open().await;
        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream)).await
    };
    let mut server = tokio::select! {
        connected = connect => match connected {
            Ok(Ok(server)) => server,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "tcp proxy: upstream connect failed");
                return reset(client);
            }
            Err(_) => {
                tracing::debug!("tcp proxy: upstream connect timed out");
                return reset(client);
            }
        },
        _ = resets.changed() => {
            shared.counters.resets.fetch_add(1, Ordering::Relaxed);
            return reset(client);
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let outcome = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let both = async {
            tokio::try_join!(
                pump(client_read, server_write, Direction::ToUpstream, &shared),
                pump(server_read, client_write, Direction::ToClient, &shared),
            )
        };
        tokio::select! {
            done = both => done.map(|_| ()),
            _ = resets.changed() => {
                shared.counters.resets.fetch_add(1, Ordering::Relaxed);
                Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset_all"))
            }
        }
    };
    if let Err(e) = outcome {
        // An error or reset on one side becomes a reset on the other, as the peer would see
        // from a real middlebox losing its state.
        tracing::debug!(error = %e, "tcp proxy: resetting both sides");
        reset(client);
        reset(server);
    }
}

/// Moves bytes one way until EOF, which becomes a shutdown(Write) on the other side.
async fn pump<R, W>(mut from: R, mut to: W, dir: Direction, shared: &Shared) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    loop {
        // Not reading during a cut lets the sender's window fill, as on a dead path.
        shared.wait_open().await;
        let n = from.read(&mut buf).await?;
        // Bytes (or a FIN) read just as the cut began wait for the restore too.
        shared.wait_open().await;
        if n == 0 {
            return to.shutdown().await;
        }
        let delay = shared.delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        to.write_all(&buf[..n]).await?;
        shared.count_forwarded(dir, n);
    }
}
