//! The sign-in slow-down: failures counted per user name and per source address, each with
//! an exponentially growing lockout once it passes its threshold.
//!
//! Both maps are bounded; when one is full, forgotten entries go first, then the one idle
//! longest. A name is throttled whether or not such a user exists, so the slow-down tells
//! nothing about which users exist.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failures of one user name before it is locked out.
pub const USER_THRESHOLD: u32 = 5;
/// Failures from one address (or IPv6 /64) before it is locked out; higher than a user's,
/// since many people may share an address.
pub const IP_THRESHOLD: u32 = 20;
/// The first lockout.
pub const BASE_LOCKOUT: Duration = Duration::from_secs(30);
/// The longest lockout.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// Failures are forgotten after this long without one (and once no lockout runs).
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Entries per map.
pub const MAX_ENTRIES: usize = 10_000;

/// The lockout after the `failures`-th failure when `threshold` are tolerated: none below
/// the threshold, then [`BASE_LOCKOUT`] doubling with each further failure, at most
/// [`MAX_LOCKOUT`].
pub fn lockout(failures: u32, threshold: u32) -> Duration {
    if failures < threshold {
        return Duration::ZERO;
    }
    let doublings = (failures - threshold).min(16);
    BASE_LOCKOUT.saturating_mul(1 << doublings).min(MAX_LOCKOUT)
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
    locked_until: Instant,
}

/// Failure counts by key.
#[derive(Debug)]
struct Counter<K> {
    map: HashMap<K, Entry>,
    threshold: u32,
    max: usize,
}

impl<K: Eq + Hash + Clone> Counter<K> {
    fn new(threshold: u32, max: usize) -> Self {
        Counter { map: HashMap::new(), threshold, max: max.max(1) }
    }

    fn wait(&self, key: &K, now: Instant) -> Option<Duration> {
        self.map.get(key).and_then(|e| e.locked_until.checked_duration_since(now)).filter(|d| !d.is_zero())
    }

    fn fail(&mut self, key: &K, now: Instant) {
        if !self.map.contains_key(key) && self.map.len() >= self.max {
            self.prune(now);
        }
        let entry =
            self.map.entry(key.clone()).or_insert(Entry { failures: 0, last: now, locked_until: now });
        if now.saturating_duration_since(entry.last) >= FORGET_AFTER && entry.locked_until <= now {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last = now;
        entry.locked_until = now + lockout(entry.failures, self.threshold);
    }

    fn clear(&mut self, key: &K) {
        self.map.remove(key);
    }

    /// Drops forgotten entries; if none was, the one idle longest.
    fn prune(&mut self, now: Instant) {
        self.map.retain(|_, e| e.locked_until > now || now.saturating_duration_since(e.last) < FORGET_AFTER);
        if self.map.len() >= self.max {
            if let Some(oldest) = self.map.iter().min_by_key(|(_, e)| e.last).map(|(k, _)| k.clone()) {
                self.map.remove(&oldest);
            }
        }
    }
}

/// The address a failure is counted against: IPv4 as is, IPv6 by its /64 (one host's share).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Failed sign-ins per user name and per source address.
#[derive(Debug)]
pub struct Throttle {
    users: Counter<String>,
    addresses: Counter<IpAddr>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            users: Counter::new(USER_THRESHOLD, MAX_ENTRIES),
            addresses: Counter::new(IP_THRESHOLD, MAX_ENTRIES),
        }
    }
}

impl Throttle {
    /// How long sign-ins for `user` from `ip` must wait, if they must.
    pub fn wait(&self, user: &str, ip: IpAddr, now: Instant) -> Option<Duration> {
        let by_user = self.users.wait(&user.to_lowercase(), now);
        let by_ip = self.addresses.wait(&address_key(ip), now);
        by_user.max(by_ip)
    }

    /// Counts a failed sign-in.
    pub fn fail(&mut self, user: &str, ip: IpAddr, now: Instant) {
        self.users.fail(&user.to_lowercase(), now);
        self.addresses.fail(&address_key(ip), now);
    }

    /// Forgets a user's failures after a successful sign-in. The address keeps its count:
    /// one valid account must not reset a guesser's address.
    pub fn succeed(&mut self, user: &str) {
        self.users.clear(&user.to_lowercase());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_arithmetic() {
        assert_eq!(lockout(0, 5), Duration::ZERO);
        assert_eq!(lockout(4, 5), Duration::ZERO);
        assert_eq!(lockout(5, 5), Duration::from_secs(30));
        assert_eq!(lockout(6, 5), Duration::from_secs(60));
        assert_eq!(lockout(7, 5), Duration::from_secs(120));
        assert_eq!(lockout(9, 5), Duration::from_secs(480));
        assert_eq!(lockout(10, 5), MAX_LOCKOUT, "960 s is capped at 15 min");
        assert_eq!(lockout(u32::MAX, 5), MAX_LOCKOUT, "no overflow");
        assert_eq!(lockout(20, 20), BASE_LOCKOUT);
    }

    #[test]
    fn the_fifth_failure_locks_the_name_and_success_clears_it() {
        let mut t = Throttle::default();
        let (ip, now) = ("10.0.0.1".parse().unwrap(), Instant::now());
        for _ in 0..4 {
            t.fail("alice", ip, now);
        }
        assert_eq!(t.wait("alice", ip, now), None, "four failures cost nothing");
        t.fail("Alice", ip, now);
        assert_eq!(t.wait("ALICE", ip, now), Some(BASE_LOCKOUT), "names are counted without case");
        assert_eq!(t.wait("bob", ip, now), None, "another name from the same address is not locked");
        let later = now + BASE_LOCKOUT;
        assert_eq!(t.wait("alice", ip, later), None, "the lockout ends");
        t.fail("alice", ip, later);
        assert_eq!(t.wait("alice", ip, later), Some(BASE_LOCKOUT * 2), "and doubles on the next failure");
        t.succeed("alice");
        assert_eq!(t.wait("alice", ip, later), None);
    }

    #[test]
    fn an_address_guessing_many_names_is_locked() {
        let mut t = Throttle::default();
        let now = Instant::now();
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        for n in 0..IP_THRESHOLD {
            t.fail(&format!("user{n}"), ip, now);
        }
        let neighbour: IpAddr = "2001:db8::ffff".parse().unwrap();
        assert_eq!(t.wait("fresh", neighbour, now), Some(BASE_LOCKOUT), "the whole /64");
        assert_eq!(t.wait("fresh", "2001:db9::1".parse().unwrap(), now), None);
        t.succeed("fresh");
        assert!(t.wait("fresh", ip, now).is_some(), "a success does not clear the address");
    }

    #[test]
    fn failures_are_forgotten_and_the_map_stays_bounded() {
        let mut c: Counter<u32> = Counter::new(2, 3);
        let now = Instant::now();
        c.fail(&1, now);
        let much_later = now + FORGET_AFTER;
        c.fail(&1, much_later);
        assert_eq!(c.wait(&1, much_later), None, "the old failure was forgotten: one, not two");
        for k in 2..10 {
            c.fail(&k, much_later + Duration::from_secs(u64::from(k)));
        }
        assert!(c.map.len() <= 3, "{}", c.map.len());
        assert!(c.map.contains_key(&9), "the newest stays");
    }
}
