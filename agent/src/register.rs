//! `airlock-agent register`: make a key pair and CSR locally, trade the CSR and the activation
//! for a certificate (`RegisterManagedInstance`), and save the result in the data directory.

use std::path::PathBuf;
use std::time::Duration;

use airlock_proto::endpoint::Endpoint;
use airlock_proto::quic;
use airlock_proto::InstanceId;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use serde::{Deserialize, Serialize};

use crate::endpoint;
use crate::error::Error;
use crate::host;
use crate::state::{self, AgentState, Registration, StateDir};

/// An answer is a few KiB of PEM; anything far larger is not from a broker.
const MAX_RESPONSE_LEN: usize = 1 << 20;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What `register` needs, straight from the command line.
#[derive(Debug, Clone)]
pub struct RegisterOptions {
    /// Where the registration is saved.
    pub data_dir: PathBuf,
    /// The broker's HTTP API URL.
    pub endpoint: String,
    /// The activation's secret code.
    pub activation_code: String,
    /// The activation's id.
    pub activation_id: String,
    /// PEM file with the broker CA; required for https endpoints.
    pub ca_file: Option<PathBuf>,
    /// Replace an existing registration.
    pub force: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RegisterRequest<'a> {
    activation_id: &'a str,
    activation_code: &'a str,
    csr: &'a str,
    fingerprint: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RegisterResponse {
    instance_id: String,
    certificate: String,
    #[serde(default)]
    ca_certificate: Option<String>,
}

#[derive(Deserialize)]
struct ApiErrorBody {
    #[serde(rename = "__type")]
    code: Option<String>,
    #[serde(alias = "Message")]
    message: Option<String>,
}

/// Registers this host with the broker and saves the registration; returns the instance id.
pub async fn register(opts: &RegisterOptions) -> Result<InstanceId, Error> {
    let url = endpoint::parse(&opts.endpoint)?;
    endpoint::require_ca(&url, opts.ca_file.is_some())?;
    let pinned_ca = match &opts.ca_file {
        Some(path) => {
            let pem = String::from_utf8(state::read_capped(path)?)
                .map_err(|_| Error::Config(format!("{}: not a PEM file", path.display())))?;
            quic::pinned_roots(pem.as_bytes())?;
            Some(pem)
        }
        None => None,
    };
    let dir = StateDir::new(&opts.data_dir);
    if let Some(existing) = dir.existing()? {
        if !opts.force {
            return Err(Error::AlreadyRegistered {
                instance_id: existing.instance_id.to_string(),
                dir: opts.data_dir.clone(),
            });
        }
        tracing::warn!(old = %existing.instance_id, "replacing the existing registration");
    }

    let hostname = host::hostname();
    let (key, csr) = make_csr(&hostname)?;
    let request = RegisterRequest {
        activation_id: &opts.activation_id,
        activation_code: &opts.activation_code,
        csr: &csr,
        fingerprint: &hostname,
    };
    let client = http_client(&url, pinned_ca.as_deref())?;
    let response = call(&client, &url, "RegisterManagedInstance", &request).await?;
    let reply: RegisterResponse = serde_json::from_slice(&response)
        .map_err(|e| Error::Http(format!("malformed RegisterManagedInstance answer: {e}")))?;

    let instance_id: InstanceId =
        reply.instance_id.parse().map_err(|e| Error::Http(format!("broker answered with an {e}")))?;
    let ca_pem = match pinned_ca {
        Some(pem) => pem,
        None => reply.ca_certificate.filter(|pem| !pem.trim().is_empty()).ok_or_else(|| {
            Error::Http("the answer has no CaCertificate and no --ca-file was given".into())
        })?,
    };
    let key_pem = key.serialize_pem();
    // Build the link's TLS config now: a certificate that does not match our key, or a CA that
    // does not parse, fails here once instead of at every reconnect.
    let chain = quic::certs_from_pem(reply.certificate.as_bytes(), "the broker's Certificate")?;
    quic::client_config(
        ca_pem.as_bytes(),
        Some((chain, quic::key_from_pem(key_pem.as_bytes(), "agent key")?)),
    )?;

    dir.save(&Registration {
        state: AgentState { instance_id: instance_id.clone(), endpoint: url.url().to_string() },
        key_pem,
        cert_pem: reply.certificate,
        ca_pem,
    })?;
    Ok(instance_id)
}

/// A fresh ECDSA P-256 key and a PEM CSR for it with `common_name` as subject.
pub(crate) fn make_csr(common_name: &str) -> Result<(KeyPair, String), Error> {
    let crypto = |e: rcgen::Error| Error::Crypto(e.to_string());
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(crypto)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, if common_name.is_empty() { "airlock-agent" } else { common_name });
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key).map_err(crypto)?.pem().map_err(crypto)?;
    Ok((key, csr))
}

