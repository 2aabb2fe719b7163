//! `/admin/tokens` (mint a token with chosen claims) and `/admin/token-lifetime`.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{AdminState, ApiError, JsonBody};
use crate::directory::{Principal, PrincipalKind, REDIS_RESOURCE};

/// The longest token lifetime the admin interface sets: a year.
const MAX_LIFETIME_SECS: u64 = 365 * 24 * 3600;

/// `POST /admin/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MintRequest {
    /// The object id the token is for (an identity of the tenant or any other).
    oid: String,
    /// The audience (default `https://redis.azure.com`).
    #[serde(default)]
    aud: Option<String>,
    /// Seconds from now to `exp` (default: the configured lifetime; negative: expired).
    #[serde(default)]
    lifetime_secs: Option<i64>,
    /// Claims merged over the usual ones; `null` removes one.
    #[serde(default)]
    claims: Option<Map<String, Value>>,
}

/// A minted token (a secret: `Debug` redacts it).
#[derive(Serialize)]
pub(crate) struct Minted {
    access_token: String,
    token_type: &'static str,
    expires_on: i64,
    expires_in: i64,
    claims: Value,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("access_token", &"<redacted>")
            .field("expires_on", &self.expires_on)
            .finish_non_exhaustive()
    }
}

/// `POST /admin/tokens`: a token signed with the tenant's key.
pub(crate) async fn mint(
    State(state): State<AdminState>,
    JsonBody(body): JsonBody<MintRequest>,
) -> Result<Json<Minted>, ApiError> {
    if body.oid.trim().is_empty() {
        return Err(ApiError::bad_request(
            "oid is empty: give an object id (to mint a token without one, add \"claims\": {\"oid\": null})",
        ));
    }
    let principal = state
        .directory
        .by_object_id(&body.oid)
        .unwrap_or_else(|| Principal {
            display_name: String::new(),
            client_id: uuid::Uuid::new_v4().to_string(),
            object_id: body.oid.clone(),
            kind: PrincipalKind::ServicePrincipal,
            secret: None,
            resource_id: None,
        });
    let lifetime = body
        .lifetime_secs
        .unwrap_or_else(|| i64::try_from(state.issuer.lifetime().as_secs()).unwrap_or(i64::MAX));
    let audience = body.aud.as_deref().unwrap_or(REDIS_RESOURCE);
    let mut claims = state.issuer.claims_for(&principal, audience, lifetime);
    if let (Some(obj), Some(extra)) = (claims.as_object_mut(), body.claims) {
        for (name, value) in extra {
            if value.is_null() {
                obj.remove(&name);
            } else {
                obj.insert(name, value);
            }
        }
    }
    let access_token = state.issuer.sign(&claims)?;
    let expires_on = claims["exp"].as_i64().unwrap_or(0);
    let now = i64::try_from(crate::signing::now_secs()).unwrap_or(i64::MAX);
    tracing::debug!(oid = %body.oid, lifetime, "admin: token minted");
    Ok(Json(Minted {
        access_token,
        token_type: "Bearer",
        expires_on,
        expires_in: expires_on.saturating_sub(now),
        claims,
    }))
}

/// `/admin/token-lifetime`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Lifetime {
    lifetime_secs: u64,
}

/// `GET /admin/token-lifetime`.
pub(crate) async fn get_lifetime(State(state): State<AdminState>) -> Json<Lifetime> {
    Json(Lifetime {
        lifetime_secs: state.issuer.lifetime().as_secs(),
    })
}

/// `PUT /admin/token-lifetime`: the lifetime of tokens issued from now on.
pub(crate) async fn set_lifetime(
    State(state): State<AdminState>,
    JsonBody(body): JsonBody<Lifetime>,
) -> Result<Json<Lifetime>, ApiError> {
    let max = MAX_LIFETIME_SECS.min(state.max_token_lifetime.as_secs());
    if !(1..=max).contains(&body.lifetime_secs) {
        return Err(ApiError::bad_request(format!(
            "lifetime_secs must be between 1 and {max}, the longest lifetime the gateway \
             accepts (the emulator's --max-token-lifetime)"
        )));
    }
    state
        .issuer
        .set_lifetime(Duration::from_secs(body.lifetime_secs));
    tracing::debug!(
        lifetime_secs = body.lifetime_secs,
        "admin: token lifetime set"
    );
    Ok(Json(body))
}
