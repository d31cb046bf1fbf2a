//! Prometheus metrics: the recorder, `GET /metrics` on the API port, and the functions the
//! broker calls where something worth counting happens.
//!
//! `/metrics` exists only when the broker is started with `--metrics-token-file`, and then
//! answers only a request bearing that token: the figures (agents connected, sessions, API
//! traffic by operation) tell an outsider the fleet's size and activity, and the API port is
//! reachable by every client and agent, so a firewall cannot keep the path private.
//!
//! Without the flag no recorder is installed and every function here is a no-op of a few
//! nanoseconds (the `metrics` facade's default). Label values are always from fixed sets in
//! this file, never from client input, so no client can grow the number of series.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::error::ApiError;
use crate::store::SessionStatus;

/// Agents with a live control link.
pub const AGENTS_CONNECTED: &str = "airlock_agents_connected";
/// API requests by operation and outcome (`ok` or the AWS error code).
pub const API_REQUESTS: &str = "airlock_api_requests_total";
/// API request latency by operation, authentication excluded.
pub const API_DURATION: &str = "airlock_api_request_duration_seconds";
/// Live sessions by state.
pub const SESSIONS: &str = "airlock_sessions";
/// Sessions that ended, by final state.
pub const SESSIONS_ENDED: &str = "airlock_sessions_ended_total";
/// Session bytes relayed, by direction.
pub const BYTES_RELAYED: &str = "airlock_bytes_relayed_total";
/// Recording bytes in the spool, not yet shipped and removed.
pub const SPOOL_BYTES: &str = "airlock_spool_bytes_waiting";

/// Direction label of [`bytes_relayed`]: from the client towards the agent.
pub const FROM_CLIENT: &str = "from_client";
/// Direction label of [`bytes_relayed`]: from the agent towards the client.
pub const FROM_AGENT: &str = "from_agent";

/// Shortest token accepted (bytes): long enough that guessing is hopeless.
const MIN_TOKEN_LEN: usize = 16;
/// Largest token file read.
const MAX_TOKEN_FILE: u64 = 4096;
/// How often histograms are folded and idle series trimmed when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// API latency buckets, in microseconds (rendered in seconds, Prometheus's unit).
const API_BUCKETS_US: [u32; 14] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    10_000_000,
];

/// Why metrics could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The token file cannot be read.
    #[error("cannot read the metrics token file {path}: {source}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The token is too short or too long.
    #[error("the metrics token in {0} must be {MIN_TOKEN_LEN} to {MAX_TOKEN_FILE} bytes")]
    TokenLength(PathBuf),
    /// The recorder could not be built or installed.
    #[error("cannot set up the metrics recorder: {0}")]
    Recorder(String),
}

/// The installed recorder and the token a scrape must present.
#[derive(Clone)]
pub struct Exporter {
    handle: PrometheusHandle,
    token_sha256: [u8; 32],
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exporter")
    }
}

impl Exporter {
    /// Reads the bearer token from `token_file`, installs the process-wide recorder and starts
    /// its upkeep. Call once per process (a second recorder is refused).
    pub fn install(token_file: &Path) -> Result<Exporter, MetricsError> {
        let token = read_token(token_file)?;
        let buckets: Vec<f64> = API_BUCKETS_US.iter().map(|&us| f64::from(us) / 1e6).collect();
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(API_DURATION.to_owned()), &buckets)
            .map_err(|e| MetricsError::Recorder(e.to_string()))?
            .build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).map_err(|e| MetricsError::Recorder(e.to_string()))?;
        describe();
        let upkeep = handle.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                tick.tick().await;
                upkeep.run_upkeep();
            }
        });
        Ok(Exporter { handle, token_sha256: Sha256::digest(&token).into() })
    }

    /// Whether `headers` carry `Authorization: Bearer <token>`. Digests are compared, so the
    /// time taken tells nothing about the token.
    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(presented) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        digest == self.token_sha256
    }
}

