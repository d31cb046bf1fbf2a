//! The fault switches a test flips and the counters it reads, shared by a proxy's tasks.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Which way a datagram or a TCP byte travels through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client (the proxy's listening side) to the upstream server.
    ToUpstream,
    /// From the upstream server back to the client.
    ToClient,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::ToUpstream => 0,
            Direction::ToClient => 1,
        }
    }
}

/// Whether the path is cut; a timed cut ends by itself without any task having to wake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CutState {
    Open,
    Cut,
    Until(Instant),
}

impl CutState {
    fn is_cut(self, now: Instant) -> bool {
        match self {
            CutState::Open => false,
            CutState::Cut => true,
            CutState::Until(end) => now < end,
        }
    }
}

#[derive(Default)]
struct DirCounters {
    forwarded: AtomicU64,
    forwarded_bytes: AtomicU64,
    dropped: AtomicU64,
    dropped_bytes: AtomicU64,
}

impl DirCounters {
    fn snapshot(&self) -> DirStats {
        DirStats {
            forwarded: self.forwarded.load(Ordering::Relaxed),
            forwarded_bytes: self.forwarded_bytes.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            dropped_bytes: self.dropped_bytes.load(Ordering::Relaxed),
        }
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    dirs: [DirCounters; 2],
    pub(crate) clients: AtomicU64,
    pub(crate) active_clients: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) rebinds: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) active_connections: AtomicU64,
    pub(crate) resets: AtomicU64,
}

/// Counts for one direction. For UDP a unit is a datagram; for TCP it is one write of the
/// bytes read in one go (TCP never drops, so its `dropped` stays 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirStats {
    /// Datagrams (TCP: writes) passed on.
    pub forwarded: u64,
    /// Bytes passed on.
    pub forwarded_bytes: u64,
    /// Datagrams dropped by a cut, the loss rate, a full queue or a send error.
    pub dropped: u64,
    /// Bytes of the dropped datagrams.
    pub dropped_bytes: u64,
}

/// A snapshot of a proxy's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Client → upstream.
    pub to_upstream: DirStats,
    /// Upstream → client.
    pub to_client: DirStats,
    /// UDP client mappings ever created.
    pub clients: u64,
    /// UDP client mappings alive now.
    pub active_clients: u64,
    /// UDP datagrams from new clients, or TCP connections, refused over the cap.
    pub refused: u64,
    /// Upstream-facing UDP sockets replaced by [`Faults::rebind`].
    pub rebinds: u64,
    /// TCP connections accepted.
    pub connections: u64,
    /// TCP connections alive now.
    pub active_connections: u64,
    /// TCP connections reset by [`Faults::reset_all`].
    pub resets: u64,
}

pub(crate) struct Shared {
    cut: watch::Sender<CutState>,
    drop_percent: AtomicU8,
    reorder_depth: AtomicUsize,
    delay_us: AtomicU64,
    rebind: watch::Sender<u64>,
    reset: watch::Sender<u64>,
    // One generator per direction so the two directions' losses are independent and each is
    // reproducible from the seed whatever the interleaving of the two.
    rngs: [Mutex<fastrand::Rng>; 2],
    pub(crate) counters: Counters,
}

/// The fault switches of one proxy; cheap to clone, every clone drives the same proxy.
#[derive(Clone)]
pub struct Faults {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("cut", &self.is_cut())
            .field("drop_percent", &self.drop_percent())
            .field("reorder", &self.reorder_depth())
            .field("delay", &self.delay())
            .finish()
    }
}

const DOWN_SEED_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

impl Faults {
    pub(crate) fn new(seed: Option<u64>) -> Self {
        let seed = seed.unwrap_or_else(|| fastrand::u64(..));
        let shared = Shared {
            cut: watch::Sender::new(CutState::Open),
            drop_percent: AtomicU8::new(0),
            reorder_depth: AtomicUsize::new(0),
            delay_us: AtomicU64::new(0),
            rebind: watch::Sender::new(0),
            reset: watch::Sender::new(0),
            rngs: [
                Mutex::new(fastrand::Rng::with_seed(seed)),
                Mutex::new(fastrand::Rng::with_seed(seed ^ DOWN_SEED_SALT)),
            ],
            counters: Counters::default(),
        };
        Self { shared: Arc::new(shared) }
    }

