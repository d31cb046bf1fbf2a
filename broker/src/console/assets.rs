//! The console's page and bundle (`web/dist`, embedded at compile time), served under
//! `/console/` with the console's security headers. Content-hashed names (`main-ABCD1234.js`)
//! are cached for a year; `index.html` is revalidated every time, so a new broker's bundle is
//! picked up at the next load. `GET /` from a browser is sent to `/console/`.
//!
//! Content-Security-Policy: scripts only from the broker (`script-src 'self'`, no inline
//! script anywhere); `style-src` also allows inline styles because xterm.js writes `<style>`
//! elements at run time (its renderers' cell and selection rules), whose text changes with
//! the theme and font so no hash or nonce fits. Inline styles cannot run code; what they could
//! leak through CSS selectors is bounded by `img-src`/`font-src`/`connect-src 'self'`, and the
//! page keeps no secret in the DOM (the CSRF token stays in script memory, the cookie is
//! HttpOnly).

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use include_dir::{include_dir, Dir};

/// `web/dist` as built when the broker was compiled (empty when it was not built).
static DIST: Dir<'static> = include_dir!("$AIRLOCK_WEB_DIST");

/// The console pages' Content-Security-Policy.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; font-src 'self'; connect-src 'self'; manifest-src 'self'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

/// What a broker built without the bundle serves at `/console/`.
const NOT_BUILT: &str = "<!doctype html>
<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Airlock console not built</title></head>
<body><h1>The Airlock console is not built into this broker</h1>
<p>Build the browser bundle, then the broker, and restart it:</p>
<pre>bash web/build.sh
cargo build --bins</pre>
<p>The API at this address works without it.</p></body></html>
";

/// Adds the console's security headers.
fn secure(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Whether a file name carries esbuild's content hash (`name-HASH.ext`, HASH 8 of [A-Z0-9]).
fn is_hashed(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or_default();
    stem.rsplit_once('-').is_some_and(|(_, hash)| {
        hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    })
}

fn page(status: StatusCode, ctype: &'static str, cache: &'static str, body: &'static [u8]) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    secure(&mut r);
    r
}

/// Whether the embedded bundle has a page.
pub fn built() -> bool {
    DIST.get_file("index.html").is_some()
}

/// `GET /console/`: the page, or how to build it.
pub(super) async fn index() -> Response {
    match DIST.get_file("index.html") {
        Some(f) => page(StatusCode::OK, "text/html; charset=utf-8", "no-cache", f.contents()),
        None => page(StatusCode::OK, "text/html; charset=utf-8", "no-cache", NOT_BUILT.as_bytes()),
    }
}

/// `GET /console/{file}`: a file of the bundle.
pub(super) async fn asset(Path(name): Path<String>) -> Response {
    if name == "index.html" {
        return index().await;
    }
    // Names are flat (no '/', the route takes one segment); `..` and hidden files are refused.
    if name.starts_with('.') || name.contains('\\') {
        return page(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "no-store", b"not found\n");
    }
    match DIST.get_file(&name) {
        Some(f) => {
            let cache = if is_hashed(&name) { "public, max-age=31536000, immutable" } else { "no-cache" };
            page(StatusCode::OK, content_type(&name), cache, f.contents())
        }
        None => page(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "no-store", b"not found\n"),
    }
}

/// `GET /console`: the page lives at `/console/` (its bundle is referenced from there).
pub(super) async fn to_console() -> Response {
    redirect()
}

fn redirect() -> Response {
    let mut r = StatusCode::FOUND.into_response();
    r.headers_mut().insert(header::LOCATION, HeaderValue::from_static("/console/"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET /`: a browser (it accepts HTML) goes to the console; anything else is told that the
/// API takes POSTs only, as before the console existed.
pub(super) async fn root(headers: HeaderMap) -> Response {
    let html = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"));
    if html {
        return redirect();
    }
    let mut r = StatusCode::METHOD_NOT_ALLOWED.into_response();
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_names_are_recognized() {
        assert!(is_hashed("main-OWM35H66.js"));
        assert!(is_hashed("main-AS6J7DJM.css"));
        assert!(!is_hashed("index.html"));
        assert!(!is_hashed("main-owm35h66.js"));
        assert!(!is_hashed("main.js"));
    }

    #[test]
    fn types_follow_extensions() {
        assert_eq!(content_type("a.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("a.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("a"), "application/octet-stream");
    }

    #[test]
    fn the_policy_forbids_inline_script_and_framing() {
        assert!(CSP.contains("script-src 'self';"));
        assert!(!CSP.split(';').any(|d| d.trim().starts_with("script-src") && d.contains("unsafe")));
        assert!(CSP.contains("frame-ancestors 'none'"));
    }
}
