//! The SSM-dialect HTTP API: `POST /` with `X-Amz-Target: AmazonSSM.<Operation>` (and
//! `AirlockIAM.`/`AirlockSTS.` for identity), JSON 1.1 bodies, SigV4 on every call but
//! registration, SSM's error shapes, and a policy decision before every operation.

mod activations;
mod documents;
mod documents_builtin;
mod error;
mod iam;
mod instances;
mod recordings;
mod sessions;
mod tags;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::app::App;
use crate::authz::{Dialect, Gate, RequestFacts};
use crate::identity::Caller;
use crate::sigv4;

pub use error::ApiError;

/// The largest request body we read (SSM's largest inputs are far below this).
const MAX_BODY: usize = 256 * 1024;
const JSON_11: &str = "application/x-amz-json-1.1";

/// The API's routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", post(dispatch))
        .route("/ca.pem", get(ca_pem))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

async fn ca_pem(State(app): State<Arc<App>>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/x-pem-file")], app.ca.cert_pem().to_owned())
        .into_response()
}

/// An AWS tag, `{Key, Value}`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct Tag {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "Value", default)]
    pub value: String,
}

/// Checks tag keys and values against AWS's limits.
pub fn check_tags(tags: &[Tag]) -> Result<(), ApiError> {
    if tags.len() > 50 {
        return Err(ApiError::bad("TooManyTagsError", "at most 50 tags"));
    }
    for t in tags {
        if t.key.is_empty() || t.key.chars().count() > 128 || t.value.chars().count() > 256 {
            return Err(ApiError::bad(
                "InvalidParameters",
                format!("tag {:?}: keys are 1 to 128 characters, values at most 256", t.key),
            ));
        }
        if t.key.to_ascii_lowercase().starts_with("aws:") {
            return Err(ApiError::bad(
                "InvalidParameters",
                format!("tag key {:?} uses the reserved prefix aws:", t.key),
            ));
        }
    }
    Ok(())
}

async fn dispatch(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let result = run(&app, &target, peer, &method, &uri, &headers, &body).await;
    let mut response = match result {
        Ok(value) => ([(axum::http::header::CONTENT_TYPE, JSON_11)], value.to_string()).into_response(),
        Err(e) => {
            if e.status.is_server_error() {
                tracing::error!(x_amz_target = %target, error = %e.message, "request failed");
            } else {
                tracing::debug!(x_amz_target = %target, code = e.code, error = %e.message, "request refused");
            }
            e.into_response()
        }
    };
    if let Ok(v) = request_id.parse() {
        response.headers_mut().insert("x-amzn-requestid", v);
    }
    response
}

/// What one request is, before it runs.
struct Call<'a> {
    peer: SocketAddr,
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    body: &'a [u8],
}

