//! Console passwords: the password policy, and argon2id hashing (PHC strings at rest).
//!
//! Hashing is deliberately slow, so it runs on the blocking pool, never on the runtime, and
//! at most [`MAX_CONCURRENT_HASHES`] at once: a burst of sign-ins queues instead of taking
//! every core.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use tokio::sync::Semaphore;

/// The shortest password accepted.
pub const MIN_LEN: usize = 12;
/// The longest password accepted (IAM's limit).
pub const MAX_LEN: usize = 128;
/// Hashes computed at once.
pub const MAX_CONCURRENT_HASHES: usize = 2;

/// Passwords long enough for the length rule that are still the first ones guessed.
const COMMON: &[&str] = &[
    "password1234",
    "password12345",
    "password123456",
    "passwordpassword",
    "123456789012",
    "1234567890123",
    "12345678901234",
    "qwertyuiop123",
    "qwertyuiopasdf",
    "qwertyuiopasdfgh",
    "iloveyou1234",
    "administrator",
    "administrator1",
    "letmein12345",
    "welcome12345",
    "changeme1234",
    "abcdefghijkl",
    "abcdefghijklm",
    "abc123abc123",
    "trustno1trustno1",
];

/// Errors hashing or checking passwords.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// argon2 refused its input (cannot happen with our parameters) or a stored hash.
    #[error("password hashing: {0}")]
    Hash(String),
    /// The blocking task died.
    #[error("password hashing task failed: {0}")]
    Task(String),
}

/// Why a password breaks the policy, worded for the person who chose it (never quoting it).
pub fn check_policy(user_name: &str, password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_LEN {
        return Err(format!("The password must be at least {MIN_LEN} characters long (it has {chars})."));
    }
    if chars > MAX_LEN {
        return Err(format!("The password must be at most {MAX_LEN} characters long."));
    }
    let lower = password.to_lowercase();
    let name = user_name.to_lowercase();
    if name.chars().count() >= 3 && lower.contains(&name) {
        return Err("The password must not contain the user name.".to_owned());
    }
    let mut distinct: Vec<char> = lower.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 5 {
        return Err("The password must use at least 5 different characters.".to_owned());
    }
    if COMMON.contains(&lower.as_str()) || is_run(&lower) {
        return Err("The password is too common or too easy to guess; choose another.".to_owned());
    }
    Ok(())
}

/// A run of consecutive characters (`123456789012…`, `abcdefghijkl…`), ascending or not.
fn is_run(text: &str) -> bool {
    let bytes = text.as_bytes();
    let steps: Vec<i16> = bytes.windows(2).map(|w| i16::from(w[1]) - i16::from(w[0])).collect();
    let cyclic_digit_step = |d: &i16| *d == 1 || *d == -9;
    steps.iter().all(cyclic_digit_step) || steps.iter().all(|d| *d == -1 || *d == 9)
}

fn hasher() -> Argon2<'static> {
    // argon2id v19 with the crate's defaults (m=19 MiB, t=2, p=1), OWASP's recommendation.
    Argon2::default()
}

fn slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| Semaphore::new(MAX_CONCURRENT_HASHES))
}

/// Runs `f` on the blocking pool, within the hashing slots.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
) -> Result<T, PasswordError> {
    let _slot = slots().acquire().await.map_err(|e| PasswordError::Task(e.to_string()))?;
    tokio::task::spawn_blocking(f).await.map_err(|e| PasswordError::Task(e.to_string()))?
}

/// Hashes a password: an argon2id PHC string with a fresh 128-bit salt.
pub async fn hash(password: String) -> Result<String, PasswordError> {
    blocking(move || hash_now(&password)).await
}

fn hash_now(password: &str) -> Result<String, PasswordError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| PasswordError::Hash(e.to_string()))?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `stored`; `None` checks against a decoy hash
/// (for an unknown user) so the answer takes as long and is always false.
pub async fn verify(stored: Option<String>, password: String) -> Result<bool, PasswordError> {
    let known = stored.is_some();
    let stored = match stored {
        Some(s) => s,
        None => decoy().await?,
    };
    let ok = blocking(move || {
        let parsed = PasswordHash::new(&stored).map_err(|e| PasswordError::Hash(e.to_string()))?;
        Ok(hasher().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await?;
    Ok(ok && known)
}

/// Makes the decoy hash now, so that the first unknown user's sign-in costs no more than
/// any other.
pub async fn warm_up() {
    if let Err(e) = decoy().await {
        tracing::error!(error = %e, "cannot make the decoy password hash");
    }
}

/// A hash of a random password, made once, with the same parameters as real ones.
async fn decoy() -> Result<String, PasswordError> {
    static DECOY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DECOY
        .get_or_try_init(|| async {
            let random: [u8; 24] = rand::random();
            hash(hex::encode(random)).await
        })
        .await
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_length_name_variety_and_common_ones() {
        assert!(check_policy("alice", "correct horse battery").is_ok());
        assert!(check_policy("alice", "Tr0ub4dor&3x").is_ok());
        let short = check_policy("alice", "Sh0rt!pass").unwrap_err();
        assert!(short.contains("at least 12 characters") && short.contains("it has 10"), "{short}");
        assert!(check_policy("alice", &"x1".repeat(65)).unwrap_err().contains("at most 128"));
        assert!(check_policy("alice", "alice-is-my-name").unwrap_err().contains("user name"));
        assert!(check_policy("Alice.Smith", "ALICE.SMITH1234").unwrap_err().contains("user name"));
        assert!(check_policy("al", "al-quite-a-long-one").is_ok(), "a 2-letter name is no rule");
        assert!(check_policy("bob", "aaaaaaaaaaaaaaaa").unwrap_err().contains("5 different"));
        assert!(check_policy("bob", "abababababab").unwrap_err().contains("5 different"));
        for weak in ["password1234", "PASSWORD1234", "123456789012", "9876543210987", "abcdefghijklmnop"] {
            assert!(check_policy("bob", weak).unwrap_err().contains("too common"), "{weak}");
        }
        // The message never repeats the password.
        for bad in ["hunter2", "bob-hunter2-bob", "password1234"] {
            assert!(!check_policy("bob", bad).unwrap_err().contains(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn hashes_are_argon2id_salted_and_verify() {
        let a = hash("correct horse battery".into()).await.unwrap();
        let b = hash("correct horse battery".into()).await.unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "a fresh salt each time");
        assert!(!a.contains("correct"));
        assert!(verify(Some(a.clone()), "correct horse battery".into()).await.unwrap());
        assert!(!verify(Some(a), "correct horse batterY".into()).await.unwrap());
        assert!(!verify(None, "anything at all".into()).await.unwrap(), "the decoy never matches");
        assert!(verify(Some("not a phc string".into()), "x".into()).await.is_err());
    }
}
