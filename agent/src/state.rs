//! The agent's registration on disk: `agent.json`, `agent.key`, `agent.crt`, `ca.pem` in the
//! data directory.
//!
//! Every file is written to a temporary name and renamed into place, and `agent.json` is
//! written last, so a crash mid-registration never leaves a registration that looks complete.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use airlock_proto::InstanceId;
use serde::{Deserialize, Serialize};

use crate::error::Error;

const STATE_FILE: &str = "agent.json";
const KEY_FILE: &str = "agent.key";
const CERT_FILE: &str = "agent.crt";
/// A renewed certificate whose key may not be in place yet (see [`StateDir::save_renewal`]).
const NEXT_CERT_FILE: &str = "agent.crt.next";
const CA_FILE: &str = "ca.pem";
/// No state file is anywhere near this; the cap keeps a wrong path from eating memory.
const MAX_FILE_LEN: u64 = 1 << 20;

/// What `agent.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// The id the broker assigned at registration.
    pub instance_id: InstanceId,
    /// The broker endpoint URL given to `register`.
    pub endpoint: String,
}

/// A complete registration: the state file plus the PEM material next to it.
#[derive(Clone, PartialEq, Eq)]
pub struct Registration {
    /// Contents of `agent.json`.
    pub state: AgentState,
    /// The agent's private key (PKCS#8 PEM).
    pub key_pem: String,
    /// The agent's certificate, signed by the broker CA.
    pub cert_pem: String,
    /// The broker CA the agent pins.
    pub ca_pem: String,
}

impl std::fmt::Debug for Registration {
    // The private key must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").field("state", &self.state).finish_non_exhaustive()
    }
}

/// The data directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// A handle on `root`; nothing is touched until a method is called.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the private key file.
    pub fn key_path(&self) -> PathBuf {
        self.root.join(KEY_FILE)
    }

    /// The existing registration's state, if `agent.json` is there.
    pub fn existing(&self) -> Result<Option<AgentState>, Error> {
        let path = self.root.join(STATE_FILE);
        if !path.exists() {
            return Ok(None);
        }
        Ok(Some(parse_state(&path, &read_capped(&path)?)?))
    }

    /// Writes a registration, creating the directory with mode 0700.
    pub fn save(&self, reg: &Registration) -> Result<(), Error> {
        DirBuilder::new().recursive(true).mode(0o700).create(&self.root)?;
        // The directory may predate us with looser permissions; it holds a private key.
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))?;
        let json = serde_json::to_vec_pretty(&reg.state)
            .map_err(|e| Error::State { path: self.root.join(STATE_FILE), detail: e.to_string() })?;
        write_atomic(&self.root.join(KEY_FILE), reg.key_pem.as_bytes(), 0o600)?;
        write_atomic(&self.root.join(CERT_FILE), reg.cert_pem.as_bytes(), 0o600)?;
        write_atomic(&self.root.join(CA_FILE), reg.ca_pem.as_bytes(), 0o600)?;
        write_atomic(&self.root.join(STATE_FILE), &json, 0o600)?;
        Ok(())
    }

    /// Replaces the key and certificate with renewed ones. Two files cannot be replaced in
    /// one step, so the certificate is parked as `agent.crt.next` first, then the key is
    /// replaced, then the certificate: [`StateDir::load`] finishes or undoes an interrupted
    /// renewal by checking which certificate the key on disk belongs to.
    pub fn save_renewal(&self, key_pem: &str, cert_pem: &str) -> Result<(), Error> {
        let next = self.root.join(NEXT_CERT_FILE);
        write_atomic(&next, cert_pem.as_bytes(), 0o600)?;
        write_atomic(&self.key_path(), key_pem.as_bytes(), 0o600)?;
        fs::rename(&next, self.root.join(CERT_FILE))?;
        File::open(&self.root)?.sync_all()?;
        Ok(())
    }

    /// Finishes or undoes a renewal a crash interrupted.
    fn recover_renewal(&self) -> Result<(), Error> {
        let next = self.root.join(NEXT_CERT_FILE);
        if !next.exists() {
            return Ok(());
        }
        let key_pem = read_text(&self.key_path())?;
        let ca_pem = read_text(&self.root.join(CA_FILE))?;
        let matches = (|| {
            let chain =
                airlock_proto::quic::certs_from_pem(read_text(&next).ok()?.as_bytes(), "agent.crt.next")
                    .ok()?;
            let key = airlock_proto::quic::key_from_pem(key_pem.as_bytes(), "agent.key").ok()?;
            airlock_proto::quic::client_config(ca_pem.as_bytes(), Some((chain, key))).ok()
        })()
        .is_some();
        if matches {
            // The key was replaced already: the parked certificate is the one to use.
            fs::rename(&next, self.root.join(CERT_FILE))?;
            tracing::info!("finished a certificate renewal interrupted by a restart");
        } else {
            // The key is still the old one, and so is agent.crt.
            fs::remove_file(&next)?;
            tracing::warn!("dropped a certificate renewal interrupted before its key was saved");
        }
        File::open(&self.root)?.sync_all()?;
        Ok(())
    }

    /// Reads a complete registration.
    pub fn load(&self) -> Result<Registration, Error> {
        let state_path = self.root.join(STATE_FILE);
        if !state_path.exists() {
            return Err(Error::State {
                path: state_path,
                detail: "not registered: run `airlock-agent register` first".into(),
            });
        }
        let state = parse_state(&state_path, &read_capped(&state_path)?)?;
        self.recover_renewal()?;
        let key_path = self.key_path();
        let mode = fs::metadata(&key_path).map_err(|e| state_error(&key_path, e))?.permissions().mode();
        if mode & 0o077 != 0 {
            // Registrations from before every state file was private.
            tracing::warn!(path = %key_path.display(), mode = format!("{:o}", mode & 0o777), "private key was readable by others; now 0600");
            fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600))
                .map_err(|e| state_error(&key_path, e))?;
        }
        Ok(Registration {
            state,
            key_pem: read_text(&key_path)?,
            cert_pem: read_text(&self.root.join(CERT_FILE))?,
            ca_pem: read_text(&self.root.join(CA_FILE))?,
        })
    }
}