async fn run(
    app: &App,
    target: &str,
    peer: SocketAddr,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<serde_json::Value, ApiError> {
    if target.is_empty() {
        return Err(ApiError::bad("UnknownOperationException", "missing X-Amz-Target header"));
    }
    // Registration is authenticated by the activation code, as in SSM.
    if target == "AmazonSSM.RegisterManagedInstance" {
        return activations::register(app, parse(body)?).await;
    }
    let call = Call { peer, method, uri, headers, body };
    let (caller, region) = authenticate(app, &call).await?;
    let secure = app.settings.public_url.starts_with("https://");
    let facts = RequestFacts { source_ip: peer.ip().to_canonical(), secure, region };
    let gate = Gate { app, caller: &caller, facts: &facts };
    if let Some(op) = target.strip_prefix("AirlockIAM.") {
        return iam::dispatch(&gate, op, body).await;
    }
    if let Some(op) = target.strip_prefix("AirlockRecordings.") {
        return recordings::dispatch(&gate, op, body).await;
    }
    if target == "AirlockSTS.AssumeRole" {
        return iam::assume_role(&gate, parse(body)?).await;
    }
    let Some(op) = target.strip_prefix("AmazonSSM.") else {
        return Err(ApiError::bad("UnknownOperationException", format!("unknown target {target}")));
    };
    let gate = &gate;
    let allow_any = |action: &'static str| async move { gate.check_plain(action, "*", Dialect::Ssm).await };
    match op {
        "CreateActivation" => {
            allow_any("ssm:CreateActivation").await?;
            activations::create(app, parse(body)?).await
        }
        "DescribeInstanceInformation" => {
            allow_any("ssm:DescribeInstanceInformation").await?;
            instances::describe(app, parse(body)?).await
        }
        "DescribeActivations" => {
            allow_any("ssm:DescribeActivations").await?;
            activations::describe(app, parse(body)?).await
        }
        "DeleteActivation" => {
            allow_any("ssm:DeleteActivation").await?;
            activations::delete(app, parse(body)?).await
        }
        "ResumeSession" => sessions::resume(gate, parse(body)?).await,
        "GetConnectionStatus" => instances::connection_status(gate, parse(body)?).await,
        "StartSession" => sessions::start(gate, parse(body)?).await,
        "TerminateSession" => sessions::terminate(gate, parse(body)?).await,
        "DescribeSessions" => {
            allow_any("ssm:DescribeSessions").await?;
            sessions::describe(app, parse(body)?).await
        }
        "AddTagsToResource" => tags::add(gate, parse(body)?).await,
        "RemoveTagsFromResource" => tags::remove(gate, parse(body)?).await,
        "ListTagsForResource" => tags::list(gate, parse(body)?).await,
        "CreateDocument" | "UpdateDocument" | "GetDocument" | "DescribeDocument" | "DeleteDocument"
        | "ListDocuments" => documents::dispatch(gate, op, body).await,
        other => {
            Err(ApiError::bad("UnknownOperationException", format!("operation {other} is not supported")))
        }
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.is_empty() { b"{}".as_slice() } else { body };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad("SerializationException", format!("malformed request body: {e}")))
}

/// Verifies the signature; returns the caller and the region it signed for.
async fn authenticate(app: &App, call: &Call<'_>) -> Result<(Caller, String), ApiError> {
    let auth = sigv4::parse(call.headers).map_err(ApiError::from)?;
    let token = call.headers.get("x-amz-security-token").map(|v| v.to_str().unwrap_or("\u{0}"));
    let parts = sigv4::SignedParts {
        method: call.method.as_str(),
        path: call.uri.path(),
        query: call.uri.query().unwrap_or(""),
        headers: call.headers,
        body: call.body,
    };
    // The signature is checked before the key's state, so unknown and inactive keys look alike.
    let verify = |secret: &str| Ok(sigv4::verify(&parts, &auth, secret, "ssm", chrono::Utc::now())?);
    let caller = crate::identity::resolve(app, &auth.access_key_id, token, verify).await?;
    tracing::debug!(caller = %caller.arn(&app.settings.account), peer = %call.peer, "authenticated");
    Ok((caller, auth.region))
}

/// The ARN of a managed instance.
pub fn instance_arn(app: &App, instance_id: &str) -> String {
    format!("arn:airlock:ssm:{}:{}:managed-instance/{instance_id}", app.settings.region, app.settings.account)
}

/// The ARN of a session.
pub fn session_arn(app: &App, session_id: &str) -> String {
    format!("arn:airlock:ssm:{}:{}:session/{session_id}", app.settings.region, app.settings.account)
}

/// The ARN of a document; AWS-owned documents have an empty account, as in SSM.
pub fn document_arn(app: &App, name: &str) -> String {
    let owned_by_aws = name.starts_with("AWS-") || name.starts_with("SSM-");
    let account = if owned_by_aws { "" } else { app.settings.account.as_str() };
    format!("arn:airlock:ssm:{}:{account}:document/{name}", app.settings.region)
}

/// Cuts one page out of `items`; tokens are opaque offsets.
pub fn paginate<T>(
    items: Vec<T>,
    max: usize,
    token: Option<&str>,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let start = match token {
        None | Some("") => 0,
        Some(t) => engine
            .decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("offset:").and_then(|n| n.parse::<usize>().ok()))
            .filter(|n| *n <= items.len())
            .ok_or_else(|| ApiError::bad("InvalidNextToken", "The specified token is not valid."))?,
    };
    let end = (start + max).min(items.len());
    let next = (end < items.len()).then(|| engine.encode(format!("offset:{end}")));
    Ok((items.into_iter().skip(start).take(end - start).collect(), next))
}