    /// Cuts the path until [`Faults::restore`]: UDP datagrams are dropped both ways; TCP bytes
    /// stop moving both ways (they wait, none is lost) and new TCP connections are accepted
    /// but not connected upstream until the cut ends.
    pub fn cut(&self) {
        self.shared.cut.send_replace(CutState::Cut);
    }

    /// Ends a cut (timed or not).
    pub fn restore(&self) {
        self.shared.cut.send_replace(CutState::Open);
    }

    /// Cuts the path for `duration` from now; it then restores by itself.
    pub fn cut_for(&self, duration: Duration) {
        self.shared.cut.send_replace(CutState::Until(Instant::now() + duration));
    }

    /// Whether the path is cut right now.
    pub fn is_cut(&self) -> bool {
        self.shared.is_cut()
    }

    /// Drops this percentage (0–100, higher is taken as 100) of UDP datagrams, each
    /// direction drawing independently from its seeded generator.
    pub fn set_drop_percent(&self, percent: u8) {
        self.shared.drop_percent.store(percent.min(100), Ordering::Relaxed);
    }

    /// The current UDP loss percentage.
    pub fn drop_percent(&self) -> u8 {
        self.shared.drop_percent.load(Ordering::Relaxed)
    }

    /// Holds up to `depth` UDP datagrams per client and direction and releases them shuffled
    /// when `depth` are held (or after a short flush delay); 0 or 1 turns reordering off.
    pub fn set_reorder(&self, depth: usize) {
        self.shared.reorder_depth.store(depth, Ordering::Relaxed);
    }

    /// The current reorder depth.
    pub fn reorder_depth(&self) -> usize {
        self.shared.reorder_depth()
    }

    /// Delays every UDP datagram by `delay` (order kept), and every TCP write by `delay`
    /// (which also caps TCP throughput at one read buffer per `delay`).
    pub fn set_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.shared.delay_us.store(us, Ordering::Relaxed);
    }

    /// The current added delay.
    pub fn delay(&self) -> Duration {
        self.shared.delay()
    }

    /// UDP: gives every client mapping a fresh upstream-facing socket, so the upstream sees
    /// each client arrive from a new source port (NAT rebinding); the old port is closed.
    /// No effect on TCP.
    pub fn rebind(&self) {
        self.shared.rebind.send_modify(|generation| *generation += 1);
    }

    /// TCP: resets every live connection on both sides (`SO_LINGER` 0, so each end sees an
    /// RST), including connections waiting out a cut. No effect on UDP.
    pub fn reset_all(&self) {
        self.shared.reset.send_modify(|generation| *generation += 1);
    }

    /// Reseeds both directions' generators (drops and shuffles replay from here).
    pub fn reseed(&self, seed: u64) {
        for (i, rng) in self.shared.rngs.iter().enumerate() {
            let salt = if i == 0 { 0 } else { DOWN_SEED_SALT };
            rng.lock().unwrap_or_else(PoisonError::into_inner).seed(seed ^ salt);
        }
    }

    /// Turns every fault off (restores a cut, no loss, no reordering, no delay).
    pub fn clear(&self) {
        self.restore();
        self.set_drop_percent(0);
        self.set_reorder(0);
        self.set_delay(Duration::ZERO);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        Stats {
            to_upstream: c.dirs[0].snapshot(),
            to_client: c.dirs[1].snapshot(),
            clients: c.clients.load(Ordering::Relaxed),
            active_clients: c.active_clients.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            rebinds: c.rebinds.load(Ordering::Relaxed),
            connections: c.connections.load(Ordering::Relaxed),
            active_connections: c.active_connections.load(Ordering::Relaxed),
            resets: c.resets.load(Ordering::Relaxed),
        }
    }
}

impl Shared {
    pub(crate) fn is_cut(&self) -> bool {
        self.cut.borrow().is_cut(Instant::now())
    }

