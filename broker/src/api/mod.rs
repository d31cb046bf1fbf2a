//! The SSM-dialect HTTP API: `POST /` with `X-Amz-Target: AmazonSSM.<Operation>` (and
//! `AirlockIAM.`/`AirlockSTS.` for identity), JSON 1.1 bodies, SigV4 on every call but
//! registration, SSM's error shapes, and a policy decision before every operation.

mod activations;
mod commands;
mod commands_json;
mod documents;
mod documents_builtin;
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
use crate::authz::{Gate, RequestFacts};
use crate::identity::Caller;
use crate::sigv4;
use crate::store::PrincipalKind;
use iam::{Role, User};

pub use crate::error::ApiError;
pub use crate::ops::{self, Op};
pub(crate) use iam::mfa::secret_of as mfa_secret;
pub use sessions::close_abandoned as close_abandoned_sessions;

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
    /// The tag's key.
    #[serde(rename = "Key")]
    pub key: String,
    /// The tag's value (empty when not given).
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
    let op = Op::from_target(target).ok_or_else(|| {
        ApiError::bad("UnknownOperationException", format!("operation {target} is not supported"))
    })?;
    // Registration is authenticated by the activation code, as in SSM.
    if op == Op::RegisterManagedInstance {
        return activations::register(app, parse(body)?).await;
    }
    let call = Call { peer, method, uri, headers, body };
    let (caller, region) = authenticate(app, &call).await?;
    let secure = app.settings.public_url.starts_with("https://");
    let facts = RequestFacts { source_ip: peer.ip().to_canonical(), secure, region, console: None };
    serve_as(app, &caller, &facts, op, body).await
}

/// Runs one operation for a caller already authenticated (by SigV4 here, by a console
/// session in [`crate::console`]): the same handlers, gate and audit either way.
pub(crate) async fn serve_as(
    app: &App,
    caller: &Caller,
    facts: &RequestFacts,
    op: Op,
    body: &[u8],
) -> Result<serde_json::Value, ApiError> {
    if op == Op::RegisterManagedInstance {
        return Err(ApiError::bad("UnknownOperationException", "RegisterManagedInstance takes no caller"));
    }
    let gate = Gate { app, caller, facts };
    let result = serve(&gate, op, body).await;
    if result.is_ok() && op.service() == ops::Service::Iam && !op.reads_only() {
        app.policy_cache.clear();
    }
    result
}

/// Runs one authenticated operation: its typed request, then its handler, which authorizes
/// the operation on its own resource before it does anything else. Counted and timed.
async fn serve(gate: &Gate<'_>, op: Op, body: &[u8]) -> Result<serde_json::Value, ApiError> {
    let started = crate::metrics::api_started();
    let result = handle(gate, op, body).await;
    crate::metrics::api_finished(op.name(), started, &result);
    result
}

