//! The SSM-dialect HTTP API: `POST /` with `X-Amz-Target: AmazonSSM.<Operation>`, JSON 1.1
//! bodies, SigV4 on every call but registration, SSM's error shapes.

mod activations;
mod error;
mod instances;
mod sessions;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::app::App;
use crate::sigv4;
use crate::store::Principal;

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

async fn dispatch(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let op = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix("AmazonSSM."))
        .unwrap_or("")
        .to_owned();
    let result = run(&app, &op, &method, &uri, &headers, &body).await;
    let mut response = match result {
        Ok(value) => ([(axum::http::header::CONTENT_TYPE, JSON_11)], value.to_string()).into_response(),
        Err(e) => {
            if e.status.is_server_error() {
                tracing::error!(op, error = %e.message, "request failed");
            } else {
                tracing::debug!(op, code = e.code, error = %e.message, "request refused");
            }
            e.into_response()
        }
    };
    if let Ok(v) = request_id.parse() {
        response.headers_mut().insert("x-amzn-requestid", v);
    }
    response
}

async fn run(
    app: &App,
    op: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<serde_json::Value, ApiError> {
    if op.is_empty() {
        return Err(ApiError::bad("UnknownOperationException", "missing or foreign X-Amz-Target header"));
    }
    // Registration is authenticated by the activation code, as in SSM.
    if op == "RegisterManagedInstance" {
        return activations::register(app, parse(body)?).await;
    }
    let principal = authenticate(app, method, uri, headers, body).await?;
    match op {
        "CreateActivation" => activations::create(app, &principal, parse(body)?).await,
        "DescribeInstanceInformation" => instances::describe(app, parse(body)?).await,
        "GetConnectionStatus" => instances::connection_status(app, parse(body)?).await,
        "StartSession" => sessions::start(app, &principal, parse(body)?).await,
        "TerminateSession" => sessions::terminate(app, parse(body)?).await,
        "DescribeSessions" => sessions::describe(app, parse(body)?).await,
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

async fn authenticate(
    app: &App,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Principal, ApiError> {
    let auth = sigv4::parse(headers).map_err(ApiError::from)?;
    if headers.contains_key("x-amz-security-token") {
        return Err(ApiError::bad(
            "UnrecognizedClientException",
            "temporary credentials (x-amz-security-token) are not supported by this broker yet",
        ));
    }
    let key = app.store.access_key(&auth.access_key_id).await?;
    let key = match key {
        Some(k) if k.active => k,
        Some(_) => return Err(ApiError::bad("UnrecognizedClientException", "The access key is inactive.")),
        None => {
            return Err(ApiError::bad(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ))
        }
    };
    let parts = sigv4::SignedParts {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers,
        body,
    };
    sigv4::verify(&parts, &auth, &key.secret, "ssm", chrono::Utc::now())?;
    Ok(key.principal)
}

/// An ARN in this broker's namespace.
pub fn arn(app: &App, resource: &str) -> String {
    format!("arn:airlock:ssm:{}:{}:{resource}", app.settings.region, app.settings.account)
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
