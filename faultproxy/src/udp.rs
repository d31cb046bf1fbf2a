//! The UDP proxy: a NAT on loopback with one upstream-facing socket per client address.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::faults::{Direction, Faults, Gauge, Shared};
use crate::{ProxyConfig, ProxyError, MAX_DATAGRAM};

/// Datagrams queued from the listening socket to one client's mapping before they are dropped.
const CLIENT_QUEUE: usize = 1024;
/// Datagrams one direction of a mapping may hold in its delay line before it drops.
const MAX_DELAYED: usize = 4096;
/// How long reordering holds a partial batch before releasing it anyway, so the tail of a
/// burst (or a lone handshake packet) is not held forever.
const REORDER_FLUSH: Duration = Duration::from_millis(20);

/// A UDP proxy on loopback; dropping it stops every task and closes every socket.
#[derive(Debug)]
pub struct UdpProxy {
    local: SocketAddr,
    faults: Faults,
    task: JoinHandle<()>,
}

impl UdpProxy {
    /// Starts a proxy to `upstream` on an ephemeral 127.0.0.1 port.
    pub async fn start(upstream: SocketAddr) -> Result<Self, ProxyError> {
        Self::start_with(upstream, ProxyConfig::default()).await
    }

    /// Starts a proxy to `upstream` as `config` says.
    pub async fn start_with(upstream: SocketAddr, config: ProxyConfig) -> Result<Self, ProxyError> {
        let socket = UdpSocket::bind(config.listen)
            .await
            .map_err(|source| ProxyError::Bind { addr: config.listen, source })?;
        let local = socket.local_addr().map_err(ProxyError::LocalAddr)?;
        let faults = Faults::new(config.seed);
        let listener = Listener {
            socket: Arc::new(socket),
            upstream,
            max_clients: config.max_clients.max(1),
            idle_timeout: config.idle_timeout,
            shared: faults.shared.clone(),
        };
        let task = tokio::spawn(listener.run());
        Ok(Self { local, faults, task })
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The fault switches and counters of this proxy.
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        // Aborting the listener drops its JoinSet, which aborts every mapping task in turn.
        self.task.abort();
    }
}

/// Binds a fresh upstream-facing socket, connected so the kernel only lets the upstream's
/// replies in (what an endpoint-dependent NAT does).
async fn bind_upstream(upstream: SocketAddr) -> io::Result<UdpSocket> {
    let any = match upstream {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = UdpSocket::bind(any).await?;
    socket.connect(upstream).await?;
    Ok(socket)
}

struct Listener {
    socket: Arc<UdpSocket>,
    upstream: SocketAddr,
    max_clients: usize,
    idle_timeout: Duration,
    shared: Arc<Shared>,
}

impl Listener {
    async fn run(self) {
        let mut clients: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
        let mut tasks = JoinSet::new();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let (n, from) = match self.socket.recv_from(&mut buf).await {
                Ok(received) => received,
                Err(e) => {
                    // An ICMP error from an earlier send to a client that has gone; the error is
                    // consumed by this call, so the loop cannot spin on it.
                    tracing::debug!(error = %e, "udp proxy: receive error on the listening socket");
                    continue;
                }
            };
            while tasks.try_join_next().is_some() {}
            let mut datagram = buf[..n].to_vec();
            if let Some(tx) = clients.get(&from) {
                match tx.try_send(datagram) {
                    Ok(()) => continue,
                    Err(TrySendError::Full(d)) => {
                        self.shared.count_dropped(Direction::ToUpstream, d.len());
                        continue;
                    }
                    // The mapping expired: this client gets a new one, as behind a real NAT.
                    Err(TrySendError::Closed(d)) => {
                        clients.remove(&from);
                        datagram = d;
                    }
                }
            }
            if clients.len() >= self.max_clients {
                clients.retain(|_, tx| !tx.is_closed());
            }
            if clients.len() >= self.max_clients {
                self.shared.counters.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.shared.count_dropped(Direction::ToUpstream, datagram.len());
                continue;
            }
            let socket = match bind_upstream(self.upstream).await {
                Ok(socket) => socket,
                Err(e) => {
                    tracing::warn!(error = %e, "udp proxy: cannot bind an upstream socket");
                    self.shared.count_dropped(Direction::ToUpstream, datagram.len());
                    continue;
                }
            };
            let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
            // A fresh channel has room for one.
            let _ = tx.try_send(datagram);
            clients.insert(from, tx);
            self.shared.counters.clients.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mapping = Mapping {
                client: from,
                upstream: self.upstream,
                listen: self.socket.clone(),
                socket,
                idle_timeout: self.idle_timeout,
                shared: self.shared.clone(),
            };
            tasks.spawn(mapping.run(rx));
        }
    }
}

/// One client's NAT mapping: its upstream-facing socket and the faults of both directions.
struct Mapping {
    client: SocketAddr,
    upstream: SocketAddr,
    listen: Arc<UdpSocket>,
    socket: UdpSocket,
    idle_timeout: Duration,
    shared: Arc<Shared>,
}

