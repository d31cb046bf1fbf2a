//! The browser console's server side: sign-in with an IAM user's console password (and MFA
//! code), a cookie session, and API calls made as that user through the same operation
//! table, gate and audit as signed requests.
//!
//! Routes, under `/console/api/`:
//! - `POST signin` `{userName, password, mfaCode?}`: sets the `airlock_console` cookie,
//!   answers the CSRF token.
//! - `POST signout`: ends the session.
//! - `GET whoami`: the signed-in user (and the CSRF token again, for a reloaded page).
//! - `POST call` `{operation, body}`: one API operation as the signed-in user.
//! - `GET terminal`: a WebSocket carrying a browser terminal ([`terminal`], docs/wire.md §2.5).
//!
//! The page itself is served from `/console/` ([`assets`]); `GET /` from a browser goes there.
//!
//! Every POST must come from the console's own origin (`Origin`, or `Sec-Fetch-Site:
//! same-origin`), and every POST but sign-in must carry the session's `X-CSRF-Token`; the
//! cookie is HttpOnly, SameSite=Strict and (except on plain-HTTP loopback) Secure.

pub mod assets;
mod call;
pub mod sessions;
mod signin;
mod terminal;
pub mod terminal_proto;
pub mod throttle;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::app::App;
use crate::error::ApiError;
pub use call::caller_of;
use sessions::{key_of, SessionTable};
pub use sessions::{ConsoleSettings, Session, SessionKey};
use throttle::Throttle;

/// The session cookie's name.
pub const COOKIE: &str = "airlock_console";
/// The header that must echo the session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The largest console request body.
const MAX_BODY: usize = 256 * 1024;

/// Console sessions and the sign-in slow-down, shared by the broker's tasks.
pub struct Console {
    settings: ConsoleSettings,
    sessions: Mutex<SessionTable>,
    throttle: Mutex<Throttle>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Console {
    /// An empty session table with these bounds.
    pub fn new(settings: ConsoleSettings) -> Self {
        Console { settings, sessions: Mutex::default(), throttle: Mutex::default() }
    }

    /// The session bounds and lifetimes.
    pub fn settings(&self) -> &ConsoleSettings {
        &self.settings
    }

    /// Signs a user out everywhere (its password changed or was removed).
    pub fn end_sessions_of(&self, user: &str) {
        lock(&self.sessions).remove_user(user);
    }

    /// The user chose a new password: its sessions need no reset any more.
    pub fn password_changed(&self, user: &str) {
        lock(&self.sessions).clear_reset(user);
    }

    /// How long sign-ins of `user` from `ip` must wait, if they must.
    pub fn throttled(&self, user: &str, ip: IpAddr) -> Option<Duration> {
        lock(&self.throttle).wait(user, ip, Instant::now())
    }

    /// Counts a failed sign-in (or a wrong old password).
    pub fn failed(&self, user: &str, ip: IpAddr) {
        lock(&self.throttle).fail(user, ip, Instant::now());
    }

    fn succeeded(&self, user: &str) {
        lock(&self.throttle).succeed(user);
    }

    fn open(&self, cookie_value: &str, session: Session) {
        lock(&self.sessions).insert(key_of(cookie_value), session, &self.settings, Instant::now());
    }

    fn touch(&self, key: &SessionKey) -> Option<Session> {
        lock(&self.sessions).touch(key, &self.settings, Instant::now())
    }

    fn close(&self, key: &SessionKey) -> bool {
        lock(&self.sessions).remove(key)
    }
}

/// Whole seconds to wait, rounded up (never 0 while a lockout runs).
fn wait_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// The refusal of a throttled sign-in (HTTP 429, with how long to wait).
pub fn throttled_error(wait: Duration) -> ApiError {
    ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        code: "Throttling",
        message: format!("Too many failed sign-in attempts. Try again in {} seconds.", wait_secs(wait)),
    }
}

/// The console's answer to a throttled sign-in: the refusal and a `Retry-After` header.
fn throttled_answer(wait: Duration) -> Response {
    let mut r = refuse(throttled_error(wait));
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait_secs(wait)));
    r
}

