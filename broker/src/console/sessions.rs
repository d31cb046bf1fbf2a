//! Signed-in console sessions, in memory: keyed by the SHA-256 of the cookie's random id
//! (so a lookup compares no secret), ended by idle and absolute expiry, bounded in number
//! overall and per user.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};

/// A session key: SHA-256 of the cookie value.
pub type SessionKey = [u8; 32];

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The IAM user signed in.
    pub user: String,
    /// The token state-changing requests must echo in `X-CSRF-Token`.
    pub csrf: String,
    /// When the session began.
    pub created: Instant,
    /// When it was last used.
    pub last_used: Instant,
    /// When the sign-in passed an MFA code, Unix time in microseconds.
    pub mfa_at_us: Option<i64>,
    /// When it signed in, Unix time in microseconds.
    pub signed_in_us: i64,
    /// Whether the user must change its password before anything else.
    pub reset_required: bool,
}

/// Bounds and lifetimes of console sessions.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// A session unused this long ends.
    pub idle_timeout: Duration,
    /// A session ends this long after sign-in, used or not.
    pub absolute_timeout: Duration,
    /// Sessions kept at once; the least recently used one goes first.
    pub max_sessions: usize,
    /// Sessions of one user at once; its oldest goes first.
    pub max_sessions_per_user: usize,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            idle_timeout: Duration::from_secs(60 * 60),
            absolute_timeout: Duration::from_secs(12 * 60 * 60),
            max_sessions: 10_000,
            max_sessions_per_user: 20,
        }
    }
}

/// A fresh unguessable token (256 bits, base64url).
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The table key of a cookie value.
pub fn key_of(cookie_value: &str) -> SessionKey {
    Sha256::digest(cookie_value.as_bytes()).into()
}

/// The sessions.
#[derive(Debug, Default)]
pub struct SessionTable {
    map: HashMap<SessionKey, Session>,
}

impl SessionTable {
    fn expired(s: &Session, settings: &ConsoleSettings, now: Instant) -> bool {
        now.saturating_duration_since(s.last_used) >= settings.idle_timeout
            || now.saturating_duration_since(s.created) >= settings.absolute_timeout
    }

    /// Adds a session, making room first.
    pub fn insert(&mut self, key: SessionKey, session: Session, settings: &ConsoleSettings, now: Instant) {
        self.map.retain(|_, s| !Self::expired(s, settings, now));
        let mine: Vec<(SessionKey, Instant)> =
            self.map.iter().filter(|(_, s)| s.user == session.user).map(|(k, s)| (*k, s.created)).collect();
        if mine.len() >= settings.max_sessions_per_user.max(1) {
            if let Some((oldest, _)) = mine.iter().min_by_key(|(_, created)| *created) {
                self.map.remove(oldest);
            }
        }
        if self.map.len() >= settings.max_sessions.max(1) {
            if let Some(lru) = self.map.iter().min_by_key(|(_, s)| s.last_used).map(|(k, _)| *k) {
                self.map.remove(&lru);
            }
        }
        self.map.insert(key, session);
    }

    /// The live session under `key`, marked used now; an expired one is removed.
    pub fn touch(&mut self, key: &SessionKey, settings: &ConsoleSettings, now: Instant) -> Option<Session> {
        let expired = Self::expired(self.map.get(key)?, settings, now);
        if expired {
            self.map.remove(key);
            return None;
        }
        let s = self.map.get_mut(key)?;
        s.last_used = now;
        Some(s.clone())
    }

    /// Ends one session; whether it existed.
    pub fn remove(&mut self, key: &SessionKey) -> bool {
        self.map.remove(key).is_some()
    }

    /// Ends every session of a user.
    pub fn remove_user(&mut self, user: &str) {
        self.map.retain(|_, s| s.user != user);
    }

    /// Clears the password-reset demand on a user's sessions.
    pub fn clear_reset(&mut self, user: &str) {
        self.map.values_mut().filter(|s| s.user == user).for_each(|s| s.reset_required = false);
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(user: &str, now: Instant) -> Session {
        Session {
            user: user.into(),
            csrf: random_token(),
            created: now,
            last_used: now,
            mfa_at_us: None,
            signed_in_us: 0,
            reset_required: false,
        }
    }

    #[test]
    fn idle_and_absolute_expiry() {
        let settings = ConsoleSettings {
            idle_timeout: Duration::from_secs(60),
            absolute_timeout: Duration::from_secs(150),
            ..Default::default()
        };
        let mut t = SessionTable::default();
        let now = Instant::now();
        let k = key_of("a");
        t.insert(k, session("alice", now), &settings, now);
        assert!(t.touch(&k, &settings, now + Duration::from_secs(59)).is_some());
        assert!(t.touch(&k, &settings, now + Duration::from_secs(118)).is_some(), "use keeps it alive");
        assert!(
            t.touch(&k, &settings, now + Duration::from_secs(150)).is_none(),
            "but not past the lifetime"
        );
        assert!(t.is_empty(), "an expired session is dropped");
        t.insert(k, session("alice", now), &settings, now);
        assert!(t.touch(&k, &settings, now + Duration::from_secs(60)).is_none(), "idle");
    }

    #[test]
    fn bounded_overall_and_per_user() {
        let settings = ConsoleSettings { max_sessions: 3, max_sessions_per_user: 2, ..Default::default() };
        let mut t = SessionTable::default();
        let now = Instant::now();
        for (i, user) in ["a", "a", "a"].iter().enumerate() {
            t.insert(
                key_of(&format!("a{i}")),
                session(user, now + Duration::from_secs(i as u64)),
                &settings,
                now,
            );
        }
        assert_eq!(t.len(), 2, "a user's oldest session made room");
        assert!(t.touch(&key_of("a0"), &settings, now).is_none());
        t.insert(key_of("b"), session("b", now), &settings, now);
        assert_eq!(t.len(), 3);
        t.insert(key_of("c"), session("c", now + Duration::from_secs(5)), &settings, now);
        assert_eq!(t.len(), 3, "full: the least recently used session (b's) made room");
        assert!(!t.remove(&key_of("b")));
        t.remove_user("a");
        assert_eq!(t.len(), 1, "only c remains");
        assert!(t.remove(&key_of("c")) && !t.remove(&key_of("c")));
        assert!(key_of("x") != key_of("y") && random_token() != random_token());
    }
}
