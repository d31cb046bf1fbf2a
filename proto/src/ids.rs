//! Identifier newtypes with their SSM formats.

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// A malformed identifier.
#[derive(Debug, thiserror::Error)]
#[error("invalid {kind} {value:?}: {why}")]
pub struct IdError {
    kind: &'static str,
    value: String,
    why: &'static str,
}

/// A managed instance id: `mi-` followed by 17 lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceId(String);

impl InstanceId {
    /// A fresh random id.
    pub fn generate() -> Self {
        let n: u128 = rand::rng().random();
        InstanceId(format!("mi-{:017x}", n & ((1u128 << 68) - 1)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for InstanceId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, IdError> {
        let ok = value.len() == 20
            && value.starts_with("mi-")
            && value[3..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(InstanceId(value))
        } else {
            Err(IdError { kind: "instance id", value, why: "expected mi- and 17 hex digits" })
        }
    }
}

impl std::str::FromStr for InstanceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        InstanceId::try_from(s.to_owned())
    }
}

impl From<InstanceId> for String {
    fn from(id: InstanceId) -> String {
        id.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The longest session id.
const MAX_SESSION_ID: usize = 96;

/// The bytes of a session id: IAM's name characters (`+=,.@_-`) and alphanumerics; no `/`.
fn id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@' | b'+' | b'=' | b',')
}

/// A session id: `<principal name>-<17 hex digits>`, so IAM patterns like
/// `session/${aws:username}-*` select a user's own sessions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(String);

impl SessionId {
    /// A fresh id for a session started by `owner_name`. Every name IAM allows maps to a valid
    /// id: characters outside the id's set become `_`, a leading `.` too (ids name files), and
    /// the name is cut so the id fits.
    pub fn generate(owner_name: &str) -> Self {
        let n: u128 = rand::rng().random();
        let mut prefix: String = owner_name
            .chars()
            .take(MAX_SESSION_ID - 18)
            .map(|c| if c.is_ascii() && id_byte(c as u8) { c } else { '_' })
            .collect();
        if prefix.is_empty() || prefix.starts_with('.') {
            prefix.replace_range(..prefix.chars().next().map_or(0, char::len_utf8), "_");
        }
        SessionId(format!("{prefix}-{:017x}", n & ((1u128 << 68) - 1)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SessionId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, IdError> {
        if value.is_empty() || value.len() > MAX_SESSION_ID {
            Err(IdError { kind: "session id", value, why: "must be 1 to 96 characters" })
        } else if !value.bytes().all(id_byte) {
            Err(IdError { kind: "session id", value, why: "has a character outside [A-Za-z0-9-_.@+=,]" })
        } else if value.starts_with('.') {
            Err(IdError { kind: "session id", value, why: "must not start with a dot" })
        } else {
            Ok(SessionId(value))
        }
    }
}

impl std::str::FromStr for SessionId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        SessionId::try_from(s.to_owned())
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> String {
        id.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Run Command command id: a lower-case UUID (`8-4-4-4-12` hex digits), as SSM's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CommandId(String);

impl CommandId {
    /// A fresh random (version 4) id.
    pub fn generate() -> Self {
        CommandId(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CommandId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, IdError> {
        // Lower case only, so an id names one file and one row whatever the caller typed.
        let ok = value.len() == 36
            && value.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
            });
        if ok {
            Ok(CommandId(value))
        } else {
            Err(IdError { kind: "command id", value, why: "expected a lower-case UUID" })
        }
    }
}

impl std::str::FromStr for CommandId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        CommandId::try_from(s.to_owned())
    }
}

impl From<CommandId> for String {
    fn from(id: CommandId) -> String {
        id.0
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_iam_name_makes_a_valid_session_id() {
        for name in
            ["alice", "a,b", "first.last@example.com", "x+y=z", ".hidden", "_", "é-name", &"n".repeat(64)]
        {
            let id = SessionId::generate(name);
            assert_eq!(id.as_str().parse::<SessionId>().ok().as_ref(), Some(&id), "{name} -> {id}");
            assert!(!id.as_str().starts_with('.'), "{id}");
        }
        assert!(SessionId::generate("a,b").as_str().starts_with("a,b-"));
        assert!(SessionId::generate(".x").as_str().starts_with("_x-"));
        assert!(".x-1".parse::<SessionId>().is_err());
        assert!("a/b-1".parse::<SessionId>().is_err());
    }

    #[test]
    fn generated_ids_parse() {
        for _ in 0..100 {
            let id = InstanceId::generate();
            assert_eq!(id.as_str().parse::<InstanceId>().unwrap(), id);
            let s = SessionId::generate("alice");
            assert!(s.as_str().starts_with("alice-"));
            assert_eq!(s.as_str().len(), "alice-".len() + 17);
            assert_eq!(s.as_str().parse::<SessionId>().unwrap(), s);
        }
    }

    #[test]
    fn bad_ids_rejected() {
        for bad in
            ["", "i-123", "mi-123", "mi-0123456789abcdefg", "mi-0123456789ABCDEF0", "mi-0123456789abcdef01"]
        {
            assert!(bad.parse::<InstanceId>().is_err(), "{bad}");
        }
        assert!("a b".parse::<SessionId>().is_err());
        assert!("x".repeat(97).parse::<SessionId>().is_err());
        assert!("".parse::<SessionId>().is_err());
        for bad in [
            "",
            "0b5c3a4e-2f1d-4c8e-9a6b-3d2e1f0a9b8",
            "0B5C3A4E-2F1D-4C8E-9A6B-3D2E1F0A9B8C",
            "0b5c3a4e_2f1d-4c8e-9a6b-3d2e1f0a9b8c",
            "../../etc/passwd/xxxxxxxxxxxxxxxxxxx",
        ] {
            assert!(bad.parse::<CommandId>().is_err(), "{bad}");
        }
        let c = CommandId::generate();
        assert_eq!(c.as_str().parse::<CommandId>().unwrap(), c);
    }
}
