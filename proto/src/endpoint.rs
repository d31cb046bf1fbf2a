//! The broker endpoint URL and the rules for what the agent and the CLI accept as one.
//!
//! `https://host[:port]` anywhere; `http://` only to a loopback host (127.0.0.0/8, `::1`,
//! `localhost`); no credentials in the URL; an https endpoint needs a CA to pin, since
//! neither side trusts the system roots. Callers wrap [`EndpointError`] in their own error
//! type and word it for their users.

use std::net::IpAddr;

use url::{Host, Url};

/// Why an endpoint URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The text is not a URL.
    #[error("{0}")]
    Url(#[from] url::ParseError),
    /// The scheme is neither `https` nor `http`.
    #[error("scheme {0:?} is not http or https")]
    Scheme(String),
    /// The URL carries a user name or password.
    #[error("must not contain credentials")]
    Credentials,
    /// The URL has no host.
    #[error("has no host")]
    NoHost,
    /// Plain http to a host that is not a loopback address or `localhost`.
    #[error("plain http is only allowed to a loopback address (127.0.0.0/8, ::1, localhost); use https")]
    NotLoopback,
    /// An https endpoint without a CA certificate to pin (see [`Endpoint::require_ca`]).
    #[error("https needs the broker's CA certificate")]
    MissingCa,
}

/// A validated broker endpoint: `https://host[:port]`, or `http://` on a loopback host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    url: Url,
    host: String,
    port: u16,
    https: bool,
    loopback: bool,
}

impl Endpoint {
    /// Parses and checks an endpoint URL.
    pub fn parse(text: &str) -> Result<Self, EndpointError> {
        let url = Url::parse(text)?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            other => return Err(EndpointError::Scheme(other.to_owned())),
        };
        // Credentials in the URL would end up in state files and in logs.
        let has_credentials = !url.username().is_empty() || url.password().is_some();
        if has_credentials {
            return Err(EndpointError::Credentials);
        }
        let (host, loopback) = match url.host() {
            Some(Host::Domain(name)) => {
                // `localhost.` is `localhost`: the root dot changes nothing about the host.
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                let loopback = name == "localhost";
                (name, loopback)
            }
            Some(Host::Ipv4(ip)) => (ip.to_string(), IpAddr::V4(ip).is_loopback()),
            Some(Host::Ipv6(ip)) => (ip.to_string(), IpAddr::V6(ip).is_loopback()),
            None => return Err(EndpointError::NoHost),
        };
        if !https && !loopback {
            return Err(EndpointError::NotLoopback);
        }
        let port = url.port_or_known_default().unwrap_or(if https { 443 } else { 80 });
        Ok(Endpoint { url, host, port, https, loopback })
    }

    /// Refuses an https endpoint when there is no CA to pin: system roots are never trusted.
    pub fn require_ca(&self, have_ca: bool) -> Result<(), EndpointError> {
        if self.https && !have_ca {
            return Err(EndpointError::MissingCa);
        }
        Ok(())
    }

    /// The full URL, as given (normalised).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The host without IPv6 brackets: the DNS name to resolve and the TLS server name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port of the HTTP API, which is also the broker's QUIC (UDP) port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the HTTP API is reached over TLS.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// Whether the host is a loopback address or name.
    pub fn is_loopback(&self) -> bool {
        self.loopback
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(text: &str) -> [Result<Endpoint, EndpointError>; 1] {
        [Endpoint::parse(text)]
    }

    #[test]
    fn default_ports() {
        for u in both("https://broker.example.com") {
            let u = u.unwrap();
            assert_eq!((u.host(), u.port(), u.is_https()), ("broker.example.com", 443, true));
        }
        for u in both("http://127.0.0.1") {
            let u = u.unwrap();
            assert_eq!((u.host(), u.port(), u.is_https()), ("127.0.0.1", 80, false));
        }
        for u in both("https://broker:8443/") {
            assert_eq!(u.unwrap().port(), 8443);
        }
    }

    #[test]
    fn https_anywhere_with_default_port() {
        for e in both("https://broker.example.com") {
            let e = e.unwrap();
            assert_eq!(
                (e.host(), e.port(), e.is_https(), e.is_loopback()),
                ("broker.example.com", 443, true, false)
            );
            assert_eq!(e.url().as_str(), "https://broker.example.com/");
        }
        for e in both("https://10.0.0.5:8443/") {
            let e = e.unwrap();
            assert_eq!((e.host(), e.port()), ("10.0.0.5", 8443));
        }
    }

    #[test]
    fn http_only_on_loopback() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.9.9.9",
            "http://[::1]:9000",
            "http://localhost:1",
            "http://LOCALHOST",
        ] {
            for u in both(ok) {
                assert!(u.is_ok(), "{ok}");
            }
        }
        for bad in [
            "http://10.0.0.1",
            "http://broker.example.com",
            "http://[::2]",
            "http://128.0.0.1",
            "http://localhost.evil.com",
            "http://10.0.0.1:80",
            "http://example.com",
            "http://[::2]:80",
        ] {
            for err in both(bad) {
                let err = err.unwrap_err();
                assert_eq!(err, EndpointError::NotLoopback, "{bad}");
                assert!(err.to_string().contains("loopback"), "{bad}: {err}");
            }
        }
    }

    #[test]
    fn http_only_to_loopback() {
        for e in both("http://127.0.0.1") {
            let e = e.unwrap();
            assert_eq!((e.port(), e.is_https(), e.is_loopback()), (80, false, true));
        }
        for e in both("http://127.3.2.1:9000") {
            assert_eq!(e.unwrap().port(), 9000);
        }
        for e in both("http://[::1]:8080") {
            let e = e.unwrap();
            assert_eq!((e.host(), e.port()), ("::1", 8080), "no brackets in the server name");
        }
        for e in both("http://LOCALHOST:1") {
            assert!(e.unwrap().is_loopback());
        }
    }

    #[test]
    fn ipv6_host_has_no_brackets() {
        for u in both("http://[::1]:9000") {
            let u = u.unwrap();
            assert_eq!((u.host(), u.port()), ("::1", 9000));
        }
    }

    #[test]
    fn https_needs_a_ca() {
        let u = Endpoint::parse("https://broker.example.com").unwrap();
        assert!(u.require_ca(true).is_ok());
        assert_eq!(u.require_ca(false), Err(EndpointError::MissingCa));
        let plain = Endpoint::parse("http://127.0.0.1:1").unwrap();
        assert!(plain.require_ca(false).is_ok());
    }

    #[test]
    fn other_schemes_and_credentials_refused() {
        for bad in [
            "ftp://127.0.0.1",
            "not a url",
            "https://user:pw@broker",
            "127.0.0.1:8080",
            "",
            "https://",
            "https://u:p@host/",
        ] {
            for err in both(bad) {
                assert!(err.is_err(), "{bad}");
            }
        }
        for err in both("ftp://127.0.0.1") {
            assert_eq!(err.unwrap_err(), EndpointError::Scheme("ftp".into()));
        }
        for err in both("https://user:pw@broker") {
            assert_eq!(err.unwrap_err(), EndpointError::Credentials);
        }
    }

    #[test]
    fn trailing_dot_and_credentials_first() {
        let e = Endpoint::parse("https://broker.example.com./").unwrap();
        assert_eq!(e.host(), "broker.example.com");
        assert!(Endpoint::parse("http://localhost.:1").unwrap().is_loopback());
        // With several faults, credentials in the URL are named first.
        assert_eq!(Endpoint::parse("http://u:p@10.0.0.1").unwrap_err(), EndpointError::Credentials);
    }
}
