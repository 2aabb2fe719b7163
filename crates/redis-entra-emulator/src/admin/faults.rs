//! `/admin/faults/identity`: how the token and managed-identity endpoints misbehave.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{AdminState, JsonBody};
use crate::faults::IdentityFault;

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

/// A gateway fault as JSON: `{"refuse_reauth": true}` makes every re-`AUTH` on an already
/// authenticated connection fail with `WRONGPASS` (first `AUTH`s still succeed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GatewayFaultBody {
    refuse_reauth: bool,
}

/// `GET /admin/faults/gateway`.
pub(crate) async fn get_gateway_fault(State(state): State<AdminState>) -> Json<GatewayFaultBody> {
    Json(GatewayFaultBody {
        refuse_reauth: state.faults.refuse_reauth(),
    })
}

/// `PUT /admin/faults/gateway`.
pub(crate) async fn set_gateway_fault(
    State(state): State<AdminState>,
    JsonBody(body): JsonBody<GatewayFaultBody>,
) -> Json<GatewayFaultBody> {
    tracing::debug!(fault = ?body, "admin: gateway fault set");
    state.faults.set_refuse_reauth(body.refuse_reauth);
    Json(body)
}
