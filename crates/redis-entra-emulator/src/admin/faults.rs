//! `/admin/faults/…`: how the token and managed-identity endpoints misbehave
//! (`/admin/faults/identity`), how the gateway misbehaves (`/admin/faults/gateway`, and
//! `/admin/faults/gateway/close-all`), and backend restarts (`/admin/faults/backend/restart`).

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};

use super::{AdminState, ApiError, JsonBody};
use crate::faults::{IdentityFault, DEFAULT_WRONG_AUDIENCE};
use crate::stats::Stats;
use crate::Error;

/// An identity fault as JSON: `{"fault": "slow", "ms": 500}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) enum FaultBody {
    /// Serve normally.
    #[serde(alias = "None")]
    None,
    /// 503 on every token request.
    #[serde(alias = "Unavailable")]
    Unavailable,
    /// 429 with `Retry-After`.
    #[serde(alias = "TooManyRequests")]
    TooManyRequests { retry_after_secs: u64 },
    /// 500.
    #[serde(alias = "InternalError")]
    InternalError,
    /// 200 with a body that is not JSON.
    #[serde(alias = "MalformedJson")]
    MalformedJson,
    /// Wait this long, then answer normally.
    #[serde(alias = "Slow")]
    Slow { ms: u64 },
    /// Any HTTP status, with an optional `Retry-After`: `{"fault":"status","code":410}`.
    #[serde(alias = "Status")]
    Status {
        code: u16,
        #[serde(default)]
        retry_after_secs: Option<u64>,
    },
    /// Otherwise-valid tokens whose `aud` is `audience` (default
    /// `https://management.azure.com/`): `{"fault":"wrong-audience"}`.
    #[serde(alias = "WrongAudience")]
    WrongAudience {
        #[serde(default = "default_wrong_audience")]
        audience: String,
    },
}

fn default_wrong_audience() -> String {
    DEFAULT_WRONG_AUDIENCE.to_string()
}

impl From<FaultBody> for IdentityFault {
    fn from(body: FaultBody) -> Self {
        match body {
            FaultBody::None => Self::None,
            FaultBody::Unavailable => Self::Unavailable,
            FaultBody::TooManyRequests { retry_after_secs } => {
                Self::TooManyRequests { retry_after_secs }
            }
            FaultBody::InternalError => Self::InternalError,
            FaultBody::MalformedJson => Self::MalformedJson,
            FaultBody::Slow { ms } => Self::Slow(Duration::from_millis(ms)),
            FaultBody::Status {
                code,
                retry_after_secs,
            } => Self::Status {
                code,
                retry_after_secs,
            },
            FaultBody::WrongAudience { audience } => Self::WrongAudience { audience },
        }
    }
}

impl From<IdentityFault> for FaultBody {
    fn from(fault: IdentityFault) -> Self {
        match fault {
            IdentityFault::Unavailable => Self::Unavailable,
            IdentityFault::TooManyRequests { retry_after_secs } => {
                Self::TooManyRequests { retry_after_secs }
            }
            IdentityFault::InternalError => Self::InternalError,
            IdentityFault::MalformedJson => Self::MalformedJson,
            IdentityFault::Slow(d) => Self::Slow {
                ms: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            },
            IdentityFault::Status {
                code,
                retry_after_secs,
            } => Self::Status {
                code,
                retry_after_secs,
            },
            IdentityFault::WrongAudience { audience } => Self::WrongAudience { audience },
            // `None`, and any fault added later that the admin interface does not name yet.
            _ => Self::None,
        }
    }
}

/// `GET /admin/faults/identity`.
pub(crate) async fn get_fault(State(state): State<AdminState>) -> Json<FaultBody> {
    Json(state.faults.identity().into())
}

/// `PUT /admin/faults/identity`.
pub(crate) async fn set_fault(
    State(state): State<AdminState>,
    JsonBody(body): JsonBody<FaultBody>,
) -> Json<FaultBody> {
    tracing::debug!(fault = ?body, "admin: identity fault set");
    state.faults.set_identity(body.clone().into());
    Json(state.faults.identity().into())
}