/// The console's routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(assets::root))
        .route("/console", get(assets::to_console))
        .route("/console/", get(assets::index))
        .route("/console/{file}", get(assets::asset))
        .route("/console/api/signin", post(signin::signin))
        .route("/console/api/signout", post(signin::signout))
        .route("/console/api/whoami", get(signin::whoami))
        .route("/console/api/call", post(call::call))
        .route("/console/api/terminal", get(terminal::terminal))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

/// A console answer: JSON, never cached.
fn answer(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

/// An error in the API's shape, `{"__type", "message"}`, with its status.
fn refuse(e: ApiError) -> Response {
    answer(e.status, &serde_json::json!({ "__type": e.code, "message": e.message }))
}

fn forbidden(message: &str) -> ApiError {
    ApiError { status: StatusCode::FORBIDDEN, code: "Forbidden", message: message.to_owned() }
}

fn not_signed_in() -> ApiError {
    ApiError { status: StatusCode::UNAUTHORIZED, code: "NotSignedIn", message: "Sign in first.".to_owned() }
}

/// Whether the request comes from the console's own origin: `Sec-Fetch-Site`, when sent,
/// must say `same-origin`, and `Origin`, when sent, must be the broker's public URL or this
/// request's own scheme and host; one of the two must be there.
pub fn same_origin(app: &App, headers: &HeaderMap, uri: &Uri) -> bool {
    let site = headers.get("sec-fetch-site").map(|v| v.as_bytes());
    if site.is_some_and(|s| s != b"same-origin") {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return site.is_some() };
    let Ok(origin) = origin.to_str() else { return false };
    let public = app.settings.public_url.trim_end_matches('/');
    if origin.eq_ignore_ascii_case(public) {
        return true;
    }
    let scheme = if public.starts_with("https://") { "https" } else { "http" };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    host.is_some_and(|h| origin.eq_ignore_ascii_case(&format!("{scheme}://{h}")))
}

/// The `airlock_console` cookie's value, if the request has one.
fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The `Set-Cookie` value for a session (or, with no value, one that deletes it).
fn set_cookie(app: &App, value: Option<&str>) -> HeaderValue {
    // Plain HTTP is only ever served on loopback (see server::start): the dev case.
    let secure = if app.settings.public_url.starts_with("https://") { "; Secure" } else { "" };
    let text = match value {
        Some(v) => format!("{COOKIE}={v}; Path=/console; HttpOnly; SameSite=Strict{secure}"),
        None => format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict{secure}; Max-Age=0"),
    };
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("airlock_console=; Max-Age=0"))
}

/// Equal byte strings, compared without an early exit.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The signed-in session of a request. With `changes_state`, the request must also come
/// from the console's origin and carry the session's CSRF token. (A WebSocket upgrade from
/// the console passes `false` and checks [`same_origin`] itself: browsers send no custom
/// header with it.)
pub fn session_of(
    app: &App,
    headers: &HeaderMap,
    uri: &Uri,
    changes_state: bool,
) -> Result<(SessionKey, Session), ApiError> {
    if changes_state && !same_origin(app, headers, uri) {
        return Err(forbidden("Cross-origin request refused."));
    }
    let key = key_of(cookie_value(headers).ok_or_else(not_signed_in)?);
    let session = app.console.touch(&key).ok_or_else(not_signed_in)?;
    if changes_state {
        let token = headers.get(CSRF_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
        if !same_secret(token, session.csrf.as_bytes()) {
            return Err(forbidden("Missing or wrong X-CSRF-Token."));
        }
    }
    Ok((key, session))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; airlock_console=abc; b=2"));
        assert_eq!(cookie_value(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("x_airlock_console=abc"));
        h.append(header::COOKIE, HeaderValue::from_static("airlock_console="));
        assert_eq!(cookie_value(&h), None);
    }

    #[test]
    fn waits_round_up_to_whole_seconds() {
        assert_eq!(wait_secs(Duration::from_secs(30)), 30);
        assert_eq!(wait_secs(Duration::from_millis(29_100)), 30);
        assert_eq!(wait_secs(Duration::from_millis(200)), 1);
        let r = throttled_answer(Duration::from_millis(1500));
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers().get(header::RETRY_AFTER).unwrap(), "2");
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd") && !same_secret(b"abc", b"ab") && !same_secret(b"", b"a"));
    }
}
