//! What the emulator is doing, for operators and test harnesses: `GET /health` and
//! `GET /metrics` (no key needed: they hold no secret), `GET /admin/stats` (behind the key).

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AdminState;

/// How long one listener or the backend may take to answer the health check.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /health`: 200 `{"status": "ready", …}` when every listener accepts a connection and the
/// backend answers `PING`; 503 `{"status": "unavailable", …}` naming what did not.
pub(super) async fn health(State(state): State<AdminState>) -> Response {
    let mut failing = Vec::new();
    for (name, addr) in &state.listeners {
        if !accepts(*addr).await {
            failing.push(format!("{name} ({addr}) accepts no connection"));
        }
    }
    let backend = tokio::time::timeout(PROBE_TIMEOUT, state.backend.ping()).await;
    match backend {
        Ok(Ok(())) => {}
        Ok(Err(e)) => failing.push(format!("the backend does not answer PING: {e}")),
        Err(_) => failing.push(format!(
            "the backend does not answer PING within {PROBE_TIMEOUT:?}"
        )),
    }
    let listeners: Vec<_> = state
        .listeners
        .iter()
        .map(|(name, addr)| json!({"name": name, "addr": addr.to_string()}))
        .collect();
    if failing.is_empty() {
        (
            StatusCode::OK,
            Json(json!({"status": "ready", "listeners": listeners})),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "failing": failing, "listeners": listeners})),
        )
            .into_response()
    }
}

/// Whether something accepts a TCP connection at `addr`.
async fn accepts(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// `GET /metrics`: the counters in Prometheus' text format.
pub(super) async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.stats.to_prometheus(),
    )
        .into_response()
}

/// `GET /admin/stats`: the counters as JSON.
pub(super) async fn stats(State(state): State<AdminState>) -> Json<serde_json::Value> {
    Json(state.stats.to_json())
}