/// The gateway's faults as JSON. On `PUT` every field is optional and a field left out stays
/// as it is: `{"refuse_reauth": true}` makes every re-`AUTH` on an already authenticated
/// connection fail with `WRONGPASS` (first `AUTH`s still succeed);
/// `{"random_close": {"per_connection_per_second": 0.2}}` closes each authenticated connection
/// at random, on average after 5 s; `{"random_close": null}` (or a rate of 0) stops that. The
/// answer shows every fault in force, `random_close` only when it is on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GatewayFaultBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refuse_reauth: Option<bool>,
    /// `None`: left out; `Some(None)`: `null`, off.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    random_close: Option<Option<RandomClose>>,
}

/// The random-close fault's rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RandomClose {
    /// Closes per authenticated connection per second.
    per_connection_per_second: f64,
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`, the default).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

fn gateway_faults(state: &AdminState) -> GatewayFaultBody {
    let rate = state.faults.random_close();
    GatewayFaultBody {
        refuse_reauth: Some(state.faults.refuse_reauth()),
        random_close: (rate > 0.0).then_some(Some(RandomClose {
            per_connection_per_second: rate,
        })),
    }
}

/// `GET /admin/faults/gateway`.
pub(crate) async fn get_gateway_fault(State(state): State<AdminState>) -> Json<GatewayFaultBody> {
    Json(gateway_faults(&state))
}

/// `PUT /admin/faults/gateway`.
pub(crate) async fn set_gateway_fault(
    State(state): State<AdminState>,
    JsonBody(body): JsonBody<GatewayFaultBody>,
) -> Result<Json<GatewayFaultBody>, ApiError> {
    tracing::debug!(fault = ?body, "admin: gateway fault set");
    if let Some(random_close) = body.random_close {
        let rate = random_close.map_or(0.0, |r| r.per_connection_per_second);
        state
            .faults
            .set_random_close(rate)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    if let Some(on) = body.refuse_reauth {
        state.faults.set_refuse_reauth(on);
    }
    Ok(Json(gateway_faults(&state)))
}

/// What `POST /admin/faults/gateway/close-all` did.
#[derive(Debug, Serialize)]
pub(crate) struct ClosedAll {
    /// How many client connections were told to close.
    connections: usize,
}

/// `POST /admin/faults/gateway/close-all`: closes every client connection of the gateway(s)
/// now, abruptly.
pub(crate) async fn close_all_connections(State(state): State<AdminState>) -> Json<ClosedAll> {
    let connections = state.faults.close_all_connections();
    tracing::debug!(connections, "admin: every gateway connection told to close");
    Json(ClosedAll { connections })
}

/// `POST /admin/faults/backend/restart`'s optional body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Restart {
    /// How long the backend stays down before it starts again.
    #[serde(default)]
    down_for_ms: u64,
}

/// What a backend restart did.
#[derive(Debug, Serialize)]
pub(crate) struct Restarted {
    down_for_ms: u64,
    /// From the request to the backend answering again.
    took_ms: u64,
}

/// `POST /admin/faults/backend/restart`: restarts the standalone backend; answers once it is
/// back. The body is optional.
pub(crate) async fn restart_backend(
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<Json<Restarted>, ApiError> {
    let restart: Restart = if body.iter().all(u8::is_ascii_whitespace) {
        Restart::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
    };
    if state.cluster.is_some() {
        return Err(ApiError::not_found(
            "the emulator is in cluster mode: restart a node with POST \
             /admin/cluster/nodes/{index}/restart",
        ));
    }
    let started = Instant::now();
    state
        .backend
        .restart(Duration::from_millis(restart.down_for_ms))
        .await
        .map_err(|e| match e {
            Error::Config(message) => ApiError::bad_request(message),
            other => ApiError::from(other),
        })?;
    Stats::bump(&state.stats.backend_restarts);
    let took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::debug!(
        down_for_ms = restart.down_for_ms,
        took_ms,
        "admin: backend restarted"
    );
    Ok(Json(Restarted {
        down_for_ms: restart.down_for_ms,
        took_ms,
    }))
}