fn state_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::State { path: path.to_owned(), detail: e.to_string() }
}

fn parse_state(path: &Path, bytes: &[u8]) -> Result<AgentState, Error> {
    serde_json::from_slice(bytes).map_err(|e| state_error(path, e))
}

/// Reads a whole file, refusing anything over [`MAX_FILE_LEN`].
pub(crate) fn read_capped(path: &Path) -> Result<Vec<u8>, Error> {
    let file = File::open(path).map_err(|e| state_error(path, e))?;
    let mut buf = Vec::new();
    file.take(MAX_FILE_LEN + 1).read_to_end(&mut buf).map_err(|e| state_error(path, e))?;
    if buf.len() as u64 > MAX_FILE_LEN {
        return Err(state_error(path, format!("larger than {MAX_FILE_LEN} bytes")));
    }
    Ok(buf)
}

fn read_text(path: &Path) -> Result<String, Error> {
    String::from_utf8(read_capped(path)?).map_err(|_| state_error(path, "not UTF-8"))
}

/// Replaces `path` with `bytes` so readers see the old or the new file, never a partial one.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let dir = path.parent().ok_or_else(|| state_error(path, "no parent directory"))?;
    let name = path.file_name().ok_or_else(|| state_error(path, "no file name"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    // A leftover from a crash would make create_new fail; it holds nothing we need.
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Registration {
        Registration {
            state: AgentState {
                instance_id: "mi-0123456789abcdef0".parse().unwrap(),
                endpoint: "https://broker:8443/".into(),
            },
            key_pem: "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n".into(),
            cert_pem: "cert".into(),
            ca_pem: "ca".into(),
        }
    }

    #[test]
    fn round_trip_and_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().join("data"));
        assert_eq!(dir.existing().unwrap(), None);
        assert!(dir.load().unwrap_err().to_string().contains("not registered"));
        let reg = sample();
        dir.save(&reg).unwrap();
        assert_eq!(dir.load().unwrap(), reg);
        assert_eq!(dir.existing().unwrap(), Some(reg.state.clone()));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.key_path()), 0o600);
        assert_eq!(mode(dir.root()), 0o700);
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(dir.root()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 4, "{names:?}");
    }

    #[test]
    fn existing_directory_is_tightened_and_files_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let dir = StateDir::new(tmp.path());
        dir.save(&sample()).unwrap();
        let mut second = sample();
        second.key_pem = "other key".into();
        dir.save(&second).unwrap();
        assert_eq!(dir.load().unwrap().key_pem, "other key");
        assert_eq!(fs::metadata(tmp.path()).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(dir.key_path()).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn malformed_state_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(STATE_FILE), b"{\"instance_id\": \"i-bad\", \"endpoint\": \"x\"}").unwrap();
        let err = StateDir::new(tmp.path()).existing().unwrap_err();
        assert!(err.to_string().contains("agent.json"), "{err}");
    }

    /// A real key and certificate (self-signed) and a CA PEM, as `(key, cert, ca)`.
    fn identity() -> (String, String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert =
            rcgen::CertificateParams::new(vec!["agent".to_string()]).unwrap().self_signed(&key).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        (key.serialize_pem(), cert.pem(), ca.self_signed(&ca_key).unwrap().pem())
    }

    #[test]
    fn interrupted_renewals_are_finished_or_undone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path());
        let (old_key, old_cert, ca) = identity();
        let (new_key, new_cert, _) = identity();
        let reg =
            Registration { key_pem: old_key.clone(), cert_pem: old_cert.clone(), ca_pem: ca, ..sample() };
        dir.save(&reg).unwrap();
        let next = tmp.path().join(NEXT_CERT_FILE);

        // Crash after parking the certificate, before the key: the old pair stays.
        fs::write(&next, &new_cert).unwrap();
        let loaded = dir.load().unwrap();
        assert_eq!(
            (loaded.key_pem.as_str(), loaded.cert_pem.as_str()),
            (old_key.as_str(), old_cert.as_str())
        );
        assert!(!next.exists());

        // Crash after the key, before the certificate: the parked certificate is taken.
        fs::write(&next, &new_cert).unwrap();
        fs::write(dir.key_path(), &new_key).unwrap();
        let loaded = dir.load().unwrap();
        assert_eq!(
            (loaded.key_pem.as_str(), loaded.cert_pem.as_str()),
            (new_key.as_str(), new_cert.as_str())
        );
        assert!(!next.exists());

        // A whole renewal: both replaced, private, nothing left over.
        let (key3, cert3, _) = identity();
        dir.save_renewal(&key3, &cert3).unwrap();
        let loaded = dir.load().unwrap();
        assert_eq!((loaded.key_pem, loaded.cert_pem), (key3, cert3));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&dir.key_path()), mode(&tmp.path().join(CERT_FILE))), (0o600, 0o600));
        let names: Vec<_> = fs::read_dir(dir.root()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 4, "{names:?}");
    }

    #[test]
    fn debug_hides_the_key() {
        assert!(!format!("{:?}", sample()).contains("PRIVATE KEY"));
    }
}
