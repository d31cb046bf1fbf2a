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
    /// A command on a PTY (`AWS-StartInteractiveCommand`).
    InteractiveCommand(String),
}

/// One host and port a port session may reach, on the agent's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortTarget {
    /// Host name or address, as the agent resolves it.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// A session waiting for its client to present the token.
#[derive(Debug, Clone)]
pub struct PendingSession {
    /// The session's id.
    pub session_id: String,
    /// The instance it runs on.
    pub target: String,
    /// The session document it was started with.
    pub document: String,
    /// What the agent is asked to run.
    pub plan: SessionPlan,
    /// Who started it.
    pub owner: Principal,
    /// Recording, limits and run-as, from the preferences at StartSession.
    pub launch: crate::launch::Launch,
    /// The `localPortNumber` parameter of a port document: where the stock plugin listens.
    pub local_port_number: Option<String>,
}

/// What [`Registry::terminate`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// The session is running or starting here; it was told to end.
    Signalled,
    /// Its client had not come yet; the token can no longer be redeemed.
    TokenRevoked,
    /// Not known here (ended, never redeemed before its token expired, or run by a previous
    /// broker).
    NotHere,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    /// No session has this token.
    #[error("the session token is not valid")]
    Unknown,
    /// The token's time ran out.
    #[error("the session token has expired")]
    Expired,
    /// The token was redeemed before.
    #[error("the session token was already used")]
    AlreadyUsed,
}

enum TokenState {
    Pending(Box<PendingSession>),
    /// A ResumeSession token for this live session.
    Resume(String),
    Redeemed,
}

/// What an unredeemed token opens ([`Registry::token_for`]).
#[derive(Debug, Clone)]
pub enum TokenFor {
    /// A new session (a StartSession token).
    Start(Box<PendingSession>),
    /// The live session with this id (a ResumeSession token).
    Resume(String),
}

/// A client connection come back to its session (a redeemed ResumeSession token).
pub struct ClientReturn {
    /// The client's new session stream, after its `ClientResume`.
    pub stream: crate::session::ClientStream,
    /// The number of the first output frame the client has not received.
    pub output_next: u64,
    /// The connection the stream came on.
    pub link: std::sync::Arc<dyn crate::session::ClientLink>,
}

/// Why ResumeSession cannot give a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeRefusal {
    /// The session is not live on this broker (ended, or not a session that resumes).
    NotLive,
    /// The session belongs to another principal.
    NotOwner,
}

/// Where a live session takes its client back.
struct Resumable {
    owner_arn: String,
    returns: tokio::sync::mpsc::Sender<ClientReturn>,
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
    /// The agent's QUIC connection.
    pub connection: quinn::Connection,
    /// Distinguishes successive connections of one agent, so an old link's cleanup does
    /// not remove a newer one.
    pub generation: u64,
    /// The protocol and capabilities its hello stated.
    pub version: airlock_proto::PeerVersion,
}

