//! Serves the API over TCP: TLS from the broker's CA, or plain HTTP on loopback only.
//!
//! Every connection is bounded before it costs anything: a cap on open connections (and on
//! those from one address), a TLS handshake deadline, a header-read deadline, a deadline on
//! the whole request body and an idle timeout between requests. A peer that sends nothing,
//! or a header a byte at a time, is closed instead of holding a descriptor forever.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bounds on API connections.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Time a client has to complete the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Time a client has to send a request's headers (HTTP/1).
    pub header_timeout: Duration,
    /// Time a client has to send a request's whole body once its headers are in.
    pub body_timeout: Duration,
    /// A connection with no request in progress for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; further ones wait [`ADMIT_WAIT`], then are closed.
    pub max_connections: usize,
    /// Connections served at once for one source address.
    pub max_connections_per_ip: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            tls_handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
            max_connections_per_ip: 128,
        }
    }
}

/// How long a new connection waits for a free slot when the cap is reached.
const ADMIT_WAIT: Duration = Duration::from_millis(250);
/// After an idle connection is asked to close, how long it may take to do so.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Bodies are buffered at most this large here; the API's own, lower limit applies inside.
const BODY_BUFFER_LIMIT: usize = 1 << 20;
/// Concurrent HTTP/2 streams per connection.
const H2_MAX_STREAMS: u32 = 32;
const JSON_11: &str = "application/x-amz-json-1.1";

/// Accepts connections until the listener fails.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: HttpLimits,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let limits = Arc::new(limits);
    let router = router.layer(axum::middleware::from_fn_with_state(limits.clone(), guard_request));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_ip = PerIp::default();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Waiting here (not in a task) leaves the excess in the kernel's backlog, where it
        // holds none of our descriptors.
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => match tokio::time::timeout(ADMIT_WAIT, slots.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                _ => {
                    tracing::warn!(%peer, max = limits.max_connections, "connection cap reached; closing");
                    continue;
                }
            },
        };
        let Some(ip_slot) = per_ip.take(peer.ip(), limits.max_connections_per_ip) else {
            // Debug, not warn: nothing slows this path, so a flood would flood the log too.
            tracing::debug!(%peer, "too many connections from this address; closing");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        // Handlers read the peer address (aws:SourceIp) from the request's extensions.
        let router = router.clone().layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        tokio::spawn(connection(tcp, peer, router, acceptor.clone(), limits.clone(), (permit, ip_slot)));
    }
}

/// Serves one accepted connection; `_slots` are released when it ends.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    limits: Arc<HttpLimits>,
    _slots: (OwnedSemaphorePermit, IpSlot),
) {
    let result = match acceptor {
        Some(acceptor) => {
            match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => serve_connection(TokioIo::new(stream), router, &limits).await,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake deadline passed; closing");
                    return;
                }
            }
        }
        None => serve_connection(TokioIo::new(tcp), router, &limits).await,
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs hyper on `io` until the peer leaves or the connection has been idle too long.
async fn serve_connection<I>(io: I, router: Router, limits: &HttpLimits) -> Result<(), BoxError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper has no header-read timeout at all.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(H2_MAX_STREAMS);
    let activity = Arc::new(Activity::new());
    let service = Tracked { inner: TowerToHyperService::new(router), activity: activity.clone() };
    // With upgrades, so the stock plugin's data channel can become a WebSocket; an upgraded
    // connection leaves this loop (and its deadlines) and is bounded by its own edge.
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let tick = (limits.idle_timeout.min(limits.header_timeout) / 4).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            result = conn.as_mut() => return result,
            _ = tokio::time::sleep(tick) => {
                // A new connection must send its first request within the header deadline
                // (hyper's own starts only with the first byte); later ones the idle timeout.
                let limit = if activity.used() { limits.idle_timeout } else { limits.header_timeout };
                if activity.idle_for() >= limit {
                    break;
                }
            }
        }
    }
    // Idle: ask hyper to close (it answers nothing more), then cut it off if it dawdles.
    conn.as_mut().graceful_shutdown();
    match tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}

/// Requests in progress on one connection, and when the last one ended.
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// Requests started so far.
    requests: AtomicUsize,
    /// Microseconds after `start` of the last request's start or end.
    last_us: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            last_us: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let us = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_us.store(us, Ordering::Relaxed);
    }

    /// Whether any request has started on the connection.
    fn used(&self) -> bool {
        self.requests.load(Ordering::Relaxed) > 0
    }

    /// Zero while a request is in progress.
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_micros(self.last_us.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Counts a request in progress until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.requests.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A hyper service that records its requests in an [`Activity`].
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, R> hyper::service::Service<R> for Tracked<S>
where
    S: hyper::service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, req: R) -> Self::Future {
        let guard = InFlight::new(self.activity.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            drop(guard);
            result
        })
    }
}

/// Connections per source address.
#[derive(Clone, Default)]
struct PerIp(Arc<Mutex<HashMap<IpAddr, usize>>>);

impl PerIp {
    /// A slot for `ip`, or None when it already holds `max`.
    fn take(&self, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = map.entry(ip).or_insert(0);
        if *count >= max.max(1) {
            return None;
        }
        *count += 1;
        Some(IpSlot { map: self.clone(), ip })
    }
}

/// One connection's share of its address's allowance, returned on drop.
struct IpSlot {
    map: PerIp,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self.map.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = map.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Reads the whole body within the body deadline, and gives errors the layers below answer
/// in plain text (413 from the body limit) SSM's JSON shape.
async fn guard_request(State(limits): State<Arc<HttpLimits>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match tokio::time::timeout(limits.body_timeout, read_body(body)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(BodyError::TooLarge)) => return too_large(),
        Ok(Err(BodyError::Broken)) => {
            return ssm_error(
                StatusCode::BAD_REQUEST,
                "SerializationException",
                "cannot read the request body",
            )
        }
        Err(_) => {
            return ssm_error(
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeoutException",
                "the request body was not sent in time",
            )
        }
    };
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json(&response) {
        return too_large();
    }
    response
}

enum BodyError {
    TooLarge,
    Broken,
}

/// Reads a body of at most [`BODY_BUFFER_LIMIT`] bytes.
async fn read_body(body: Body) -> Result<Bytes, BodyError> {
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| BodyError::Broken)?;
        if buf.len() + chunk.len() > BODY_BUFFER_LIMIT {
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn too_large() -> Response {
    ssm_error(StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLargeException", "request body too large")
}

fn is_json(response: &Response) -> bool {
    response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes() == JSON_11.as_bytes())
}

/// An error in SSM's shape: `{"__type": code, "message": message}`.
fn ssm_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "__type": code, "message": message }).to_string();
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_11));
    response
}

/// The rustls config of the HTTPS API.
pub fn tls_config(
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(airlock_proto::quic::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
