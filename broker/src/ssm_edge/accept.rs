//! The data channel's front door: the WebSocket upgrade and who may use it.
//!
//! The upgrade is accepted unsigned (plugins before 1.2.764), SigV4-signed (service
//! `ssmmessages`; every plugin from 1.2.764) or presigned (`X-Amz-Signature` in the query);
//! a signature, when present, must verify with the same verifier and keys as the API. A
//! browser's foreign `Origin` is refused. Then the first frame must be a valid
//! `OpenDataChannel` whose token belongs to the session the URL names, within
//! [`super::OPEN_DEADLINE`]. Every refusal is a WebSocket close (code 1008) whose reason says
//! why, so the plugin's log shows it.

use std::net::SocketAddr;
use std::sync::Arc;

use airlock_proto::ssm::payload::OpenDataChannel;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use tokio::sync::OwnedSemaphorePermit;

use super::Edge;
use crate::registry::{TokenFor, TokenRefusal};

/// WebSocket close code for a refused peer (policy violation).
pub const CLOSE_REFUSED: u16 = 1008;
/// WebSocket close code for a server-side failure.
pub const CLOSE_INTERNAL: u16 = 1011;
/// WebSocket close code for a normal end.
pub const CLOSE_NORMAL: u16 = 1000;

/// `GET /v1/data-channel/<session-id>?role=publish_subscribe`.
pub async fn data_channel(
    State(edge): State<Arc<Edge>>,
    Path(session_id): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let permits = edge.slots.clone().try_acquire_owned().and_then(|slot| {
        let pending = edge.unauthenticated.clone().try_acquire_owned()?;
        Ok((slot, pending))
    });
    let Ok(permit) = permits else {
        tracing::warn!(%peer, "data-channel connection cap reached");
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "too many data-channel connections")
            .into_response();
    };
    // Checked before the upgrade, answered after it: a refusal is a close frame with a reason.
    let refusal = match check_origin(&edge, &headers) {
        Err(e) => Some(e),
        Ok(()) => check_signature(&edge, &method, &uri, &headers).await.err(),
    };
    let max = super::MAX_MESSAGE;
    ws.max_message_size(max)
        .max_frame_size(max)
        .write_buffer_size(64 * 1024)
        .max_write_buffer_size(4 * max)
        .on_upgrade(move |socket| serve(edge, socket, session_id, peer, refusal, permit))
}

/// A browser's `Origin`, unless it is the broker's own: the plugin sends none.
fn check_origin(edge: &Edge, headers: &HeaderMap) -> Result<(), String> {
    let Some(origin) = headers.get(axum::http::header::ORIGIN) else {
        return Ok(());
    };
    let own = edge.app.settings.public_url.trim_end_matches('/');
    match origin.to_str() {
        Ok(o) if o.eq_ignore_ascii_case(own) => Ok(()),
        Ok(o) => Err(format!("foreign Origin {:?} refused", o.chars().take(64).collect::<String>())),
        Err(_) => Err("malformed Origin refused".to_owned()),
    }
}

/// Verifies a SigV4 `Authorization` header or presigned query (service `ssmmessages`), if
/// any; an unsigned upgrade passes (the token in `OpenDataChannel` is the credential).
async fn check_signature(edge: &Edge, method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), String> {
    let query = uri.query().unwrap_or("");
    let presigned = query.split('&').any(|p| p.starts_with("X-Amz-Signature="));
    if !headers.contains_key(axum::http::header::AUTHORIZATION) && !presigned {
        return Ok(());
    }
    let parts =
        crate::sigv4::SignedParts { method: method.as_str(), path: uri.path(), query, headers, body: b"" };
    let now = chrono::Utc::now();
    let (auth, token) = if presigned {
        let p = crate::sigv4::parse_presigned(query).map_err(|e| format!("signature refused: {e}"))?;
        (p.authorization, p.security_token)
    } else {
        let auth = crate::sigv4::parse(headers).map_err(|e| format!("signature refused: {e}"))?;
        let token = headers.get("x-amz-security-token").map(|v| v.to_str().unwrap_or("\u{0}").to_owned());
        (auth, token)
    };
    let verify = |secret: &str| {
        let checked = if presigned {
            crate::sigv4::verify_presigned(&parts, &auth, secret, "ssmmessages", now)
        } else {
            crate::sigv4::verify(&parts, &auth, secret, "ssmmessages", now)
        };
        Ok(checked?)
    };
    crate::identity::resolve(&edge.app, &auth.access_key_id, token.as_deref(), verify)
        .await
        .map(|_| ())
        .map_err(|e| format!("signature refused: {}: {}", e.code, e.message))
}

