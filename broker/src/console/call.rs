//! `POST /console/api/call`: one API operation as the signed-in user, through the same
//! operation table, handlers, gate and audit as a SigV4-signed request; only the way the
//! caller is authenticated differs (the session cookie instead of a signature), and the
//! request context says how the session signed in (`aws:MultiFactorAuthPresent`,
//! `aws:MultiFactorAuthAge`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::{answer, not_signed_in, refuse, session_of, Session, SessionKey};
use crate::api::Op;
use crate::app::App;
use crate::authz::{ConsoleAuth, RequestFacts};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::store::PrincipalKind;

/// The call: an operation's name (`DescribeInstanceInformation`) or full target
/// (`AmazonSSM.DescribeInstanceInformation`), and its request body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConsoleCall {
    operation: String,
    #[serde(default)]
    body: Value,
}

/// The operation a console call names.
fn operation(name: &str) -> Option<Op> {
    Op::from_target(name).or_else(|| Op::ALL.iter().copied().find(|op| op.name() == name))
}

/// `POST /console/api/call`.
pub(super) async fn call(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match call_inner(&app, peer, &uri, &headers, &body).await {
        Ok(v) => answer(StatusCode::OK, &v),
        Err(e) => refuse(e),
    }
}

async fn call_inner(
    app: &App,
    peer: SocketAddr,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, ApiError> {
    let (key, session) = session_of(app, headers, uri, true)?;
    let req: ConsoleCall = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad("SerializationException", format!("malformed console call: {e}")))?;
    let op = operation(&req.operation).ok_or_else(|| {
        ApiError::bad("UnknownOperationException", format!("operation {} is not supported", req.operation))
    })?;
    if session.reset_required && op != Op::ChangePassword {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            code: "PasswordResetRequired",
            message: "Choose a new password (ChangePassword) before anything else.".to_owned(),
        });
    }
    let (caller, facts) = caller_of(app, &key, &session, peer).await?;
    let body = match req.body {
        Value::Null => b"{}".to_vec(),
        v => serde_json::to_vec(&v).map_err(ApiError::internal)?,
    };
    crate::api::serve_as(app, &caller, &facts, op, &body).await
}

/// The caller and request facts of a console session, for the [`crate::authz::Gate`]: the
/// signed-in user (looked up now, so a deleted user's session ends at once) and how it
/// signed in.
pub async fn caller_of(
    app: &App,
    key: &SessionKey,
    session: &Session,
    peer: SocketAddr,
) -> Result<(Caller, RequestFacts), ApiError> {
    let Some(principal) = app.store.principal(&session.user).await?.filter(|p| p.kind == PrincipalKind::User)
    else {
        app.console.close(key);
        return Err(not_signed_in());
    };
    let facts = RequestFacts {
        source_ip: peer.ip().to_canonical(),
        secure: app.settings.public_url.starts_with("https://"),
        region: app.settings.region.clone(),
        console: Some(ConsoleAuth { mfa_at_us: session.mfa_at_us }),
    };
    Ok((Caller { principal, role_session: None }, facts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_by_name_or_target() {
        assert_eq!(operation("DescribeInstanceInformation"), Some(Op::DescribeInstanceInformation));
        assert_eq!(operation("AmazonSSM.DescribeInstanceInformation"), Some(Op::DescribeInstanceInformation));
        assert_eq!(operation("AirlockIAM.ListUsers"), Some(Op::ListUsers));
        assert_eq!(operation("AmazonSSM.ListUsers"), None);
        assert_eq!(operation("Nope"), None);
    }
}
