//! Sign-in, sign-out and who-am-I.
//!
//! A wrong password, an unknown user and a missing or wrong MFA code get one answer, and an
//! unknown user costs the same argon2 work (against a decoy hash), so neither the answer
//! nor its time tells which users exist. The audit log, which only administrators read,
//! records which it was.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::sessions::{random_token, Session};
use super::{answer, refuse, same_origin, session_of, set_cookie, throttled_answer};
use crate::app::{now_us, App};
use crate::error::ApiError;
use crate::store::{AuditEvent, PrincipalKind};
use crate::{password, totp};

/// The sign-in form.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct SignIn {
    user_name: String,
    password: String,
    #[serde(default)]
    mfa_code: Option<String>,
}

/// The one answer to every failed sign-in.
fn failed() -> ApiError {
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        code: "SignInFailed",
        message: "The user name, password or MFA code is incorrect.".to_owned(),
    }
}

/// How a sign-in attempt ended, as the audit log records it.
enum Outcome {
    Allowed { mfa_at_us: Option<i64>, reset_required: bool },
    Refused(&'static str),
}

fn user_arn(app: &App, name: &str) -> String {
    let valid = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    let name = if valid { name } else { "(invalid name)" };
    format!("arn:airlock:iam::{}:{}/{name}", app.settings.account, PrincipalKind::User.as_str())
}

/// Records a console event; never the password.
async fn audit(app: &App, user: &str, action: &str, decision: &str, ip: IpAddr) -> Result<(), ApiError> {
    let arn = user_arn(app, user);
    app.store
        .append_audit(&AuditEvent {
            at_us: now_us(),
            principal: arn.clone(),
            action: action.to_owned(),
            resource: arn,
            decision: decision.to_owned(),
            policy: None,
            sid: None,
            statement_index: None,
            source_ip: ip.to_string(),
        })
        .await
        .map_err(ApiError::from)
}

/// Checks the password (or a decoy) and, for a user with MFA devices, the code.
async fn authenticate(app: &App, form: &SignIn) -> Result<Outcome, ApiError> {
    let name = form.user_name.as_str();
    let profile =
        if !name.is_empty() && name.len() <= 64 { app.store.login_profile(name).await? } else { None };
    let known = profile.is_some();
    let hash = profile.as_ref().map(|p| p.password_hash.clone());
    let ok = password::verify(hash, form.password.clone()).await.map_err(ApiError::internal)?;
    let Some(profile) = profile.filter(|_| ok) else {
        return Ok(Outcome::Refused(if known { "failedPassword" } else { "failedNoSuchUser" }));
    };
    let devices = app.store.mfa_devices_of(name).await?;
    if devices.is_empty() {
        return Ok(Outcome::Allowed { mfa_at_us: None, reset_required: profile.password_reset_required });
    }
    let Some(code) = form.mfa_code.as_deref().and_then(totp::parse_code) else {
        return Ok(Outcome::Refused("failedMfaMissing"));
    };
    let now = totp::step_of(u64::try_from(now_us() / 1_000_000).unwrap_or(0));
    for device in &devices {
        let secret = crate::api::mfa_secret(app, device)?;
        // One step of clock skew either way; each step's code is accepted once.
        if let Some(step) = totp::matching_step(&secret, code, now.saturating_sub(1)..=now + 1) {
            let step = i64::try_from(step).unwrap_or(i64::MAX);
            if app.store.spend_mfa_step(&device.serial_number, step).await? {
                return Ok(Outcome::Allowed {
                    mfa_at_us: Some(now_us()),
                    reset_required: profile.password_reset_required,
                });
            }
            return Ok(Outcome::Refused("failedMfaReplay"));
        }
    }
    Ok(Outcome::Refused("failedMfa"))
}

/// `POST /console/api/signin`.
pub(super) async fn signin(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match signin_inner(&app, peer.ip().to_canonical(), &uri, &headers, &body).await {
        Ok(r) => r,
        Err(e) => refuse(e),
    }
}

async fn signin_inner(
    app: &App,
    ip: IpAddr,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    // Login CSRF: another site must not sign a browser in as someone else.
    if !same_origin(app, headers, uri) {
        return Err(super::forbidden("Cross-origin request refused."));
    }
    let form: SignIn = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad("SerializationException", format!("malformed sign-in form: {e}")))?;
    // Bounded before anything is kept or hashed: the throttle keys on the name.
    if form.user_name.len() > 128 || form.password.len() > 4 * password::MAX_LEN {
        return Err(ApiError::bad("ValidationError", "The user name or password is too long."));
    }
    const SIGNIN: &str = "signin:ConsoleLogin";
    if let Some(wait) = app.console.throttled(&form.user_name, ip) {
        audit(app, &form.user_name, SIGNIN, "throttled", ip).await?;
        return Ok(throttled_answer(wait));
    }
    let (mfa_at_us, reset_required) = match authenticate(app, &form).await? {
        Outcome::Allowed { mfa_at_us, reset_required } => (mfa_at_us, reset_required),
        Outcome::Refused(why) => {
            app.console.failed(&form.user_name, ip);
            audit(app, &form.user_name, SIGNIN, why, ip).await?;
            tracing::info!(user = ?form.user_name, %ip, why, "console sign-in refused");
            return Err(failed());
        }
    };
    app.console.succeeded(&form.user_name);
    audit(app, &form.user_name, SIGNIN, "allowed", ip).await?;
    let cookie = random_token();
    let now = Instant::now();
    let session = Session {
        user: form.user_name.clone(),
        csrf: random_token(),
        created: now,
        last_used: now,
        mfa_at_us,
        signed_in_us: now_us(),
        reset_required,
    };
    let body = describe(app, &session);
    app.console.open(&cookie, session);
    tracing::info!(user = %form.user_name, %ip, mfa = mfa_at_us.is_some(), "console sign-in");
    let mut r = answer(StatusCode::OK, &body);
    r.headers_mut().insert(header::SET_COOKIE, super::set_cookie(app, Some(&cookie)));
    Ok(r)
}

