//! The broker endpoint URL and the rules for what the agent accepts as one.

use std::net::IpAddr;

use url::{Host, Url};

use crate::error::Error;

/// A validated broker endpoint: `https://host[:port]`, or `http://` on a loopback host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    url: Url,
    host: String,
    port: u16,
    https: bool,
}

impl BrokerUrl {
    /// Parses and checks an endpoint URL.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let url = Url::parse(text).map_err(|e| Error::Config(format!("endpoint {text:?}: {e}")))?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            other => {
                return Err(Error::Config(format!(
                    "endpoint {text:?}: scheme {other:?} is not http or https"
                )))
            }
        };
        if !url.username().is_empty() || url.password().is_some() {
            // Credentials in the URL would end up in agent.json and in logs.
            return Err(Error::Config(format!("endpoint {text:?}: must not contain credentials")));
        }
        let (host, loopback) = match url.host() {
            Some(Host::Domain(name)) => (name.to_owned(), name.eq_ignore_ascii_case("localhost")),
            Some(Host::Ipv4(ip)) => (ip.to_string(), IpAddr::V4(ip).is_loopback()),
            Some(Host::Ipv6(ip)) => (ip.to_string(), IpAddr::V6(ip).is_loopback()),
            None => return Err(Error::Config(format!("endpoint {text:?}: has no host"))),
        };
        if !https && !loopback {
            return Err(Error::Config(format!(
                "endpoint {text:?}: plain http is only allowed to a loopback address \
                 (127.0.0.0/8, ::1, localhost); use https"
            )));
        }
        let port = url.port_or_known_default().unwrap_or(if https { 443 } else { 80 });
        Ok(BrokerUrl { url, host, port, https })
    }

    /// Refuses an https endpoint when there is no CA to pin: the agent never trusts system roots.
    pub fn require_ca(&self, have_ca: bool) -> Result<(), Error> {
        if self.https && !have_ca {
            return Err(Error::Config(format!(
                "endpoint {} is https: pass --ca-file with the broker's CA certificate",
                self.url
            )));
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports() {
        let u = BrokerUrl::parse("https://broker.example.com").unwrap();
        assert_eq!((u.host(), u.port(), u.is_https()), ("broker.example.com", 443, true));
        let u = BrokerUrl::parse("http://127.0.0.1").unwrap();
        assert_eq!((u.host(), u.port(), u.is_https()), ("127.0.0.1", 80, false));
        let u = BrokerUrl::parse("https://broker:8443/").unwrap();
        assert_eq!(u.port(), 8443);
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
            assert!(BrokerUrl::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1",
            "http://broker.example.com",
            "http://[::2]",
            "http://128.0.0.1",
            "http://localhost.evil.com",
        ] {
            let err = BrokerUrl::parse(bad).unwrap_err();
            assert!(err.to_string().contains("loopback"), "{bad}: {err}");
        }
    }

    #[test]
    fn ipv6_host_has_no_brackets() {
        let u = BrokerUrl::parse("http://[::1]:9000").unwrap();
        assert_eq!((u.host(), u.port()), ("::1", 9000));
    }

    #[test]
    fn https_needs_a_ca() {
        let u = BrokerUrl::parse("https://broker.example.com").unwrap();
        assert!(u.require_ca(true).is_ok());
        assert!(u.require_ca(false).unwrap_err().to_string().contains("--ca-file"));
        let plain = BrokerUrl::parse("http://127.0.0.1:1").unwrap();
        assert!(plain.require_ca(false).is_ok());
    }

    #[test]
    fn other_schemes_and_credentials_refused() {
        assert!(BrokerUrl::parse("ftp://127.0.0.1").is_err());
        assert!(BrokerUrl::parse("not a url").is_err());
        assert!(BrokerUrl::parse("https://user:pw@broker").is_err());
    }
}
