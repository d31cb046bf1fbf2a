//! The broker endpoint URL in the agent's words: the rules live in [`airlock_proto::endpoint`];
//! this module turns their refusals into the agent's configuration errors.

use airlock_proto::endpoint::Endpoint;

use crate::error::Error;

/// Parses and checks an endpoint URL: `https://host[:port]`, or `http://` on a loopback host.
pub fn parse(text: &str) -> Result<Endpoint, Error> {
    Endpoint::parse(text).map_err(|e| Error::Config(format!("endpoint {text:?}: {e}")))
}

/// Refuses an https endpoint when there is no CA to pin: the agent never trusts system roots.
pub fn require_ca(url: &Endpoint, have_ca: bool) -> Result<(), Error> {
    url.require_ca(have_ca).map_err(|_| {
        Error::Config(format!(
            "endpoint {} is https: pass --ca-file with the broker's CA certificate",
            url.url()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        let cases = [
            ("ftp://127.0.0.1", r#"endpoint "ftp://127.0.0.1": scheme "ftp" is not http or https"#),
            ("not a url", r#"endpoint "not a url": relative URL without a base"#),
            ("https://user:pw@broker", r#"endpoint "https://user:pw@broker": must not contain credentials"#),
            (
                "http://10.0.0.1",
                "endpoint \"http://10.0.0.1\": plain http is only allowed to a loopback address \
                 (127.0.0.0/8, ::1, localhost); use https",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{text}: {err:?}");
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn https_needs_a_ca() {
        let u = parse("https://broker.example.com").unwrap();
        assert!(require_ca(&u, true).is_ok());
        let err = require_ca(&u, false).unwrap_err();
        assert!(err.to_string().contains("--ca-file"));
        assert_eq!(
            err.to_string(),
            "endpoint https://broker.example.com/ is https: pass --ca-file with the broker's CA certificate"
        );
        let plain = parse("http://127.0.0.1:1").unwrap();
        assert!(require_ca(&plain, false).is_ok());
    }
}
