//! Where the broker is and how to trust it: the endpoint URL rules and the resolved settings.

use std::path::PathBuf;

pub use airlock_proto::endpoint::Endpoint;
use airlock_proto::endpoint::EndpointError;
use url::Url;

use crate::credentials::{self, Credentials};
use crate::error::Error;

/// Parses and checks an endpoint URL: `https://` anywhere, `http://` only to loopback.
pub fn parse_endpoint(text: &str) -> Result<Endpoint, Error> {
    Endpoint::parse(text.trim()).map_err(|e| Error::Endpoint { url: text.to_owned(), why: endpoint_why(&e) })
}

/// The CLI's wording of an endpoint refusal.
fn endpoint_why(e: &EndpointError) -> String {
    match e {
        EndpointError::Url(e) => e.to_string(),
        EndpointError::Scheme(_) => "the scheme must be https (or http for a loopback broker)".to_owned(),
        EndpointError::NoHost => "it has no host".to_owned(),
        EndpointError::NotLoopback => "plain http is allowed only to a loopback host (127.0.0.0/8, ::1, localhost); use https with --ca-file".to_owned(),
        EndpointError::Credentials => "credentials in the URL are not supported".to_owned(),
        EndpointError::MissingCa => e.to_string(),
    }
}

/// Where a loopback broker serves its CA certificate.
pub fn ca_url(endpoint: &Endpoint) -> Result<Url, Error> {
    endpoint
        .url()
        .join("/ca.pem")
        .map_err(|e| Error::Endpoint { url: endpoint.url().to_string(), why: e.to_string() })
}

/// The global options as given on the command line or in the environment.
#[derive(Debug, Clone, Default)]
pub struct ConfigInput {
    /// `--endpoint-url` / `AIRLOCK_ENDPOINT`.
    pub endpoint_url: Option<String>,
    /// `--ca-file` / `AIRLOCK_CA_FILE`.
    pub ca_file: Option<PathBuf>,
    /// `--region`.
    pub region: Option<String>,
    /// `--profile`.
    pub profile: Option<String>,
}

/// Everything needed to talk to the broker.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The broker API endpoint.
    pub endpoint: Endpoint,
    /// The broker CA in PEM, when a CA file was given.
    pub ca_pem: Option<Vec<u8>>,
    /// The SigV4 signing region.
    pub region: String,
    /// The signing credentials.
    pub credentials: Credentials,
}

impl Settings {
    /// Resolves the settings; reads the CA file and the shared AWS files (blocking, so call
    /// this before starting the async runtime).
    pub fn resolve(input: &ConfigInput) -> Result<Self, Error> {
        let url = input.endpoint_url.as_deref().filter(|u| !u.trim().is_empty()).ok_or_else(|| {
            Error::Usage("no endpoint: pass --endpoint-url URL or set AIRLOCK_ENDPOINT".to_owned())
        })?;
        let endpoint = parse_endpoint(url)?;
        let ca_pem = match input.ca_file.as_ref().filter(|p| !p.as_os_str().is_empty()) {
            Some(path) => Some(read_ca(path)?),
            None => None,
        };
        endpoint.require_ca(ca_pem.is_some()).map_err(|_| Error::MissingCa(endpoint.url().to_string()))?;
        let resolved = credentials::resolve(input.profile.as_deref(), input.region.as_deref())?;
        Ok(Settings { endpoint, ca_pem, region: resolved.region, credentials: resolved.credentials })
    }
}

/// Reads and checks a PEM CA file.
pub fn read_ca(path: &PathBuf) -> Result<Vec<u8>, Error> {
    let pem = std::fs::read(path).map_err(|source| Error::CaFile { path: path.clone(), source })?;
    airlock_proto::quic::certs_from_pem(&pem, &path.display().to_string())?;
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_with_default_port() {
        let e = parse_endpoint("https://broker.example.com").unwrap();
        assert_eq!(
            (e.host(), e.port(), e.is_https(), e.is_loopback()),
            ("broker.example.com", 443, true, false)
        );
        assert_eq!(e.url().as_str(), "https://broker.example.com/");
        let e = parse_endpoint("https://10.0.0.5:8443/").unwrap();
        assert_eq!((e.host(), e.port()), ("10.0.0.5", 8443));
    }

    #[test]
    fn http_only_to_loopback() {
        let e = parse_endpoint("http://127.0.0.1").unwrap();
        assert_eq!((e.port(), e.is_https(), e.is_loopback()), (80, false, true));
        assert_eq!(parse_endpoint("http://127.3.2.1:9000").unwrap().port(), 9000);
        let e = parse_endpoint("http://[::1]:8080").unwrap();
        assert_eq!((e.host(), e.port()), ("::1", 8080), "no brackets in the server name");
        assert!(parse_endpoint("http://LOCALHOST:1").unwrap().is_loopback());
        for bad in ["http://10.0.0.1:80", "http://example.com", "http://[::2]:80", "http://128.0.0.1"] {
            let err = parse_endpoint(bad).unwrap_err();
            assert!(err.to_string().contains("loopback"), "{bad}: {err}");
            assert_eq!(err.exit_code(), 2);
        }
    }

    #[test]
    fn other_schemes_and_garbage_refused() {
        for bad in ["ftp://127.0.0.1", "127.0.0.1:8080", "", "https://", "https://u:p@host/"] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoint_messages() {
        let cases = [
            ("ftp://127.0.0.1", "the scheme must be https (or http for a loopback broker)"),
            ("127.0.0.1:8080", "relative URL without a base"),
            (
                "http://10.0.0.1",
                "plain http is allowed only to a loopback host (127.0.0.0/8, ::1, localhost); use https with --ca-file",
            ),
            // Credentials are named first when a URL has several faults.
            ("http://u:p@10.0.0.1", "credentials in the URL are not supported"),
            ("https://u:p@host/", "credentials in the URL are not supported"),
        ];
        for (text, why) in cases {
            let err = parse_endpoint(text).unwrap_err();
            assert_eq!(err.to_string(), format!("invalid endpoint {text:?}: {why}"));
            assert_eq!(err.exit_code(), 2);
        }
        let e = parse_endpoint(" http://localhost.:8080/ ").unwrap();
        assert_eq!((e.host(), e.port(), e.is_loopback()), ("localhost", 8080, true));
    }

    #[test]
    fn ca_url_is_at_the_root() {
        let e = parse_endpoint("http://127.0.0.1:4000/api/").unwrap();
        assert_eq!(ca_url(&e).unwrap().as_str(), "http://127.0.0.1:4000/ca.pem");
    }

    #[test]
    fn https_without_ca_is_refused_early() {
        let input = ConfigInput { endpoint_url: Some("https://broker:443".into()), ..Default::default() };
        let err = Settings::resolve(&input).unwrap_err();
        assert!(matches!(err, Error::MissingCa(_)));
        assert!(err.to_string().contains("--ca-file"), "{err}");
        assert_eq!(err.exit_code(), 2);
        let err = Settings::resolve(&ConfigInput::default()).unwrap_err();
        assert!(err.to_string().contains("AIRLOCK_ENDPOINT"), "{err}");
    }

    #[test]
    fn unreadable_or_empty_ca_file() {
        let missing = PathBuf::from("/nonexistent/airlock/ca.pem");
        assert!(matches!(read_ca(&missing), Err(Error::CaFile { .. })));
        let empty = std::env::temp_dir().join(format!("airlock-cli-empty-ca-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = read_ca(&empty).unwrap_err();
        let _ = std::fs::remove_file(&empty);
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }
}