async fn handle(gate: &Gate<'_>, op: Op, body: &[u8]) -> Result<serde_json::Value, ApiError> {
    let app = gate.app;
    match op {
        Op::RegisterManagedInstance => activations::register(app, parse(body)?).await,
        Op::CreateActivation => activations::create(gate, parse(body)?).await,
        Op::DescribeActivations => activations::describe(gate, parse(body)?).await,
        Op::DeleteActivation => activations::delete(gate, parse(body)?).await,
        Op::DeregisterManagedInstance => instances::deregister(gate, parse(body)?).await,
        Op::DescribeInstanceInformation => instances::describe(gate, parse(body)?).await,
        Op::GetConnectionStatus => instances::connection_status(gate, parse(body)?).await,
        Op::StartSession => sessions::start(gate, parse(body)?).await,
        Op::ResumeSession => sessions::resume(gate, parse(body)?).await,
        Op::TerminateSession => sessions::terminate(gate, parse(body)?).await,
        Op::DescribeSessions => sessions::describe(gate, parse(body)?).await,
        Op::AddTagsToResource => tags::add(gate, parse(body)?).await,
        Op::RemoveTagsFromResource => tags::remove(gate, parse(body)?).await,
        Op::ListTagsForResource => tags::list(gate, parse(body)?).await,
        Op::CreateDocument
        | Op::UpdateDocument
        | Op::GetDocument
        | Op::DescribeDocument
        | Op::DeleteDocument
        | Op::ListDocuments => documents::dispatch(gate, op, body).await,
        Op::ListRecordings => recordings::list(gate, parse(body)?).await,
        Op::GetRecording => recordings::get(gate, parse(body)?).await,
        Op::GetRecordingStatus => recordings::status(gate, parse(body)?).await,
        Op::SearchRecordings => recordings::search(gate, parse(body)?).await,
        Op::AssumeRole => iam::assume_role(gate, parse(body)?).await,
        Op::SimulatePrincipalPolicy => iam::simulate(gate, parse(body)?).await,
        Op::CreateUser => iam::create_user(gate, parse(body)?).await,
        Op::CreateRole => iam::create_role(gate, parse(body)?).await,
        Op::UpdateAssumeRolePolicy => iam::update_assume_role_policy(gate, parse(body)?).await,
        Op::GetUser => iam::get_principal::<User>(gate, op, parse(body)?).await,
        Op::GetRole => iam::get_principal::<Role>(gate, op, parse(body)?).await,
        Op::DeleteUser => iam::delete_principal::<User>(gate, op, parse(body)?).await,
        Op::DeleteRole => iam::delete_principal::<Role>(gate, op, parse(body)?).await,
        Op::ListUsers => iam::list_principals(gate, op, PrincipalKind::User, parse(body)?).await,
        Op::ListRoles => iam::list_principals(gate, op, PrincipalKind::Role, parse(body)?).await,
        Op::TagUser => iam::tag_principal::<User>(gate, op, parse(body)?).await,
        Op::TagRole => iam::tag_principal::<Role>(gate, op, parse(body)?).await,
        Op::UntagUser => iam::untag_principal::<User>(gate, op, parse(body)?).await,
        Op::UntagRole => iam::untag_principal::<Role>(gate, op, parse(body)?).await,
        Op::CreateAccessKey => iam::create_access_key(gate, parse(body)?).await,
        Op::ListAccessKeys => iam::list_access_keys(gate, parse(body)?).await,
        Op::UpdateAccessKey => iam::update_access_key(gate, parse(body)?).await,
        Op::DeleteAccessKey => iam::delete_access_key(gate, parse(body)?).await,
        Op::PutUserPolicy => iam::put_inline_policy::<User>(gate, op, parse(body)?).await,
        Op::PutRolePolicy => iam::put_inline_policy::<Role>(gate, op, parse(body)?).await,
        Op::GetUserPolicy => iam::get_inline_policy::<User>(gate, op, parse(body)?).await,
        Op::GetRolePolicy => iam::get_inline_policy::<Role>(gate, op, parse(body)?).await,
        Op::DeleteUserPolicy => iam::delete_inline_policy::<User>(gate, op, parse(body)?).await,
        Op::DeleteRolePolicy => iam::delete_inline_policy::<Role>(gate, op, parse(body)?).await,
        Op::ListUserPolicies => iam::list_inline_policies::<User>(gate, op, parse(body)?).await,
        Op::ListRolePolicies => iam::list_inline_policies::<Role>(gate, op, parse(body)?).await,
        Op::CreatePolicy => iam::create_policy(gate, parse(body)?).await,
        Op::DeletePolicy => iam::delete_policy(gate, parse(body)?).await,
        Op::ListPolicies => iam::list_policies(gate, parse(body)?).await,
        Op::AttachUserPolicy => iam::attach_policy::<User>(gate, op, parse(body)?).await,
        Op::AttachRolePolicy => iam::attach_policy::<Role>(gate, op, parse(body)?).await,
        Op::DetachUserPolicy => iam::detach_policy::<User>(gate, op, parse(body)?).await,
        Op::DetachRolePolicy => iam::detach_policy::<Role>(gate, op, parse(body)?).await,
        Op::ListAttachedUserPolicies => iam::list_attached_policies::<User>(gate, op, parse(body)?).await,
        Op::ListAttachedRolePolicies => iam::list_attached_policies::<Role>(gate, op, parse(body)?).await,
        Op::ListAuditEvents => iam::list_audit_events(gate, parse(body)?).await,
        Op::VerifyAuditLog => iam::verify_audit_log(gate, parse(body)?).await,
        Op::CreateLoginProfile => iam::create_login_profile(gate, parse(body)?).await,
        Op::UpdateLoginProfile => iam::update_login_profile(gate, parse(body)?).await,
        Op::DeleteLoginProfile => iam::delete_login_profile(gate, parse(body)?).await,
        Op::GetLoginProfile => iam::get_login_profile(gate, parse(body)?).await,
        Op::ChangePassword => iam::change_password(gate, parse(body)?).await,
        Op::CreateVirtualMFADevice => iam::create_virtual_mfa_device(gate, parse(body)?).await,
        Op::EnableMFADevice => iam::enable_mfa_device(gate, parse(body)?).await,
        Op::DeactivateMFADevice => iam::deactivate_mfa_device(gate, parse(body)?).await,
        Op::ListMFADevices => iam::list_mfa_devices(gate, parse(body)?).await,
        Op::DeleteVirtualMFADevice => iam::delete_virtual_mfa_device(gate, parse(body)?).await,
        Op::SendCommand => commands::send(gate, parse(body)?).await,
        Op::ListCommands => commands::list(gate, parse(body)?).await,
        Op::ListCommandInvocations => commands::list_invocations(gate, parse(body)?).await,
        Op::GetCommandInvocation => commands::get_invocation(gate, parse(body)?).await,
        Op::CancelCommand => commands::cancel(gate, parse(body)?).await,
    }
}