    /// Returns once the path is not cut.
    pub(crate) async fn wait_open(&self) {
        let mut rx = self.cut.subscribe();
        loop {
            let state = *rx.borrow_and_update();
            match state {
                CutState::Open => return,
                CutState::Cut => {
                    // The sender lives in `self`, so `changed` cannot fail while we run.
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
                CutState::Until(end) => {
                    if Instant::now() >= end {
                        return;
                    }
                    tokio::select! {
                        () = tokio::time::sleep_until(end) => return,
                        changed = rx.changed() => if changed.is_err() { return },
                    }
                }
            }
        }
    }

    pub(crate) fn reorder_depth(&self) -> usize {
        self.reorder_depth.load(Ordering::Relaxed)
    }

    pub(crate) fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::Relaxed))
    }

    /// Draws whether the loss rate takes this datagram.
    pub(crate) fn roll_drop(&self, dir: Direction) -> bool {
        let percent = self.drop_percent.load(Ordering::Relaxed);
        if percent == 0 {
            return false;
        }
        let mut rng = self.rngs[dir.index()].lock().unwrap_or_else(PoisonError::into_inner);
        rng.u8(0..100) < percent
    }

    pub(crate) fn shuffle<T>(&self, dir: Direction, items: &mut [T]) {
        self.rngs[dir.index()].lock().unwrap_or_else(PoisonError::into_inner).shuffle(items);
    }

    pub(crate) fn subscribe_rebind(&self) -> watch::Receiver<u64> {
        self.rebind.subscribe()
    }

    pub(crate) fn subscribe_reset(&self) -> watch::Receiver<u64> {
        self.reset.subscribe()
    }

    pub(crate) fn count_forwarded(&self, dir: Direction, bytes: usize) {
        let c = &self.counters.dirs[dir.index()];
        c.forwarded.fetch_add(1, Ordering::Relaxed);
        c.forwarded_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn count_dropped(&self, dir: Direction, bytes: usize) {
        let c = &self.counters.dirs[dir.index()];
        c.dropped.fetch_add(1, Ordering::Relaxed);
        c.dropped_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Counts a live client or connection for as long as it is held.
pub(crate) struct Gauge<'a>(&'a AtomicU64);

impl<'a> Gauge<'a> {
    pub(crate) fn hold(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn timed_cut_ends_by_itself_and_wakes_waiters() {
        let faults = Faults::new(Some(1));
        faults.cut_for(Duration::from_millis(300));
        assert!(faults.is_cut());
        let shared = faults.shared.clone();
        let waiter = tokio::spawn(async move { shared.wait_open().await });
        tokio::time::sleep(Duration::from_millis(299)).await;
        assert!(faults.is_cut());
        assert!(!waiter.is_finished());
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert!(!faults.is_cut());
        waiter.await.unwrap();
    }

    #[tokio::test]
    async fn restore_wakes_a_waiter_of_an_open_ended_cut() {
        let faults = Faults::new(Some(1));
        faults.cut();
        let shared = faults.shared.clone();
        let waiter = tokio::spawn(async move { shared.wait_open().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        faults.restore();
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
    }

    #[test]
    fn drops_replay_from_the_seed_and_directions_differ() {
        let draw = |faults: &Faults, dir| (0..200).map(|_| faults.shared.roll_drop(dir)).collect::<Vec<_>>();
        let a = Faults::new(Some(7));
        let b = Faults::new(Some(7));
        a.set_drop_percent(50);
        b.set_drop_percent(50);
        let up = draw(&a, Direction::ToUpstream);
        assert_eq!(up, draw(&b, Direction::ToUpstream));
        assert_ne!(up, draw(&a, Direction::ToClient));
        a.reseed(7);
        assert_eq!(up, draw(&a, Direction::ToUpstream));
        a.set_drop_percent(0);
        assert!(!draw(&a, Direction::ToUpstream).contains(&true));
        a.set_drop_percent(250);
        assert!(!draw(&a, Direction::ToUpstream).contains(&false));
    }
}