/// An HTTP client that trusts only `ca_pem` and goes straight to the broker.
fn http_client(url: &Endpoint, ca_pem: Option<&str>) -> Result<reqwest::Client, Error> {
    // Plain http gets an empty root store: reqwest still wants a TLS config, and must never
    // fall back to the process-wide provider or system roots.
    let roots = match ca_pem {
        Some(pem) => quic::pinned_roots(pem.as_bytes())?,
        None => rustls::RootCertStore::empty(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(quic::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.into()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        // The QUIC link cannot use an HTTP proxy either, so the broker must be reachable directly.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .https_only(url.is_https())
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .map_err(|e| Error::Http(error_chain(&e)))
}

/// POSTs one awsJson1.1 operation and returns the success body, or the API error.
async fn call(
    client: &reqwest::Client,
    url: &Endpoint,
    operation: &str,
    body: &impl Serialize,
) -> Result<Vec<u8>, Error> {
    let body = serde_json::to_vec(body).map_err(|e| Error::Http(e.to_string()))?;
    let response = client
        .post(url.url().clone())
        .header(reqwest::header::CONTENT_TYPE, "application/x-amz-json-1.1")
        .header("X-Amz-Target", format!("AmazonSSM.{operation}"))
        .body(body)
        .send()
        .await
        .map_err(|e| Error::Http(error_chain(&e)))?;
    let status = response.status();
    let body = read_body(response).await?;
    if status.is_success() {
        return Ok(body);
    }
    match serde_json::from_slice::<ApiErrorBody>(&body) {
        Ok(ApiErrorBody { code: Some(code), message }) => Err(Error::Api {
            // AWS sometimes qualifies the code (`com.amazonaws.ssm#InvalidActivation`).
            code: code.rsplit('#').next().unwrap_or(&code).to_owned(),
            message: message.unwrap_or_default(),
        }),
        _ => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            Err(Error::Http(format!("HTTP {status}: {text}")))
        }
    }
}

/// The response body, refusing more than [`MAX_RESPONSE_LEN`] bytes.
async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| Error::Http(error_chain(&e)))? {
        if body.len() + chunk.len() > MAX_RESPONSE_LEN {
            return Err(Error::Http(format!("response larger than {MAX_RESPONSE_LEN} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error with its causes, since reqwest's top-level message rarely says what went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_is_pem_and_parses() {
        use rcgen::PublicKeyData;
        let (key, csr) = make_csr("host-1").unwrap();
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
        assert_eq!(parsed.public_key.der_bytes(), key.der_bytes());
        assert!(key.serialize_pem().contains("PRIVATE KEY"));
    }

    #[tokio::test]
    async fn https_without_ca_is_refused_before_any_request() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = RegisterOptions {
            data_dir: tmp.path().join("d"),
            endpoint: "https://broker.invalid:8443".into(),
            activation_code: "c".into(),
            activation_id: "i".into(),
            ca_file: None,
            force: false,
        };
        let err = register(&opts).await.unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
        assert!(!tmp.path().join("d").exists());
    }

    #[tokio::test]
    async fn http_to_a_remote_host_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = RegisterOptions {
            data_dir: tmp.path().to_owned(),
            endpoint: "http://broker.invalid".into(),
            activation_code: "c".into(),
            activation_id: "i".into(),
            ca_file: None,
            force: false,
        };
        assert!(register(&opts).await.unwrap_err().to_string().contains("loopback"));
    }
}
