//! Signed awsJson1_1 calls to the broker's SSM-style API.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::config::{self, Endpoint};
use crate::credentials::Credentials;
use crate::error::{chain, Error};
use crate::signing;

/// Deadline of every API request, connection set-up included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body we accept; SSM pages are far smaller.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// Largest CA certificate bundle we accept from `/ca.pem`.
pub const MAX_CA_BYTES: usize = 256 << 10;

/// What kind of failure an [`ApiError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiErrorKind {
    /// The service answered with an error (`{"__type", "message"}`).
    Service,
    /// The endpoint could not be reached, or the request timed out.
    Connection,
    /// The endpoint answered with something that is not a valid response.
    Response,
    /// The request could not be built (serialized or signed); nothing was sent.
    Request,
}

/// A failed API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Service error, connection failure, bad response, or unbuildable request.
    pub kind: ApiErrorKind,
    /// The operation called, e.g. `StartSession`.
    pub operation: String,
    /// The error code (`__type` without its namespace) for service errors.
    pub code: String,
    /// The service's `message`, or what went wrong locally.
    pub message: String,
    /// The HTTP status, when a response arrived.
    pub status: Option<u16>,
}

impl ApiError {
    /// The process exit status for this error: 254 for service errors, else 255.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            ApiErrorKind::Service => crate::EXIT_SERVICE_ERROR,
            _ => crate::EXIT_FAILURE,
        }
    }

    fn connection(operation: &str, url: &str, detail: String) -> Self {
        ApiError {
            kind: ApiErrorKind::Connection,
            operation: operation.to_owned(),
            code: "EndpointConnectionError".to_owned(),
            message: format!("Could not connect to the endpoint URL: \"{url}\": {detail}"),
            status: None,
        }
    }

    fn request(operation: &str, detail: String) -> Self {
        ApiError {
            kind: ApiErrorKind::Request,
            operation: operation.to_owned(),
            code: "RequestError".to_owned(),
            message: format!("Cannot build the {operation} request: {detail}"),
            status: None,
        }
    }

    pub(crate) fn response(operation: &str, status: Option<u16>, detail: String) -> Self {
        ApiError {
            kind: ApiErrorKind::Response,
            operation: operation.to_owned(),
            code: "InvalidResponse".to_owned(),
            message: format!("Invalid response to {operation}: {detail}"),
            status,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ApiErrorKind::Service => write!(
                f,
                "An error occurred ({}) when calling the {} operation: {}",
                self.code, self.operation, self.message
            ),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ApiError {}

/// The error code in an `__type` value: anything before the last `#` and after a `:` dropped
/// (as botocore does), so `com.amazonaws.ssm#TargetNotConnected` becomes `TargetNotConnected`.
pub fn error_code(type_field: &str) -> &str {
    let tail = type_field.rsplit('#').next().unwrap_or(type_field);
    tail.split(':').next().unwrap_or(tail).trim()
}

/// Builds the [`ApiError`] for a non-200 response from its status and body.
pub fn service_error(operation: &str, status: u16, body: &[u8]) -> ApiError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| parsed.as_ref().and_then(|v| v.get(name)).and_then(Value::as_str);
    let code = field("__type").map(error_code).filter(|c| !c.is_empty());
    let message = field("message").or_else(|| field("Message"));
    let (code, message) = match code {
        Some(code) => (code.to_owned(), message.unwrap_or_default().to_owned()),
        // Like botocore: without a code, the status stands in for it.
        None => (
            status.to_string(),
            message.map(str::to_owned).unwrap_or_else(|| {
                http::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("Unknown")
                    .to_owned()
            }),
        ),
    };
    ApiError {
        kind: ApiErrorKind::Service,
        operation: operation.to_owned(),
        code,
        message,
        status: Some(status),
    }
}

/// The API families the broker serves on one endpoint, told apart by `X-Amz-Target` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Sessions and instances: `AmazonSSM.<op>`.
    Ssm,
    /// Users, roles, keys, policies and the audit log: `AirlockIAM.<op>`.
    Iam,
    /// Temporary credentials: `AirlockSTS.<op>`.
    Sts,
}