fn read_token(path: &Path) -> Result<Vec<u8>, MetricsError> {
    let io = |source| MetricsError::TokenFile { path: path.to_owned(), source };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_TOKEN_FILE {
        return Err(MetricsError::TokenLength(path.to_owned()));
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let token = text.trim();
    if token.len() < MIN_TOKEN_LEN {
        return Err(MetricsError::TokenLength(path.to_owned()));
    }
    Ok(token.as_bytes().to_vec())
}

fn describe() {
    metrics::describe_gauge!(AGENTS_CONNECTED, "Agents with a live control link.");
    metrics::describe_counter!(
        API_REQUESTS,
        "API requests by operation and outcome (ok or the AWS error code)."
    );
    metrics::describe_histogram!(
        API_DURATION,
        metrics::Unit::Seconds,
        "API request latency by operation, after authentication."
    );
    metrics::describe_gauge!(SESSIONS, "Live sessions by state.");
    metrics::describe_counter!(SESSIONS_ENDED, "Sessions that ended, by final state.");
    metrics::describe_counter!(BYTES_RELAYED, metrics::Unit::Bytes, "Session bytes relayed, by direction.");
    metrics::describe_gauge!(SPOOL_BYTES, metrics::Unit::Bytes, "Recording bytes in the spool.");
}

/// `GET /metrics`, for merging into the API router.
pub fn router(app: Arc<App>, exporter: Exporter) -> Router {
    Router::new().route("/metrics", get(scrape)).with_state((app, exporter))
}

async fn scrape(State((app, exporter)): State<(Arc<App>, Exporter)>, headers: HeaderMap) -> Response {
    if !exporter.admits(&headers) {
        let mut response = ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "UnrecognizedClientException",
            message: "/metrics needs Authorization: Bearer <the broker's metrics token>".to_owned(),
        }
        .into_response();
        response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return response;
    }
    // Read at scrape time: one atomic load, nothing to keep in step.
    let spool = app.shipper.spool().status();
    #[allow(clippy::cast_precision_loss)] // a gauge is a float; bytes stay exact below 2^53
    metrics::gauge!(SPOOL_BYTES).set(spool.used_bytes as f64);
    match app.store.live_session_counts().await {
        Ok(counts) => set_live_sessions(&counts),
        Err(e) => tracing::warn!(error = %e, "cannot count live sessions for /metrics"),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], exporter.handle.render()).into_response()
}

/// Counts one agent as connected until the returned guard is dropped.
#[must_use = "the agent counts as connected only while the guard lives"]
pub fn agent_connected() -> AgentGuard {
    metrics::gauge!(AGENTS_CONNECTED).increment(1);
    AgentGuard(())
}

/// Keeps one agent counted in [`AGENTS_CONNECTED`]; see [`agent_connected`].
#[derive(Debug)]
pub struct AgentGuard(());

impl Drop for AgentGuard {
    fn drop(&mut self) {
        metrics::gauge!(AGENTS_CONNECTED).decrement(1);
    }
}

/// The moment an API operation started, for [`api_finished`].
pub fn api_started() -> Instant {
    Instant::now()
}

/// Counts an API operation (`op` from `Op::name()`) and its latency since `started`.
pub fn api_finished(op: &'static str, started: Instant, result: &Result<serde_json::Value, ApiError>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(e) => e.code,
    };
    metrics::counter!(API_REQUESTS, "operation" => op, "outcome" => outcome).increment(1);
    metrics::histogram!(API_DURATION, "operation" => op).record(started.elapsed());
}

/// Counts a session that ended, by its final status (`Terminated` or `Failed`).
pub fn session_ended(status: SessionStatus) {
    metrics::counter!(SESSIONS_ENDED, "state" => status.as_str()).increment(1);
}

/// Sets the live-sessions gauge from the store's counts (read at scrape time: the store is
/// the one record of a session's status, also when several brokers share it).
fn set_live_sessions(counts: &[(SessionStatus, u64)]) {
    for status in LIVE {
        let n = counts.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
        #[allow(clippy::cast_precision_loss)] // a gauge is a float; counts stay exact below 2^53
        metrics::gauge!(SESSIONS, "state" => status.as_str()).set(n as f64);
    }
}

/// The statuses of a session that has not ended.
const LIVE: &[SessionStatus] = &[
    SessionStatus::Connecting,
    SessionStatus::Connected,
    SessionStatus::Disconnected,
    SessionStatus::Terminating,
];

