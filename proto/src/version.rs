//! Which wire protocol a peer speaks, as its hello states it (docs/wire.md §2.5).
//!
//! Fleets upgrade gradually, brokers first: a broker serves agents and CLIs from
//! [`MIN_PROTOCOL`] (one release back) to [`PROTOCOL`], and refuses older ones with a message
//! naming the minimum, in a message they understand. New messages are appended to
//! [`crate::Control`] and are sent only to peers whose version or capabilities say they know
//! them.

use serde::{Deserialize, Serialize};

/// The protocol this build speaks. 1: the release whose hellos carried no version; 2: hellos
/// carry a [`PeerVersion`].
pub const PROTOCOL: u32 = 2;
/// The oldest protocol a broker of this build serves.
pub const MIN_PROTOCOL: u32 = 1;
/// What this build can do beyond its protocol's baseline.
pub const CAPABILITIES: &[&str] = &[RESUME, INTERACTIVE_COMMAND, RUN_COMMAND];
/// Sessions outlive their connections (`Ack`, `Attach`, `ClientResume`, … of §2.4).
pub const RESUME: &str = "resume";
/// The agent runs `SessionSpec::InteractiveCommand` (a command on a PTY).
pub const INTERACTIVE_COMMAND: &str = "interactive-command";
/// The agent runs Run Command invocations (`Control::RunCommand` and the messages after it).
pub const RUN_COMMAND: &str = "run-command";
/// Capabilities a hello may list; more is a protocol error.
pub const MAX_CAPABILITIES: usize = 32;
/// Length of one capability's name at most.
pub const MAX_CAPABILITY_LEN: usize = 64;

/// A peer's protocol version and capabilities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerVersion {
    /// The protocol the peer speaks.
    pub protocol: u32,
    /// What it can do beyond that protocol's baseline.
    pub capabilities: Vec<String>,
}

/// A peer this build does not serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Its protocol is older than [`MIN_PROTOCOL`].
    #[error(
        "this {peer} speaks Airlock protocol {found}; the broker serves protocols {min} to {max}: upgrade the {peer}"
    )]
    TooOld {
        /// `agent` or `client`.
        peer: &'static str,
        /// The protocol it stated.
        found: u32,
        /// [`MIN_PROTOCOL`].
        min: u32,
        /// [`PROTOCOL`].
        max: u32,
    },
    /// Its capability list is over the limits.
    #[error("the {peer}'s hello lists too many or too long capabilities")]
    Capabilities {
        /// `agent` or `client`.
        peer: &'static str,
    },
}

impl PeerVersion {
    /// What this build states.
    pub fn current() -> Self {
        PeerVersion {
            protocol: PROTOCOL,
            capabilities: CAPABILITIES.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    /// What a peer whose hello has no version speaks: protocol 1, which had resume.
    pub fn unversioned() -> Self {
        PeerVersion { protocol: 1, capabilities: vec![RESUME.to_owned()] }
    }

    /// Whether the peer has `capability`.
    pub fn has(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }

    /// Whether a broker of this build serves the peer (`peer`: `agent` or `client`).
    /// A newer protocol is served as this one: it only adds what it states.
    pub fn check(&self, peer: &'static str) -> Result<(), VersionError> {
        if self.protocol < MIN_PROTOCOL {
            return Err(VersionError::TooOld {
                peer,
                found: self.protocol,
                min: MIN_PROTOCOL,
                max: PROTOCOL,
            });
        }
        if self.capabilities.len() > MAX_CAPABILITIES
            || self.capabilities.iter().any(|c| c.len() > MAX_CAPABILITY_LEN)
        {
            return Err(VersionError::Capabilities { peer });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_release_and_the_one_before_are_served() {
        assert_eq!(PeerVersion::current().check("agent"), Ok(()));
        assert_eq!(PeerVersion::unversioned().check("client"), Ok(()));
        assert!(PeerVersion::current().has(RESUME));
        assert!(!PeerVersion::current().has("teleport"));
        // A newer peer is served with what this build knows.
        let newer = PeerVersion { protocol: PROTOCOL + 1, capabilities: vec!["x".into()] };
        assert_eq!(newer.check("agent"), Ok(()));
    }

    #[test]
    fn older_peers_are_refused_with_the_minimum_named() {
        let old = PeerVersion { protocol: MIN_PROTOCOL - 1, capabilities: vec![] };
        let e = old.check("agent").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "this agent speaks Airlock protocol {}; the broker serves protocols {MIN_PROTOCOL} to {PROTOCOL}: upgrade the agent",
                MIN_PROTOCOL - 1
            )
        );
    }

    #[test]
    fn capability_lists_are_bounded() {
        let many = PeerVersion { protocol: PROTOCOL, capabilities: vec!["a".into(); MAX_CAPABILITIES + 1] };
        assert!(matches!(many.check("client"), Err(VersionError::Capabilities { .. })));
        let enough = PeerVersion { protocol: PROTOCOL, capabilities: vec!["a".into(); MAX_CAPABILITIES] };
        assert_eq!(enough.check("client"), Ok(()));
        let long = PeerVersion { protocol: PROTOCOL, capabilities: vec!["a".repeat(MAX_CAPABILITY_LEN + 1)] };
        assert!(matches!(long.check("client"), Err(VersionError::Capabilities { .. })));
        let fits = PeerVersion { protocol: PROTOCOL, capabilities: vec!["a".repeat(MAX_CAPABILITY_LEN)] };
        assert_eq!(fits.check("client"), Ok(()));
    }
}
