//! The broker's certificate authority: created at first start, it signs the broker's own
//! TLS certificate and each agent's client certificate (from the agent's CSR, so agent keys
//! never leave their hosts).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// Errors of the CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Reading or writing a CA file failed.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Generating or signing a certificate failed.
    #[error("certificate error: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The CSR does not parse, or asks for something not allowed.
    #[error("invalid certificate signing request: {0}")]
    BadCsr(String),
    /// The agent certificate lifetime setting is not valid.
    #[error("{AGENT_CERT_LIFETIME_ENV}={0:?}: expected whole seconds, at least 3")]
    Lifetime(String),
}

/// How long an agent certificate is valid unless configured otherwise. Agents renew at two
/// thirds of it, so an agent offline for up to ten days still comes back on its own.
pub const DEFAULT_AGENT_CERT_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

/// Environment variable overriding [`DEFAULT_AGENT_CERT_LIFETIME`], in seconds.
pub const AGENT_CERT_LIFETIME_ENV: &str = "AIRLOCK_AGENT_CERT_LIFETIME_SECS";

/// The shortest lifetime accepted: agents renew at 2/3 of it over a link with 10 s heartbeats.
const MIN_AGENT_CERT_LIFETIME: Duration = Duration::from_secs(3);

/// Agent certificates start up to this far in the past, so a host whose clock is a little behind
/// the broker's does not see a certificate that is not valid yet.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// The CA's certificate and key, loaded from (or created in) the data folder.
pub struct CertificateAuthority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    agent_lifetime: Duration,
}

/// A certificate issued to an agent.
pub struct IssuedCert {
    /// The certificate, PEM.
    pub pem: String,
    /// SHA-256 of the DER certificate, hex: how the broker recognizes the agent later.
    pub fingerprint: String,
    /// The certificate's notAfter, in microseconds since the epoch.
    pub not_after_us: i64,
}

/// The agent certificate lifetime from [`AGENT_CERT_LIFETIME_ENV`], else the default.
fn agent_lifetime_from_env() -> Result<Duration, CaError> {
    match std::env::var(AGENT_CERT_LIFETIME_ENV) {
        Err(_) => Ok(DEFAULT_AGENT_CERT_LIFETIME),
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
            .filter(|d| *d >= MIN_AGENT_CERT_LIFETIME && *d <= Duration::from_secs(20 * 365 * 86_400))
            .ok_or(CaError::Lifetime(text)),
    }
}

/// SHA-256 of a DER certificate, hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io { path: path.to_owned(), source }
}

fn write_private(path: &Path, contents: &str) -> Result<(), CaError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(contents.as_bytes()).and_then(|_| f.sync_all()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

impl CertificateAuthority {
    /// Loads `DIR/ca.pem` and `DIR/ca.key`, creating both on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, CaError> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        if cert_path.exists() {
            let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
            let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
            let key = KeyPair::from_pem(&key_pem)?;
            let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
            return Ok(CertificateAuthority { cert_pem, issuer, agent_lifetime: agent_lifetime_from_env()? });
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Airlock broker CA");
        dn.push(DnType::OrganizationName, "Airlock");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2046, 1, 1);
        let cert = params.self_signed(&key)?;
        write_private(&key_path, &key.serialize_pem())?;
        std::fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            agent_lifetime: agent_lifetime_from_env()?,
        })
    }

    /// Sets how long agent certificates issued from now on are valid.
    pub fn with_agent_lifetime(mut self, lifetime: Duration) -> Self {
        self.agent_lifetime = lifetime;
        self
    }

    /// How long agent certificates are valid.
    pub fn agent_lifetime(&self) -> Duration {
        self.agent_lifetime
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A fresh server certificate for the broker, valid for `names` (DNS names or IPs).
    pub fn server_identity(
        &self,
        names: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, "Airlock broker");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2046, 1, 1);
        let cert = params.signed_by(&key, &self.issuer)?;
        let key_der =
            PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| CaError::BadCsr(e.to_string()))?;
        Ok((vec![cert.der().clone()], key_der))
    }

    /// Signs an agent's CSR as a client certificate naming `instance_id`, valid from a little
    /// before `now_us` for the agent certificate lifetime.
    pub fn sign_agent_csr(
        &self,
        csr_pem: &str,
        instance_id: &str,
        now_us: i64,
    ) -> Result<IssuedCert, CaError> {
        let mut csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| CaError::BadCsr(e.to_string()))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, instance_id);
        csr.params.distinguished_name = dn;
        csr.params.subject_alt_names = Vec::new();
        csr.params.is_ca = IsCa::ExplicitNoCa;
        csr.params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        // X.509 times have whole seconds: round notAfter down so the recorded expiry is exact.
        let now_s = u64::try_from(now_us.max(0) / 1_000_000).unwrap_or(0);
        let not_after_s = now_s.saturating_add(self.agent_lifetime.as_secs());
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        // Backdated for clock skew, by at most a tenth of the lifetime: agents renew two thirds
        // into the certificate's span, and a short lifetime must not make that "already due".
        let backdate = CLOCK_SKEW.min(self.agent_lifetime / 10).as_secs();
        csr.params.not_before = epoch + Duration::from_secs(now_s.saturating_sub(backdate));
        csr.params.not_after = epoch + Duration::from_secs(not_after_s);
        let cert = csr.signed_by(&self.issuer)?;
        Ok(IssuedCert {
            pem: cert.pem(),
            fingerprint: fingerprint(cert.der()),
            not_after_us: i64::try_from(not_after_s).unwrap_or(i64::MAX / 1_000_000) * 1_000_000,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reloads_and_signs() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path()).unwrap();
        let again = CertificateAuthority::load_or_create(dir.path()).unwrap();
        assert_eq!(ca.cert_pem(), again.cert_pem());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let agent_key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(vec!["ignored".to_string()])
            .unwrap()
            .serialize_request(&agent_key)
            .unwrap();
        let now_us = 1_700_000_000_123_456;
        let issued = again.sign_agent_csr(&csr.pem().unwrap(), "mi-0123456789abcdef0", now_us).unwrap();
        assert_eq!(issued.fingerprint.len(), 64);
        assert_eq!(issued.not_after_us, 1_700_000_000_000_000 + 30 * 86_400 * 1_000_000);
        assert!(issued.pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(again.server_identity(&["localhost".into(), "127.0.0.1".into()]).is_ok());
    }

    #[test]
    fn garbage_csr_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path()).unwrap();
        assert!(matches!(ca.sign_agent_csr("not a csr", "mi-0123456789abcdef0", 0), Err(CaError::BadCsr(_))));
    }
}