impl Mapping {
    async fn run(mut self, mut from_client: mpsc::Receiver<Vec<u8>>) {
        let shared = self.shared.clone();
        let _alive = Gauge::hold(&shared.counters.active_clients);
        let mut rebind = shared.subscribe_rebind();
        rebind.borrow_and_update();
        let mut up = Pipe::new(Direction::ToUpstream);
        let mut down = Pipe::new(Direction::ToClient);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut last_activity = Instant::now();
        loop {
            let idle_at = last_activity + self.idle_timeout;
            // While datagrams are held the next wake-up is theirs; only an empty mapping can
            // expire (and an idle timeout shorter than the delay must not make this loop spin).
            let wake =
                [up.next_deadline(), down.next_deadline()].into_iter().flatten().min().unwrap_or(idle_at);
            tokio::select! {
                datagram = from_client.recv() => match datagram {
                    Some(d) => {
                        last_activity = Instant::now();
                        up.push(d, &shared, last_activity);
                    }
                    None => return,
                },
                received = self.socket.recv(&mut buf) => match received {
                    Ok(n) => {
                        last_activity = Instant::now();
                        down.push(buf[..n].to_vec(), &shared, last_activity);
                    }
                    // ECONNREFUSED from an ICMP port unreachable while the upstream is down.
                    Err(e) => tracing::debug!(error = %e, "udp proxy: upstream receive error"),
                },
                changed = rebind.changed() => {
                    if changed.is_ok() {
                        self.rebind().await;
                    }
                }
                () = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= idle_at && up.is_empty() && down.is_empty() {
                        tracing::debug!(client = %self.client, "udp proxy: mapping expired");
                        return;
                    }
                }
            }
            let now = Instant::now();
            for d in up.take_due(&shared, now) {
                let sent = if shared.is_cut() { None } else { self.socket.send(&d).await.ok() };
                count(&shared, Direction::ToUpstream, d.len(), sent);
            }
            for d in down.take_due(&shared, now) {
                let sent =
                    if shared.is_cut() { None } else { self.listen.send_to(&d, self.client).await.ok() };
                count(&shared, Direction::ToClient, d.len(), sent);
            }
        }
    }

    /// Replaces the upstream-facing socket; the old port closes, so anything the upstream
    /// still sends there is lost, as after a real NAT rebinding.
    async fn rebind(&mut self) {
        match bind_upstream(self.upstream).await {
            Ok(socket) => {
                let old = std::mem::replace(&mut self.socket, socket);
                tracing::debug!(
                    client = %self.client,
                    old = ?old.local_addr().ok(),
                    new = ?self.socket.local_addr().ok(),
                    "udp proxy: rebound"
                );
                self.shared.counters.rebinds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "udp proxy: cannot rebind"),
        }
    }
}

fn count(shared: &Shared, dir: Direction, len: usize, sent: Option<usize>) {
    match sent {
        Some(_) => shared.count_forwarded(dir, len),
        None => shared.count_dropped(dir, len),
    }
}

/// One direction of one mapping: loss, the reorder batch and the delay line.
struct Pipe {
    dir: Direction,
    held: Vec<Vec<u8>>,
    held_since: Option<Instant>,
    delayed: VecDeque<(Instant, Vec<u8>)>,
}

impl Pipe {
    fn new(dir: Direction) -> Self {
        Self { dir, held: Vec::new(), held_since: None, delayed: VecDeque::new() }
    }

    fn is_empty(&self) -> bool {
        self.held.is_empty() && self.delayed.is_empty()
    }

    fn push(&mut self, datagram: Vec<u8>, shared: &Shared, now: Instant) {
        if shared.roll_drop(self.dir) {
            shared.count_dropped(self.dir, datagram.len());
            return;
        }
        let depth = shared.reorder_depth();
        if depth > 1 {
            self.held.push(datagram);
            self.held_since.get_or_insert(now);
            if self.held.len() >= depth {
                self.release_held(shared, now);
            }
        } else {
            self.schedule(datagram, shared, now);
        }
    }

    fn release_held(&mut self, shared: &Shared, now: Instant) {
        let mut batch = std::mem::take(&mut self.held);
        shared.shuffle(self.dir, &mut batch);
        self.held_since = None;
        for datagram in batch {
            self.schedule(datagram, shared, now);
        }
    }

    fn schedule(&mut self, datagram: Vec<u8>, shared: &Shared, now: Instant) {
        if self.delayed.len() >= MAX_DELAYED {
            shared.count_dropped(self.dir, datagram.len());
            return;
        }
        self.delayed.push_back((now + shared.delay(), datagram));
    }

    fn next_deadline(&self) -> Option<Instant> {
        let flush = self.held_since.map(|since| since + REORDER_FLUSH);
        let delayed = self.delayed.front().map(|(at, _)| *at);
        match (flush, delayed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The datagrams due to be sent now, in sending order.
    fn take_due(&mut self, shared: &Shared, now: Instant) -> Vec<Vec<u8>> {
        let flush_due = self.held_since.is_some_and(|since| now >= since + REORDER_FLUSH);
        if !self.held.is_empty() && (flush_due || shared.reorder_depth() <= 1) {
            self.release_held(shared, now);
        }
        let mut due = Vec::new();
        while self.delayed.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, datagram)) = self.delayed.pop_front() {
                due.push(datagram);
            }
        }
        due
    }
}
