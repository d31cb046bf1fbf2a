//! Live, in-memory state: connected agents, running sessions and unredeemed session tokens.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::store::Principal;

/// How long a StartSession token may wait for its client.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);

/// What a session runs, before the client's terminal size is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionPlan {
    /// An interactive shell.
    Shell,
    /// A non-interactive command.
    Command(String),
    /// Port forwarding (and ssh's ProxyCommand): TCP connections to these targets.
    Port(Vec<PortTarget>),
}

/// One host and port a port session may reach, on the agent's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortTarget {
    pub host: String,
    pub port: u16,
}

/// A session waiting for its client to present the token.
#[derive(Debug, Clone)]
pub struct PendingSession {
    pub session_id: String,
    pub target: String,
    pub document: String,
    pub plan: SessionPlan,
    pub owner: Principal,
    /// Recording, limits and run-as, from the preferences at StartSession.
    pub launch: crate::launch::Launch,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("the session token is not valid")]
    Unknown,
    #[error("the session token has expired")]
    Expired,
    #[error("the session token was already used")]
    AlreadyUsed,
}

enum TokenState {
    Pending(Box<PendingSession>),
    Redeemed,
}

struct TokenEntry {
    state: TokenState,
    expires: Instant,
}

/// QUIC application close code of an agent link whose instance was deregistered.
pub const CLOSE_DEREGISTERED: u32 = 4;

/// A connected agent.
#[derive(Clone)]
pub struct AgentLink {
    pub connection: quinn::Connection,
    /// Distinguishes successive connections of one agent, so an old link's cleanup does
    /// not remove a newer one.
    pub generation: u64,
}

/// The live registry.
#[derive(Default)]
pub struct Registry {
    agents: Mutex<HashMap<String, AgentLink>>,
    sessions: Mutex<HashMap<String, CancellationToken>>,
    tokens: Mutex<HashMap<String, TokenEntry>>,
    generation: AtomicU64,
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these maps cannot leave it half-updated in a way that
    // matters more than losing the broker, so recover the guard.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    /// Records a newly connected agent, replacing (and closing) an older link of the same id.
    pub fn agent_connected(&self, instance_id: &str, connection: quinn::Connection) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let old = lock(&self.agents).insert(instance_id.to_owned(), AgentLink { connection, generation });
        if let Some(old) = old {
            old.connection.close(quinn::VarInt::from_u32(2), b"replaced by a newer connection");
        }
        generation
    }

    /// Forgets an agent's link if it is still the given generation.
    pub fn agent_disconnected(&self, instance_id: &str, generation: u64) {
        let mut agents = lock(&self.agents);
        if agents.get(instance_id).is_some_and(|a| a.generation == generation) {
            agents.remove(instance_id);
        }
    }

    /// Closes and forgets an agent's live link whatever its generation (the instance was
    /// deregistered); false if it was not connected.
    pub fn disconnect_agent(&self, instance_id: &str, code: u32, reason: &[u8]) -> bool {
        let link = lock(&self.agents).remove(instance_id);
        match link {
            Some(link) => {
                link.connection.close(quinn::VarInt::from_u32(code), reason);
                true
            }
            None => false,
        }
    }

    /// The agent's live link, if connected.
    pub fn agent(&self, instance_id: &str) -> Option<AgentLink> {
        lock(&self.agents).get(instance_id).cloned()
    }

    /// Mints a single-use token for a pending session; only its hash is kept.
    pub fn mint_token(&self, session: PendingSession) -> String {
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let now = Instant::now();
        let mut tokens = lock(&self.tokens);
        tokens.retain(|_, e| e.expires > now);
        tokens.insert(
            token_hash(&token),
            TokenEntry { state: TokenState::Pending(Box::new(session)), expires: now + TOKEN_TTL },
        );
        token
    }

    /// Redeems a token once.
    pub fn redeem(&self, token: &str) -> Result<PendingSession, TokenRefusal> {
        let mut tokens = lock(&self.tokens);
        let entry = tokens.get_mut(&token_hash(token)).ok_or(TokenRefusal::Unknown)?;
        if entry.expires <= Instant::now() {
            return Err(TokenRefusal::Expired);
        }
        match std::mem::replace(&mut entry.state, TokenState::Redeemed) {
            TokenState::Pending(session) => Ok(*session),
            TokenState::Redeemed => Err(TokenRefusal::AlreadyUsed),
        }
    }

    /// Drops an unredeemed token of a session (TerminateSession before the client came).
    pub fn revoke_session_tokens(&self, session_id: &str) -> bool {
        let mut tokens = lock(&self.tokens);
        let mut found = false;
        for entry in tokens.values_mut() {
            if matches!(&entry.state, TokenState::Pending(s) if s.session_id == session_id) {
                entry.state = TokenState::Redeemed;
                found = true;
            }
        }
        found
    }

    /// Registers a running session; cancelling the returned token terminates it.
    pub fn session_started(&self, session_id: &str) -> CancellationToken {
        let token = CancellationToken::new();
        lock(&self.sessions).insert(session_id.to_owned(), token.clone());
        token
    }

    /// Forgets a finished session.
    pub fn session_ended(&self, session_id: &str) {
        lock(&self.sessions).remove(session_id);
    }

    /// Asks a running session to terminate; false if it is not running here.
    pub fn terminate(&self, session_id: &str) -> bool {
        match lock(&self.sessions).get(session_id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(id: &str) -> PendingSession {
        PendingSession {
            launch: Default::default(),
            session_id: id.into(),
            target: "mi-0123456789abcdef0".into(),
            document: "SSM-SessionManagerRunShell".into(),
            plan: SessionPlan::Shell,
            owner: Principal { name: "admin".into(), arn: "arn".into() },
        }
    }

    #[test]
    fn tokens_are_single_use() {
        let r = Registry::default();
        let t = r.mint_token(pending("a-1"));
        assert!(t.len() >= 43, "at least 256 bits of randomness, base64");
        assert_eq!(r.redeem(&t).unwrap().session_id, "a-1");
        assert_eq!(r.redeem(&t).unwrap_err(), TokenRefusal::AlreadyUsed);
        assert_eq!(r.redeem("forged").unwrap_err(), TokenRefusal::Unknown);
    }

    #[test]
    fn revoked_tokens_cannot_be_redeemed() {
        let r = Registry::default();
        let t = r.mint_token(pending("a-2"));
        assert!(r.revoke_session_tokens("a-2"));
        assert_eq!(r.redeem(&t).unwrap_err(), TokenRefusal::AlreadyUsed);
    }

    #[test]
    fn terminate_cancels_only_that_session() {
        let r = Registry::default();
        let a = r.session_started("a");
        let b = r.session_started("b");
        assert!(r.terminate("a"));
        assert!(a.is_cancelled() && !b.is_cancelled());
        r.session_ended("a");
        assert!(!r.terminate("a"));
    }
}