/// Counts `n` session bytes relayed in `direction` ([`FROM_CLIENT`] or [`FROM_AGENT`]).
pub fn bytes_relayed(direction: &str, n: u64) {
    let direction = match direction {
        FROM_CLIENT => FROM_CLIENT,
        FROM_AGENT => FROM_AGENT,
        _ => "other",
    };
    metrics::counter!(BYTES_RELAYED, "direction" => direction).increment(n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    /// Runs `f` with a recorder of its own and returns what it rendered while `f`'s result
    /// was still alive.
    fn rendered<T>(f: impl FnOnce() -> T) -> String {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let kept = metrics::with_local_recorder(&recorder, f);
        let out = handle.render();
        drop(kept);
        out
    }

    #[test]
    fn sessions_by_state() {
        let out = rendered(|| {
            set_live_sessions(&[(SessionStatus::Connected, 3), (SessionStatus::Disconnected, 1)]);
            session_ended(SessionStatus::Terminated);
            session_ended(SessionStatus::Terminated);
            session_ended(SessionStatus::Failed);
        });
        assert!(out.contains("airlock_sessions{state=\"Connecting\"} 0"), "{out}");
        assert!(out.contains("airlock_sessions{state=\"Connected\"} 3"), "{out}");
        assert!(out.contains("airlock_sessions{state=\"Disconnected\"} 1"), "{out}");
        assert!(out.contains("airlock_sessions{state=\"Terminating\"} 0"), "{out}");
        assert!(out.contains("airlock_sessions_ended_total{state=\"Terminated\"} 2"), "{out}");
        assert!(out.contains("airlock_sessions_ended_total{state=\"Failed\"} 1"), "{out}");
    }

    #[test]
    fn bytes_by_direction() {
        let out = rendered(|| {
            bytes_relayed(FROM_CLIENT, 10);
            bytes_relayed(FROM_CLIENT, 5);
            bytes_relayed(FROM_AGENT, 7);
            bytes_relayed("sideways", 1);
        });
        assert!(out.contains("airlock_bytes_relayed_total{direction=\"from_client\"} 15"), "{out}");
        assert!(out.contains("airlock_bytes_relayed_total{direction=\"from_agent\"} 7"), "{out}");
        assert!(out.contains("airlock_bytes_relayed_total{direction=\"other\"} 1"), "{out}");
    }

    #[test]
    fn agents_counted_while_guarded() {
        let out = rendered(|| {
            let a = agent_connected();
            let b = agent_connected();
            drop(a);
            b
        });
        assert!(out.contains("airlock_agents_connected 1"), "{out}");
    }

    #[test]
    fn api_outcome_is_ok_or_the_error_code() {
        let out = rendered(|| {
            api_finished("StartSession", api_started(), &Ok(serde_json::json!({})));
            api_finished("StartSession", api_started(), &Err(ApiError::bad("InvalidParameters", "no")));
        });
        assert!(
            out.contains("airlock_api_requests_total{operation=\"StartSession\",outcome=\"ok\"} 1"),
            "{out}"
        );
        assert!(
            out.contains(
                "airlock_api_requests_total{operation=\"StartSession\",outcome=\"InvalidParameters\"} 1"
            ),
            "{out}"
        );
    }

    #[test]
    fn token_file_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "abc\n").unwrap();
        assert!(matches!(read_token(&short), Err(MetricsError::TokenLength(_))));
        let good = dir.path().join("good");
        std::fs::write(&good, "0123456789abcdef0123\n").unwrap();
        assert_eq!(read_token(&good).unwrap(), b"0123456789abcdef0123");
        assert!(matches!(read_token(&dir.path().join("none")), Err(MetricsError::TokenFile { .. })));
    }

    #[test]
    fn bearer_token_checked() {
        let exporter = Exporter {
            handle: PrometheusBuilder::new().build_recorder().handle(),
            token_sha256: Sha256::digest(b"0123456789abcdef").into(),
        };
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            h
        };
        assert!(exporter.admits(&with("Bearer 0123456789abcdef")));
        assert!(!exporter.admits(&with("Bearer 0123456789abcdeX")));
        assert!(!exporter.admits(&with("Basic 0123456789abcdef")));
        assert!(!exporter.admits(&HeaderMap::new()));
    }
}
