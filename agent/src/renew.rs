//! Certificate renewal: the agent asks for a new certificate over its authenticated link
//! before the current one expires (at two thirds of its lifetime, or at once if that point
//! has passed), with a key pair made on the host.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airlock_proto::quic;

use crate::error::Error;
use crate::host;
use crate::state::{Registration, StateDir};

/// After a refused or failed renewal, the next try waits this long at most.
const RETRY_CAP: Duration = Duration::from_secs(300);
/// And at least this long, so a broker that refuses every time is not asked in a loop.
const RETRY_FLOOR: Duration = Duration::from_secs(1);

/// When a certificate is valid, in seconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// notBefore.
    pub not_before_s: i64,
    /// notAfter.
    pub not_after_s: i64,
}

impl Validity {
    /// Reads the validity of the first certificate of a PEM file.
    pub fn of_pem(cert_pem: &str) -> Result<Self, Error> {
        let bad =
            |detail: String| Error::Tls(quic::TlsError::Pem { what: "agent certificate".into(), detail });
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
        let validity = cert.validity();
        Ok(Validity {
            not_before_s: validity.not_before.timestamp(),
            not_after_s: validity.not_after.timestamp(),
        })
    }

    /// The moment to renew: two thirds into the lifetime.
    pub fn renew_at_s(&self) -> i64 {
        let lifetime = self.not_after_s.saturating_sub(self.not_before_s).max(0);
        self.not_before_s.saturating_add(lifetime / 3 * 2)
    }

    /// How long from `now_s` until renewal is due (zero if it is).
    pub fn renew_in(&self, now_s: i64) -> Duration {
        Duration::from_secs(u64::try_from(self.renew_at_s().saturating_sub(now_s)).unwrap_or(0))
    }

    /// How long to wait before trying again after a failed renewal at `now_s`: a tenth of
    /// what is left, between one second and five minutes.
    pub fn retry_in(&self, now_s: i64) -> Duration {
        let left = u64::try_from(self.not_after_s.saturating_sub(now_s)).unwrap_or(0);
        Duration::from_secs(left / 10).clamp(RETRY_FLOOR, RETRY_CAP)
    }
}

/// Seconds since the epoch now.
pub fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A renewal in flight: the new private key waits here for its certificate.
pub struct Pending {
    key_pem: String,
}

impl std::fmt::Debug for Pending {
    // The private key must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

/// Starts a renewal: a fresh key pair and a CSR for it; the CSR goes to the broker.
pub fn start() -> Result<(Pending, String), Error> {
    let (key, csr) = crate::register::make_csr(&host::hostname())?;
    Ok((Pending { key_pem: key.serialize_pem() }, csr))
}

/// Finishes a renewal: checks that `cert_pem` is for the pending key and chains to the pinned
/// CA, then saves key and certificate (each atomically, 0600) for the next connect. Returns
/// the updated registration.
pub fn finish(
    dir: &StateDir,
    current: &Registration,
    pending: Pending,
    cert_pem: String,
) -> Result<Registration, Error> {
    let chain = quic::certs_from_pem(cert_pem.as_bytes(), "the renewed certificate")?;
    let key = quic::key_from_pem(pending.key_pem.as_bytes(), "the renewed key")?;
    // Fails if the certificate is not for our key.
    quic::client_config(current.ca_pem.as_bytes(), Some((chain, key)))?;
    Validity::of_pem(&cert_pem)?;
    dir.save_renewal(&pending.key_pem, &cert_pem)?;
    Ok(Registration { key_pem: pending.key_pem, cert_pem, ..current.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_two_thirds() {
        let v = Validity { not_before_s: 1_000, not_after_s: 1_000 + 30 * 86_400 };
        assert_eq!(v.renew_at_s(), 1_000 + 20 * 86_400);
        assert_eq!(v.renew_in(1_000), Duration::from_secs(20 * 86_400));
        assert_eq!(v.renew_in(1_000 + 25 * 86_400), Duration::ZERO);
        assert_eq!(v.retry_in(1_000), RETRY_CAP);
        assert_eq!(v.retry_in(v.not_after_s), RETRY_FLOOR);
        let short = Validity { not_before_s: 0, not_after_s: 10 };
        assert_eq!(short.renew_at_s(), 6);
    }

    #[test]
    fn validity_is_read_from_the_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2030, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 1, 31);
        let cert = params.self_signed(&key).unwrap();
        let v = Validity::of_pem(&cert.pem()).unwrap();
        assert_eq!((v.not_before_s, v.not_after_s), (1_893_456_000, 1_893_456_000 + 30 * 86_400));
        assert!(Validity::of_pem("not a certificate").is_err());
    }
}