/// An operation that takes no members: `{}` (or an empty body), nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoMembers {}

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

#[cfg(test)]
mod decode_tests {
    //! Request decoding takes hostile bodies: arbitrary bytes and arbitrary JSON give an error,
    //! never a panic, for every request type.
    use proptest::prelude::*;
    use serde_json::Value;

    use super::parse;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[A-Za-z0-9 .:/*-]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("UserName".to_owned()),
                        Just("RoleName".to_owned()),
                        Just("PolicyName".to_owned()),
                        Just("PolicyDocument".to_owned()),
                        Just("Target".to_owned()),
                        Just("Parameters".to_owned()),
                        Just("Filters".to_owned()),
                        Just("Tags".to_owned()),
                        Just("MaxResults".to_owned()),
                        "[A-Za-z]{1,10}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Decodes `body` as every request type; only errors or values may come out.
    fn decode_all(body: &[u8]) {
        use super::iam::{On, Role, User};
        let _ = parse::<super::sessions::StartSession>(body);
        let _ = parse::<super::sessions::DescribeSessions>(body);
        let _ = parse::<super::sessions::TerminateSession>(body);
        let _ = parse::<super::instances::DescribeInstances>(body);
        let _ = parse::<super::tags::Resource>(body);
        let _ = parse::<super::activations::CreateActivation>(body);
        let _ = parse::<super::activations::Register>(body);
        let _ = parse::<super::documents::CreateDocument>(body);
        let _ = parse::<super::documents::ListDocuments>(body);
        let _ = parse::<super::recordings::GetRecording>(body);
        let _ = parse::<super::iam::sts::Simulate>(body);
        let _ = parse::<super::iam::sts::AssumeRole>(body);
        let _ = parse::<On<User, super::iam::policies::PutPolicy>>(body);
        let _ = parse::<On<Role, super::iam::principals::TagMembers>>(body);
        let _ = parse::<On<User, super::iam::Page>>(body);
        let _ = parse::<super::NoMembers>(body);
        let _ = parse::<On<User, super::iam::login::CreateProfile>>(body);
        let _ = parse::<super::iam::login::ChangePassword>(body);
        let _ = parse::<On<User, super::iam::mfa::EnableMembers>>(body);
        let _ = parse::<super::iam::mfa::ListDevices>(body);
        let _ = parse::<super::iam::mfa::CreateDevice>(body);
        let _ = parse::<super::commands_json::SendCommand>(body);
        let _ = parse::<super::commands_json::ListCommands>(body);
        let _ = parse::<super::commands_json::GetInvocation>(body);
        let _ = parse::<super::commands_json::CancelCommand>(body);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
            decode_all(&body);
        }

        #[test]
        fn arbitrary_json_never_panics(v in json_value()) {
            decode_all(v.to_string().as_bytes());
        }
    }
}
