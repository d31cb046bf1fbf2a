//! The broker's master key: access-key secrets are stored sealed under it (SigV4 needs the
//! secret itself, so it cannot be hashed like a password).

use std::path::{Path, PathBuf};

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

const PREFIX: &str = "enc1:";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

/// Errors of the master key.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The master key file could not be read or written.
    #[error("cannot access the master key {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The master key file does not hold 32 bytes.
    #[error("the master key {0} is not 32 bytes")]
    BadKey(PathBuf),
    /// A sealed value does not open with the master key.
    #[error("a stored secret cannot be opened with this master key (wrong key or corrupt value)")]
    Open,
    /// The system random generator failed.
    #[error("the system random generator failed")]
    Random,
}

/// ChaCha20-Poly1305 key kept in `DIR/master.key` (0600).
pub struct MasterKey {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl MasterKey {
    /// Loads `DIR/master.key`, creating it on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, SecretError> {
        let path = dir.join("master.key");
        let io = |source| SecretError::Io { path: path.clone(), source };
        let rng = SystemRandom::new();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut fresh = [0u8; 32];
                rng.fill(&mut fresh).map_err(|_| SecretError::Random)?;
                write_private(&path, &fresh).map_err(io)?;
                fresh.to_vec()
            }
            Err(e) => return Err(io(e)),
        };
        let unbound =
            UnboundKey::new(&CHACHA20_POLY1305, &bytes).map_err(|_| SecretError::BadKey(path.clone()))?;
        Ok(MasterKey { key: LessSafeKey::new(unbound), rng })
    }

    /// Seals a secret for storage.
    pub fn seal(&self, plain: &str) -> Result<String, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SecretError::Random)?;
        let mut buf = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .map_err(|_| SecretError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{PREFIX}{}", B64.encode(out)))
    }

    /// Opens a stored secret.
    pub fn open(&self, stored: &str) -> Result<String, SecretError> {
        let raw = stored.strip_prefix(PREFIX).and_then(|b| B64.decode(b).ok()).ok_or(SecretError::Open)?;
        if raw.len() < NONCE_LEN {
            return Err(SecretError::Open);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::Open)?;
        let mut buf = sealed.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::empty(), &mut buf).map_err(|_| SecretError::Open)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SecretError::Open)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::load_or_create(dir.path()).unwrap();
        let sealed = key.seal("wJalrXUtnFEMI/K7MDENG").unwrap();
        assert!(!sealed.contains("wJalr"), "the secret is not stored in the clear");
        assert_ne!(sealed, key.seal("wJalrXUtnFEMI/K7MDENG").unwrap(), "fresh nonce each time");
        let again = MasterKey::load_or_create(dir.path()).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), "wJalrXUtnFEMI/K7MDENG");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(dir.path().join("master.key")).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn tampered_or_foreign_values_do_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::load_or_create(dir.path()).unwrap();
        let sealed = key.seal("secret").unwrap();
        // Flip one bit of the ciphertext itself (not a base64 padding artefact).
        let mut raw = B64.decode(sealed.strip_prefix(PREFIX).unwrap()).unwrap();
        raw[NONCE_LEN] ^= 1;
        let tampered = format!("{PREFIX}{}", B64.encode(raw));
        assert!(matches!(key.open(&tampered), Err(SecretError::Open)));
        assert!(matches!(key.open("plaintext"), Err(SecretError::Open)));
        let other = MasterKey::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        assert!(matches!(other.open(&key.seal("secret").unwrap()), Err(SecretError::Open)));
    }
}