/// Closes with `code` and `reason` (cut to the 123 bytes a close frame holds).
pub async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let frame = CloseFrame { code, reason: reason[..cut].to_owned().into() };
    let _ = tokio::time::timeout(super::OPEN_DEADLINE, socket.send(Message::Close(Some(frame)))).await;
}

/// Runs one upgraded connection: refusal, or `OpenDataChannel` then the session.
async fn serve(
    edge: Arc<Edge>,
    mut socket: WebSocket,
    session_id: String,
    peer: SocketAddr,
    refusal: Option<String>,
    (_slot, pending): (OwnedSemaphorePermit, OwnedSemaphorePermit),
) {
    if let Some(reason) = refusal {
        tracing::warn!(%peer, session = %session_id, %reason, "data channel refused");
        close(&mut socket, CLOSE_REFUSED, &reason).await;
        return;
    }
    let open = match tokio::time::timeout(super::OPEN_DEADLINE, read_open(&mut socket)).await {
        Ok(Ok(open)) => open,
        Ok(Err(reason)) => {
            tracing::info!(%peer, session = %session_id, %reason, "data channel refused");
            close(&mut socket, CLOSE_REFUSED, &reason).await;
            return;
        }
        Err(_) => {
            close(&mut socket, CLOSE_REFUSED, "no OpenDataChannel in time").await;
            return;
        }
    };
    // A valid OpenDataChannel: whether its token is good is known at once below.
    drop(pending);
    let refused = |r: TokenRefusal| format!("OpenDataChannel refused: {r}");
    let token = open.token_value.clone();
    let version = open.client_version.clone().unwrap_or_default();
    match edge.app.registry.token_for(&token) {
        Err(r) => {
            tracing::warn!(%peer, session = %session_id, refusal = %r, "data-channel token refused");
            close(&mut socket, CLOSE_REFUSED, &refused(r)).await;
        }
        Ok(TokenFor::Start(p)) if p.session_id == session_id => {
            super::pump::start(&edge, socket, *p, token, version, peer).await
        }
        Ok(TokenFor::Resume(id)) if id == session_id => {
            super::pump::resume(&edge, socket, id, token, peer).await
        }
        Ok(_) => {
            tracing::warn!(%peer, session = %session_id, "data-channel token is for another session");
            close(&mut socket, CLOSE_REFUSED, "OpenDataChannel refused: the token is for another session")
                .await;
        }
    }
}

/// Reads the first frame: a text `OpenDataChannel` (pings are answered meanwhile).
async fn read_open(socket: &mut WebSocket) -> Result<OpenDataChannel, String> {
    loop {
        match socket.recv().await {
            None => return Err("closed before OpenDataChannel".to_owned()),
            Some(Err(e)) => return Err(format!("connection failed before OpenDataChannel: {e}")),
            Some(Ok(Message::Text(text))) => {
                if text.len() > super::MAX_OPEN_FRAME {
                    return Err("OpenDataChannel too large".to_owned());
                }
                let open: OpenDataChannel = serde_json::from_str(text.as_str())
                    .map_err(|e| format!("malformed OpenDataChannel: {e}"))?;
                if open.message_schema_version != "1.0" {
                    return Err(format!(
                        "OpenDataChannel MessageSchemaVersion {:?} is not 1.0",
                        open.message_schema_version.chars().take(16).collect::<String>()
                    ));
                }
                if open.token_value.is_empty() || open.token_value.len() > 300 {
                    return Err("OpenDataChannel refused: the session token is not valid".to_owned());
                }
                return Ok(open);
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) => return Err("closed before OpenDataChannel".to_owned()),
            Some(Ok(Message::Binary(_))) => return Err("expected OpenDataChannel first".to_owned()),
        }
    }
}