/// What the console page is told about its session.
fn describe(app: &App, s: &Session) -> serde_json::Value {
    let settings = app.console.settings();
    let absolute = i64::try_from(settings.absolute_timeout.as_secs()).unwrap_or(i64::MAX);
    let mut v = json!({
        "userName": s.user,
        "arn": user_arn(app, &s.user),
        "csrfToken": s.csrf,
        "mfaAuthenticated": s.mfa_at_us.is_some(),
        "passwordResetRequired": s.reset_required,
        "signedInAt": s.signed_in_us / 1_000_000,
        "expiresAt": (s.signed_in_us / 1_000_000).saturating_add(absolute),
        "idleTimeoutSeconds": settings.idle_timeout.as_secs(),
    });
    if let Some(at) = s.mfa_at_us {
        v["mfaAge"] = json!((now_us() - at).max(0) / 1_000_000);
    }
    v
}

/// `POST /console/api/signout`.
pub(super) async fn signout(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let (key, session) = match session_of(&app, &headers, &uri, true) {
        Ok(s) => s,
        Err(e) => return refuse(e),
    };
    app.console.close(&key);
    if let Err(e) =
        audit(&app, &session.user, "signin:ConsoleLogout", "allowed", peer.ip().to_canonical()).await
    {
        return refuse(e);
    }
    let mut r = answer(StatusCode::OK, &json!({ "signedOut": true }));
    r.headers_mut().insert(header::SET_COOKIE, set_cookie(&app, None));
    r
}

/// `GET /console/api/whoami`.
pub(super) async fn whoami(State(app): State<Arc<App>>, uri: Uri, headers: HeaderMap) -> Response {
    match session_of(&app, &headers, &uri, false) {
        Ok((_, session)) => answer(StatusCode::OK, &describe(&app, &session)),
        Err(e) => refuse(e),
    }
}