impl Service {
    /// The `X-Amz-Target` prefix, dot included.
    pub fn prefix(self) -> &'static str {
        match self {
            Service::Ssm => signing::TARGET_PREFIX,
            Service::Iam => "AirlockIAM.",
            Service::Sts => "AirlockSTS.",
        }
    }

    /// The full `X-Amz-Target` of operation `op`, e.g. `AirlockIAM.CreateUser`.
    pub fn target(self, op: &str) -> String {
        format!("{}{op}", self.prefix())
    }
}

/// The operation named by an `X-Amz-Target` (what follows its last `.`): error messages name
/// `CreateUser`, not `AirlockIAM.CreateUser`, as the AWS CLI does.
pub fn operation_name(target: &str) -> &str {
    target.rsplit('.').next().unwrap_or(target)
}

/// A successful call's body and the address that answered it.
#[derive(Debug, Clone)]
pub struct Response {
    /// The parsed JSON body (`{}` for an empty one).
    pub body: Value,
    /// The broker's address as connected (absent when a proxy was in the way).
    pub peer: Option<SocketAddr>,
}

/// A client of the broker's API.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: Endpoint,
    region: String,
    credentials: Credentials,
}

impl Client {
    /// A client for `endpoint`; `https` endpoints trust only `ca_pem` (required for them).
    pub fn new(
        endpoint: Endpoint,
        ca_pem: Option<&[u8]>,
        region: impl Into<String>,
        credentials: Credentials,
    ) -> Result<Self, Error> {
        airlock_proto::quic::install_crypto_provider();
        let tls = tls_config(&endpoint, ca_pem)?;
        let mut builder = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .http1_only()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            // A redirect would replay a signed request somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("airlock-cli/", env!("CARGO_PKG_VERSION")));
        if endpoint.is_loopback() {
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| Error::Connect(format!("cannot build the HTTP client: {}", chain(&e))))?;
        Ok(Client { http, endpoint, region: region.into(), credentials })
    }