/// The live registry.
#[derive(Default)]
pub struct Registry {
    agents: Mutex<HashMap<String, AgentLink>>,
    sessions: Mutex<HashMap<String, CancellationToken>>,
    tokens: Mutex<HashMap<String, TokenEntry>>,
    resumable: Mutex<HashMap<String, Resumable>>,
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
    pub fn agent_connected(
        &self,
        instance_id: &str,
        connection: quinn::Connection,
        version: airlock_proto::PeerVersion,
    ) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let link = AgentLink { connection, generation, version };
        let old = lock(&self.agents).insert(instance_id.to_owned(), link);
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
        // Expired pending tokens stay until the sweeper takes them (it closes their sessions);
        // redeemed ones are dropped here so the map stays bounded.
        tokens.retain(|_, e| e.expires > now || matches!(e.state, TokenState::Pending(_)));
        tokens.insert(
            token_hash(&token),
            TokenEntry { state: TokenState::Pending(Box::new(session)), expires: now + TOKEN_TTL },
        );
        token
    }

    /// Redeems a token once. The session is registered as running in the same step (under the
    /// token lock, which [`Registry::terminate`] takes first too), so a TerminateSession that
    /// comes while the agent is still starting it is never lost: the returned token is already
    /// cancelled, and the session ends as soon as it can.
    pub fn redeem(&self, token: &str) -> Result<(PendingSession, CancellationToken), TokenRefusal> {
        let mut tokens = lock(&self.tokens);
        let entry = tokens.get_mut(&token_hash(token)).ok_or(TokenRefusal::Unknown)?;
        if entry.expires <= Instant::now() {
            return Err(TokenRefusal::Expired);
        }
        if let TokenState::Resume(_) = entry.state {
            // A resume token opens no new session.
            return Err(TokenRefusal::Unknown);
        }
        match std::mem::replace(&mut entry.state, TokenState::Redeemed) {
            TokenState::Pending(session) => {
                let cancel = CancellationToken::new();
                lock(&self.sessions).insert(session.session_id.clone(), cancel.clone());
                Ok((*session, cancel))
            }
            TokenState::Resume(_) | TokenState::Redeemed => Err(TokenRefusal::AlreadyUsed),
        }
    }

    /// Lets the live session `session_id` of `owner_arn` take its client back after a lost
    /// connection, through `returns`.
    pub fn set_resumable(
        &self,
        session_id: &str,
        owner_arn: &str,
        returns: tokio::sync::mpsc::Sender<ClientReturn>,
    ) {
        let entry = Resumable { owner_arn: owner_arn.to_owned(), returns };
        lock(&self.resumable).insert(session_id.to_owned(), entry);
    }

    /// Mints a single-use ResumeSession token for the caller's own live session.
    pub fn mint_resume_token(&self, session_id: &str, caller_arn: &str) -> Result<String, ResumeRefusal> {
        match lock(&self.resumable).get(session_id) {
            None => return Err(ResumeRefusal::NotLive),
            Some(r) if r.owner_arn != caller_arn => return Err(ResumeRefusal::NotOwner),
            Some(_) => {}
        }
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let now = Instant::now();
        let mut tokens = lock(&self.tokens);
        tokens.retain(|_, e| e.expires > now || matches!(e.state, TokenState::Pending(_)));
        let entry = TokenEntry { state: TokenState::Resume(session_id.to_owned()), expires: now + TOKEN_TTL };
        tokens.insert(token_hash(&token), entry);
        Ok(token)
    }

    /// Redeems a ResumeSession token once: the session it resumes and where to hand the
    /// client back.
    pub fn redeem_resume(
        &self,
        token: &str,
    ) -> Result<(String, tokio::sync::mpsc::Sender<ClientReturn>), TokenRefusal> {
        let mut tokens = lock(&self.tokens);
        let entry = tokens.get_mut(&token_hash(token)).ok_or(TokenRefusal::Unknown)?;
        if entry.expires <= Instant::now() {
            return Err(TokenRefusal::Expired);
        }
        match std::mem::replace(&mut entry.state, TokenState::Redeemed) {
            TokenState::Resume(id) => match lock(&self.resumable).get(&id) {
                Some(r) => Ok((id, r.returns.clone())),
                None => Err(TokenRefusal::Expired),
            },
            TokenState::Pending(session) => {
                // Not a resume token: put it back untouched.
                entry.state = TokenState::Pending(session);
                Err(TokenRefusal::Unknown)
            }
            TokenState::Redeemed => Err(TokenRefusal::AlreadyUsed),
        }
    }

    /// What a live token is for, without redeeming it: the stock plugin's edge checks that a
    /// token belongs to the session its URL names before handing it to the session core.
    pub fn token_for(&self, token: &str) -> Result<TokenFor, TokenRefusal> {
        let tokens = lock(&self.tokens);
        let entry = tokens.get(&token_hash(token)).ok_or(TokenRefusal::Unknown)?;
        if entry.expires <= Instant::now() {
            return Err(TokenRefusal::Expired);
        }
        match &entry.state {
            TokenState::Pending(s) => Ok(TokenFor::Start(s.clone())),
            TokenState::Resume(id) => Ok(TokenFor::Resume(id.clone())),
            TokenState::Redeemed => Err(TokenRefusal::AlreadyUsed),
        }
    }

    /// Ends a session wherever it is: a running (or starting) session is cancelled; a session
    /// whose client has not come yet loses its token.
    pub fn terminate(&self, session_id: &str) -> Termination {
        let mut tokens = lock(&self.tokens);
        if let Some(cancel) = lock(&self.sessions).get(session_id) {
            cancel.cancel();
            return Termination::Signalled;
        }
        let mut found = false;
        for entry in tokens.values_mut() {
            if matches!(&entry.state, TokenState::Pending(s) if s.session_id == session_id) {
                entry.state = TokenState::Redeemed;
                found = true;
            }
        }
        if found {
            Termination::TokenRevoked
        } else {
            Termination::NotHere
        }
    }

    /// Removes tokens whose time ran out unredeemed; returns their sessions, whose clients
    /// never came.
    pub fn take_expired(&self) -> Vec<String> {
        let now = Instant::now();
        let mut expired = Vec::new();
        lock(&self.tokens).retain(|_, e| {
            if e.expires > now {
                return true;
            }
            if let TokenState::Pending(s) = &e.state {
                expired.push(s.session_id.clone());
            }
            false
        });
        expired
    }

    /// Forgets a finished session.
    pub fn session_ended(&self, session_id: &str) {
        lock(&self.sessions).remove(session_id);
        lock(&self.resumable).remove(session_id);
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
            local_port_number: None,
        }
    }

    #[test]
    fn tokens_are_single_use() {
        let r = Registry::default();
        let t = r.mint_token(pending("a-1"));
        assert!(t.len() >= 43, "at least 256 bits of randomness, base64");
        assert_eq!(r.redeem(&t).unwrap().0.session_id, "a-1");
        assert_eq!(r.redeem(&t).unwrap_err(), TokenRefusal::AlreadyUsed);
        assert_eq!(r.redeem("forged").unwrap_err(), TokenRefusal::Unknown);
    }

    #[test]
    fn resume_tokens_are_single_use_owner_only_and_never_open_a_session() {
        let r = Registry::default();
        assert_eq!(r.mint_resume_token("a-9", "arn:me"), Err(ResumeRefusal::NotLive));
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        r.set_resumable("a-9", "arn:me", tx);
        assert_eq!(r.mint_resume_token("a-9", "arn:other"), Err(ResumeRefusal::NotOwner));
        let t = r.mint_resume_token("a-9", "arn:me").unwrap();
        assert_eq!(r.redeem(&t).unwrap_err(), TokenRefusal::Unknown, "a resume token starts nothing");
        assert_eq!(r.redeem_resume(&t).unwrap().0, "a-9");
        assert_eq!(r.redeem_resume(&t).unwrap_err(), TokenRefusal::AlreadyUsed);
        // A StartSession token is not a resume token, and stays usable.
        let start = r.mint_token(pending("a-10"));
        assert_eq!(r.redeem_resume(&start).unwrap_err(), TokenRefusal::Unknown);
        assert_eq!(r.redeem(&start).unwrap().0.session_id, "a-10");
        // An ended session cannot be resumed, even with a token minted before.
        let late = r.mint_resume_token("a-9", "arn:me").unwrap();
        r.session_ended("a-9");
        assert_eq!(r.redeem_resume(&late).unwrap_err(), TokenRefusal::Expired);
        assert_eq!(r.mint_resume_token("a-9", "arn:me"), Err(ResumeRefusal::NotLive));
    }

    #[test]
    fn revoked_tokens_cannot_be_redeemed() {
        let r = Registry::default();
        let t = r.mint_token(pending("a-2"));
        assert_eq!(r.terminate("a-2"), Termination::TokenRevoked);
        assert_eq!(r.redeem(&t).unwrap_err(), TokenRefusal::AlreadyUsed);
        assert_eq!(r.terminate("a-2"), Termination::NotHere);
    }

    #[test]
    fn terminate_cancels_only_that_session() {
        let r = Registry::default();
        let (_, a) = r.redeem(&r.mint_token(pending("a"))).unwrap();
        let (_, b) = r.redeem(&r.mint_token(pending("b"))).unwrap();
        assert_eq!(r.terminate("a"), Termination::Signalled);
        assert!(a.is_cancelled() && !b.is_cancelled());
        r.session_ended("a");
        assert_eq!(r.terminate("a"), Termination::NotHere);
    }

    #[test]
    fn a_terminate_between_redeem_and_start_is_kept() {
        // The session is registered by the redeem itself: terminating it before the agent
        // has started it cancels the token the session will run with.
        let r = Registry::default();
        let t = r.mint_token(pending("c"));
        let (_, cancel) = r.redeem(&t).unwrap();
        assert_eq!(r.terminate("c"), Termination::Signalled);
        assert!(cancel.is_cancelled());
    }

    #[test]
    fn expired_tokens_are_taken_once_with_their_sessions() {
        let r = Registry::default();
        r.mint_token(pending("d"));
        let redeemed = r.mint_token(pending("e"));
        r.redeem(&redeemed).unwrap();
        for e in lock(&r.tokens).values_mut() {
            e.expires = Instant::now() - Duration::from_secs(1);
        }
        assert_eq!(r.take_expired(), vec!["d".to_owned()]);
        assert!(r.take_expired().is_empty());
    }

    /// Sets the expiry of every token whose state matches `which`.
    fn expire(r: &Registry, which: fn(&TokenState) -> bool) {
        for e in lock(&r.tokens).values_mut() {
            if which(&e.state) {
                e.expires = Instant::now() - Duration::from_secs(1);
            }
        }
    }

    #[test]
    fn tokens_live_sixty_seconds_then_are_refused_as_expired() {
        let r = Registry::default();
        let before = Instant::now();
        let t = r.mint_token(pending("f"));
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        r.set_resumable("g", "arn:me", tx);
        let resume = r.mint_resume_token("g", "arn:me").unwrap();
        for e in lock(&r.tokens).values() {
            let ttl = e.expires - before;
            assert!(ttl >= TOKEN_TTL && ttl < TOKEN_TTL + Duration::from_secs(5), "{ttl:?}");
        }
        assert_eq!(TOKEN_TTL, Duration::from_secs(60));
        expire(&r, |_| true);
        assert_eq!(r.redeem(&t).unwrap_err(), TokenRefusal::Expired);
        assert_eq!(r.redeem_resume(&resume).unwrap_err(), TokenRefusal::Expired);
        // Refused, not spent: neither counts as a use.
        assert_eq!(r.take_expired(), vec!["f".to_owned()]);
    }

    #[test]
    fn minting_drops_spent_tokens_and_keeps_live_and_expired_pending_ones() {
        let r = Registry::default();
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        r.set_resumable("s", "arn:me", tx);
        let used = r.mint_token(pending("used"));
        r.redeem(&used).unwrap();
        let used_resume = r.mint_resume_token("s", "arn:me").unwrap();
        r.redeem_resume(&used_resume).unwrap();
        let waiting = r.mint_token(pending("waiting"));
        let _late = r.mint_token(pending("late"));
        expire(&r, |s| matches!(s, TokenState::Pending(p) if p.session_id == "late"));
        for mint in [0, 1] {
            // A live spent token stays refused as used, not forgotten.
            if mint == 0 {
                r.mint_token(pending("other"));
            } else {
                r.mint_resume_token("s", "arn:me").unwrap();
            }
            assert_eq!(r.redeem(&used).unwrap_err(), TokenRefusal::AlreadyUsed);
            assert_eq!(r.redeem_resume(&used_resume).unwrap_err(), TokenRefusal::AlreadyUsed);
        }
        // A spent token whose time ran out is dropped at the next mint, of either kind.
        expire(&r, |s| matches!(s, TokenState::Redeemed));
        r.mint_token(pending("another"));
        assert_eq!(r.redeem(&used).unwrap_err(), TokenRefusal::Unknown);
        expire(&r, |s| matches!(s, TokenState::Redeemed | TokenState::Resume(_)));
        let spent = r.mint_token(pending("x"));
        r.redeem(&spent).unwrap();
        expire(&r, |s| matches!(s, TokenState::Redeemed));
        r.mint_resume_token("s", "arn:me").unwrap();
        assert_eq!(r.redeem(&spent).unwrap_err(), TokenRefusal::Unknown);
        // An expired pending token stays for the sweeper, which closes its session.
        assert_eq!(r.take_expired(), vec!["late".to_owned()]);
        // A live pending token is not swept and stays redeemable.
        assert!(r.take_expired().is_empty());
        assert_eq!(r.redeem(&waiting).unwrap().0.session_id, "waiting");
    }

    #[test]
    fn the_sweeper_leaves_live_tokens() {
        let r = Registry::default();
        let t = r.mint_token(pending("h"));
        assert!(r.take_expired().is_empty());
        assert_eq!(r.redeem(&t).unwrap().0.session_id, "h");
    }

    /// Both ends of a QUIC connection on loopback, kept open with their endpoints while held.
    struct Link {
        conn: quinn::Connection,
        _peer: quinn::Connection,
        _endpoints: (quinn::Endpoint, quinn::Endpoint),
        _dir: tempfile::TempDir,
    }

    async fn link() -> Link {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::ca::CertificateAuthority::load_or_create(dir.path()).unwrap();
        let (chain, key) = ca.server_identity(&["localhost".to_owned()]).unwrap();
        let server =
            crate::quic::endpoint("127.0.0.1:0".parse().unwrap(), ca.cert_pem(), chain, key, &[7u8; 64])
                .unwrap();
        let addr = server.local_addr().unwrap();
        let config = airlock_proto::quic::client_config(ca.cert_pem().as_bytes(), None).unwrap();
        let client = airlock_proto::quic::client_endpoint(addr, config).unwrap();
        let connecting = client.connect(addr, "localhost").unwrap();
        let accepting = async { server.accept().await.unwrap().await };
        let (conn, peer) = tokio::join!(connecting, accepting);
        Link { conn: conn.unwrap(), _peer: peer.unwrap(), _endpoints: (client, server), _dir: dir }
    }

    fn closed(c: &quinn::Connection) -> bool {
        c.close_reason().is_some()
    }

    #[tokio::test]
    async fn agent_links_replace_and_clean_up_by_generation() {
        let r = Registry::default();
        let (first, second) = (link().await, link().await);
        assert!(r.agent("mi-1").is_none());
        let g1 = r.agent_connected("mi-1", first.conn.clone(), airlock_proto::PeerVersion::current());
        assert_eq!(r.agent("mi-1").map(|a| a.generation), Some(g1));
        assert!(!closed(&first.conn));
        let g2 = r.agent_connected("mi-1", second.conn.clone(), airlock_proto::PeerVersion::current());
        assert_ne!(g1, g2);
        assert!(closed(&first.conn), "the replaced link is closed");
        assert!(!closed(&second.conn));
        // The old link's cleanup leaves the new one.
        r.agent_disconnected("mi-1", g1);
        assert_eq!(r.agent("mi-1").map(|a| a.generation), Some(g2));
        r.agent_disconnected("mi-1", g2);
        assert!(r.agent("mi-1").is_none());
    }

    #[tokio::test]
    async fn deregistering_closes_the_link_whatever_its_generation() {
        let r = Registry::default();
        let l = link().await;
        assert!(!r.disconnect_agent("mi-2", CLOSE_DEREGISTERED, b"gone"));
        r.agent_connected("mi-2", l.conn.clone(), airlock_proto::PeerVersion::current());
        assert!(r.disconnect_agent("mi-2", CLOSE_DEREGISTERED, b"gone"));
        assert!(r.agent("mi-2").is_none());
        assert!(closed(&l.conn));
        assert!(!r.disconnect_agent("mi-2", CLOSE_DEREGISTERED, b"gone"));
    }
}