    /// A client from an endpoint URL string (see [`config::parse_endpoint`]).
    pub fn from_url(
        url: &str,
        ca_pem: Option<&[u8]>,
        region: impl Into<String>,
        credentials: Credentials,
    ) -> Result<Self, Error> {
        Client::new(config::parse_endpoint(url)?, ca_pem, region, credentials)
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The signing region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Calls `AmazonSSM.<op>` with `body` and returns the response body.
    pub async fn call(&self, op: &str, body: &Value) -> Result<Value, ApiError> {
        Ok(self.call_with_peer(op, body).await?.body)
    }

    /// Calls the operation with the full `X-Amz-Target` `target` (e.g. `AirlockIAM.CreateUser`,
    /// see [`Service::target`]) and returns the response body.
    pub async fn call_target(&self, target: &str, body: &Value) -> Result<Value, ApiError> {
        Ok(self.call_target_with_peer(target, body).await?.body)
    }

    /// Like [`Client::call`], also returning the address that answered.
    pub async fn call_with_peer(&self, op: &str, body: &Value) -> Result<Response, ApiError> {
        self.call_target_with_peer(&Service::Ssm.target(op), body).await
    }

    /// Like [`Client::call_target`], also returning the address that answered.
    pub async fn call_target_with_peer(&self, target: &str, body: &Value) -> Result<Response, ApiError> {
        let op = operation_name(target);
        let url = self.endpoint.url();
        let bytes = serde_json::to_vec(body).map_err(|e| ApiError::request(op, e.to_string()))?;
        let headers = signing::signed_headers_for_target(
            url,
            target,
            &bytes,
            &self.region,
            &self.credentials,
            SystemTime::now(),
        )
        .map_err(|e| ApiError::request(op, e.to_string()))?;
        let mut request = self.http.post(url.clone()).body(bytes);
        for (name, value) in &headers {
            request = request.header(name.as_str(), value.as_str());
        }
        tracing::debug!(op, %url, "calling");
        let response =
            request.send().await.map_err(|e| ApiError::connection(op, url.as_str(), describe(&e)))?;
        let status = response.status().as_u16();
        let peer = response.remote_addr();
        let body = read_limited(response, MAX_RESPONSE_BYTES)
            .await
            .map_err(|detail| ApiError::connection(op, url.as_str(), detail))?;
        tracing::debug!(op, status, len = body.len(), "response");
        if status != 200 {
            return Err(service_error(op, status, &body));
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Response { body: Value::Object(Default::default()), peer });
        }
        let body: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::response(op, Some(status), format!("body is not JSON: {e}")))?;
        Ok(Response { body, peer })
    }

    /// Fetches the broker's CA certificate from `GET /ca.pem` (loopback endpoints only: over
    /// plain http anywhere else it could be swapped in transit).
    pub async fn fetch_ca(&self) -> Result<Vec<u8>, Error> {
        if !self.endpoint.is_loopback() {
            return Err(Error::MissingCa(self.endpoint.url().to_string()));
        }
        let url = config::ca_url(&self.endpoint)?;
        let fail =
            |detail: String| Error::Connect(format!("cannot fetch the broker CA from {url}: {detail}"));
        let response = self.http.get(url.clone()).send().await.map_err(|e| fail(describe(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(fail(format!("HTTP {status}; pass --ca-file instead")));
        }
        let pem = read_limited(response, MAX_CA_BYTES).await.map_err(fail)?;
        airlock_proto::quic::certs_from_pem(&pem, url.as_str())?;
        Ok(pem)
    }
}

/// The rustls config for the API: pinned to the broker CA for https; empty roots for
/// loopback http, where no TLS happens and nothing should be trusted by accident.
fn tls_config(endpoint: &Endpoint, ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, Error> {
    let roots = match (endpoint.is_https(), ca_pem) {
        (true, None) => return Err(Error::MissingCa(endpoint.url().to_string())),
        (true, Some(pem)) => airlock_proto::quic::pinned_roots(pem)?,
        (false, _) => rustls::RootCertStore::empty(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(airlock_proto::quic::provider())
        .with_safe_default_protocol_versions()
        .map_err(airlock_proto::quic::TlsError::from)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn describe(err: &reqwest::Error) -> String {
    use std::error::Error as _;
    if err.is_timeout() {
        return format!("timed out after {} s", REQUEST_TIMEOUT.as_secs());
    }
    // The top level only repeats the URL ("error sending request for url (…)"); the cause
    // is in the sources.
    match err.source() {
        Some(source) => chain(source),
        None => err.to_string(),
    }
}

/// Reads a body chunk by chunk, refusing to buffer more than `limit` bytes.
async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
        if out.len() + chunk.len() > limit {
            return Err(format!("response larger than {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_lose_their_namespace() {
        assert_eq!(error_code("com.amazonaws.ssm#TargetNotConnected"), "TargetNotConnected");
        assert_eq!(error_code("TargetNotConnected"), "TargetNotConnected");
        assert_eq!(error_code("a#b#InvalidDocument"), "InvalidDocument");
        assert_eq!(error_code("ValidationException:http://internal.amazon.com/"), "ValidationException");
    }

    #[test]
    fn service_error_formats_like_the_aws_cli() {
        let body =
            br#"{"__type":"com.amazonaws.ssm#TargetNotConnected","message":"mi-0123 is not connected"}"#;
        let err = service_error("StartSession", 400, body);
        assert_eq!(err.code, "TargetNotConnected");
        assert_eq!(
            err.to_string(),
            "An error occurred (TargetNotConnected) when calling the StartSession operation: mi-0123 is not connected"
        );
        assert_eq!(err.exit_code(), 254);
        assert_eq!(err.status, Some(400));
    }

    #[test]
    fn service_error_fallbacks() {
        let err =
            service_error("DescribeSessions", 400, br#"{"__type":"InvalidFilterKey","Message":"capital"}"#);
        assert_eq!((err.code.as_str(), err.message.as_str()), ("InvalidFilterKey", "capital"));
        let err = service_error("DescribeSessions", 500, b"<html>oops</html>");
        assert_eq!(
            err.to_string(),
            "An error occurred (500) when calling the DescribeSessions operation: Internal Server Error"
        );
        let err = service_error("X", 403, br#"{"message":"no type"}"#);
        assert_eq!((err.code.as_str(), err.message.as_str()), ("403", "no type"));
    }

    #[test]
    fn targets_carry_the_service_prefix() {
        assert_eq!(Service::Ssm.target("StartSession"), "AmazonSSM.StartSession");
        assert_eq!(Service::Iam.target("CreateUser"), "AirlockIAM.CreateUser");
        assert_eq!(Service::Sts.target("AssumeRole"), "AirlockSTS.AssumeRole");
        assert_eq!(operation_name("AirlockIAM.CreateUser"), "CreateUser");
        assert_eq!(operation_name("AmazonSSM.StartSession"), "StartSession");
        assert_eq!(operation_name("Bare"), "Bare");
    }

    #[test]
    fn connection_errors_exit_255() {
        let err = ApiError::connection("StartSession", "http://127.0.0.1:1/", "refused".into());
        assert_eq!(err.exit_code(), 255);
        assert_eq!(
            err.to_string(),
            "Could not connect to the endpoint URL: \"http://127.0.0.1:1/\": refused"
        );
    }

    fn creds() -> Credentials {
        Credentials::new("AKID", "secret", None)
    }

    #[test]
    fn https_client_needs_a_ca() {
        let err = Client::from_url("https://broker.example", None, "us-east-1", creds()).unwrap_err();
        assert!(matches!(err, Error::MissingCa(_)), "{err}");
        let err =
            Client::from_url("https://broker.example", Some(b"junk"), "us-east-1", creds()).unwrap_err();
        assert!(matches!(err, Error::Tls(_)), "{err}");
        assert!(Client::from_url("http://10.1.2.3", None, "us-east-1", creds()).is_err());
        assert!(Client::from_url("http://127.0.0.1:9", None, "us-east-1", creds()).is_ok());
    }

    #[test]
    fn client_and_calls_are_shareable() {
        fn send_sync<T: Send + Sync + Clone>(_: &T) {}
        fn send<T: Send>(_: T) {}
        let client = Client::from_url("http://127.0.0.1:9", None, "us-east-1", creds()).unwrap();
        send_sync(&client);
        let body = serde_json::json!({});
        send(client.call("DescribeSessions", &body));
        send(crate::start::start_session(&client, None, &crate::start::StartSessionRequest::default()));
    }

    #[tokio::test]
    async fn unreachable_endpoint_is_a_connection_error() {
        // Bind then drop a listener so the port is very likely closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let client =
            Client::from_url(&format!("http://127.0.0.1:{port}"), None, "us-east-1", creds()).unwrap();
        let err = client.call("DescribeSessions", &serde_json::json!({"State": "Active"})).await.unwrap_err();
        assert_eq!(err.kind, ApiErrorKind::Connection);
        assert_eq!(err.exit_code(), 255);
        assert!(err.to_string().starts_with("Could not connect to the endpoint URL"), "{err}");
    }

    #[tokio::test]
    async fn https_trusts_only_the_given_ca() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let ca = crate::testutil::test_ca(&["localhost"], b"http/1.1");
        let other = crate::testutil::test_ca(&["localhost"], b"http/1.1");
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(ca.server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(sock).await else { continue };
                let mut buf = vec![0u8; 8192];
                let mut req = Vec::new();
                while !req.ends_with(b"}") {
                    let n = tls.read(&mut buf).await.unwrap();
                    req.extend_from_slice(&buf[..n]);
                }
                let body = r#"{"Target":"mi-1","Status":"connected"}"#;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                tls.write_all(reply.as_bytes()).await.unwrap();
                tls.shutdown().await.unwrap();
            }
        });
        let url = format!("https://localhost:{port}");
        let good = Client::from_url(&url, Some(ca.ca_pem.as_bytes()), "us-east-1", creds()).unwrap();
        let got = good.call("GetConnectionStatus", &serde_json::json!({"Target": "mi-1"})).await.unwrap();
        assert_eq!(got["Status"], "connected");
        let bad = Client::from_url(&url, Some(other.ca_pem.as_bytes()), "us-east-1", creds()).unwrap();
        let err = bad.call("GetConnectionStatus", &serde_json::json!({"Target": "mi-1"})).await.unwrap_err();
        assert_eq!(err.kind, ApiErrorKind::Connection, "{err}");
        assert!(err.message.to_ascii_lowercase().contains("certificate"), "{err}");
    }

    #[tokio::test]
    async fn round_trip_against_a_tiny_server() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            let ok = r#"{"SessionId":"alice-1"}"#;
            let bad = r#"{"__type":"com.amazonaws.ssm#InvalidDocument","message":"no"}"#;
            let missing = r#"{"__type":"NoSuchEntity","message":"The user with name bob cannot be found."}"#;
            let replies = [
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{ok}", ok.len()),
                format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{bad}",
                    bad.len()
                ),
                format!(
                    "HTTP/1.1 404 Not Found\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{missing}",
                    missing.len()
                ),
            ];
            for reply in replies {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 8192];
                let mut req = Vec::new();
                // Read until the whole body (ends with `}`) is in.
                while !req.ends_with(b"}") {
                    let n = sock.read(&mut buf).await.unwrap();
                    assert!(n > 0);
                    req.extend_from_slice(&buf[..n]);
                }
                seen.push(String::from_utf8(req).unwrap());
                sock.write_all(reply.as_bytes()).await.unwrap();
                sock.shutdown().await.unwrap();
            }
            seen
        });
        let client = Client::from_url(&format!("http://{addr}"), None, "us-east-1", creds()).unwrap();
        let ok = client.call("TerminateSession", &serde_json::json!({"SessionId": "alice-1"})).await.unwrap();
        assert_eq!(ok, serde_json::json!({"SessionId": "alice-1"}));
        let err = client.call("StartSession", &serde_json::json!({"Target": "mi-1"})).await.unwrap_err();
        assert_eq!(err.kind, ApiErrorKind::Service);
        assert_eq!(err.code, "InvalidDocument");
        let target = Service::Iam.target("DeleteUser");
        let err = client.call_target(&target, &serde_json::json!({"UserName": "bob"})).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "An error occurred (NoSuchEntity) when calling the DeleteUser operation: \
             The user with name bob cannot be found."
        );
        assert_eq!(err.exit_code(), 254);
        let seen = server.await.unwrap();
        let third = seen[2].to_ascii_lowercase();
        assert!(third.contains("x-amz-target: airlockiam.deleteuser\r\n"), "{third}");
        assert!(third.contains("/ssm/aws4_request"), "IAM calls are signed for ssm: {third}");
        let first = seen[0].to_ascii_lowercase();
        assert!(first.starts_with("post / http/1.1\r\n"), "{first}");
        assert!(first.contains("x-amz-target: amazonssm.terminatesession\r\n"), "{first}");
        assert!(first.contains("content-type: application/x-amz-json-1.1\r\n"), "{first}");
        assert!(first.contains("authorization: aws4-hmac-sha256 credential=akid/"), "{first}");
        assert!(first.ends_with("{\"sessionid\":\"alice-1\"}"), "{first}");
    }
}
