//! The admin interface: the emulator's control plane over HTTP, for tests and tools — what the
//! Azure portal, `az` and ARM do for a real cache and tenant.
//!
//! It listens on its own **plain-HTTP listener on 127.0.0.1** (an ephemeral port), not on the
//! fake Entra ID's HTTPS listener, so that the authority host serves exactly Entra's paths and
//! so that `curl` needs no CA. Its URL is [`Emulator::admin_url`](crate::Emulator::admin_url)
//! (`REDIS_ENTRA_EMULATOR_ADMIN` in the env file). Every request needs
//! `Authorization: Bearer <key>` (but `/health` and `/metrics`, which hold no secret), the key being generated at start
//! ([`Emulator::admin_key`](crate::Emulator::admin_key), `REDIS_ENTRA_EMULATOR_ADMIN_KEY`);
//! without it the answer is 401, so nothing else on the machine drives the emulator by
//! accident.
//!
//! JSON in and out. A body that is not JSON, has a field of the wrong type, lacks one or has one
//! the endpoint does not know gets a 400; errors are `{"error": code, "message": text}`.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | `GET` | `/health` (no key) | | 200 `{"status": "ready", "listeners"}` when every listener accepts a connection and the backend answers `PING`; else 503 `{"status": "unavailable", "failing": [what], "listeners"}` |
//! | `GET` | `/metrics` (no key) | | the counters in Prometheus' text format, `redis_entra_emulator_<name>_total` (by `grant` and by `reason` for the two labelled ones) |
//! | `GET` | `/admin/stats` | | the counters as JSON: `token_requests`, `tokens_issued`, `connections_accepted`, `auth_succeeded`, `auth_failed`, `closed_at_expiry`, `closed_keys_disabled`, `closed_key_revoked`, `closed_by_fault`, `closed_by_backend`, `backend_restarts`, `token_requests_by_grant` {grant: n}, `auth_refused_by_reason` {reason: n} |
//! | `GET` | `/admin/identities` | | `[identity]` (no secrets) |
//! | `POST` | `/admin/identities` | `{"kind": "service-principal" \| "system-assigned-identity" \| "user-assigned-identity", "display_name"?, "attached"?}` (a managed identity is attached to the emulated compute resource unless `"attached": false`) | 201 `identity`, with `secret` for a service principal (only here) |
//! | `GET` | `/admin/identities/{object_id}` | | `identity` |
//! | `GET` | `/admin/policies` | | `[{"name","rules","builtin","backend_user"}]` (Azure Managed Redis' profile: `default` only) |
//! | `POST` | `/admin/policies` | `{"name", "rules"}` | 201 (new) or 200 (updated) policy; 400 `invalid_policy` with Redis' own text for rules Redis refuses, and always under Azure Managed Redis' profile (no custom policies) |
//! | `GET` | `/admin/assignments` | | `[{"object_id","policy","rules","alias"}]` |
//! | `PUT` | `/admin/assignments/{object_id}` | `{"policy": name, "rules"?, "alias"?}` | the assignment (`rules` defines or updates the custom policy `policy` first; under Azure Managed Redis' profile `policy` must be `default` and `rules` is the assignment's own access string) |
//! | `DELETE` | `/admin/assignments/{object_id}` | | 204, or 404 |
//! | `GET` | `/admin/access-keys` | | `{"enabled","primary","secondary"}` |
//! | `PUT` | `/admin/access-keys` | `{"enabled": bool}` | as `GET`; disabling closes access-key connections (under Azure Managed Redis' profile any change closes every connection, moments later) |
//! | `POST` | `/admin/access-keys/regenerate` | `{"key": "primary" \| "secondary"}` | as `GET` |
//! | `GET`, `PUT` | `/admin/token-lifetime` | `{"lifetime_secs": n}` | `{"lifetime_secs"}` |
//! | `POST` | `/admin/tokens` | `{"oid", "aud"?, "lifetime_secs"?, "claims"?}` | `{"access_token","token_type","expires_on","expires_in","claims"}` |
//! | `GET` | `/admin/cluster/nodes` | | `[{"index","id","host","port","backend_port","bus_port"}]` (cluster mode; else 404) |
//! | `POST` | `/admin/cluster/nodes/{index}/restart` | | the node, once it is back and the cluster healthy (its data kept: `SHUTDOWN SAVE`) |
//! | `POST` | `/admin/cluster/slots/{slot}/migrate` | `{"to": index}` | `{"slot","from","to","keys"}`, once the slot and its keys moved |
//! | `GET`, `PUT` | `/admin/faults/identity` | `{"fault": "none" \| "unavailable" \| "internal-error" \| "malformed-json"}`, `{"fault": "too-many-requests", "retry_after_secs"}`, `{"fault": "slow", "ms"}`, `{"fault": "status", "code", "retry_after_secs"?}`, `{"fault": "wrong-audience", "audience"?}` | the fault in force |
//! | `GET`, `PUT` | `/admin/faults/gateway` | `{"refuse_reauth"?: bool, "random_close"?: {"per_connection_per_second": rate} \| null}` (fields left out stay as they are) | the faults in force (`random_close` left out when off) |
//! | `POST` | `/admin/faults/gateway/close-all` | | `{"connections": n}`, once every client connection was told to close |
//! | `POST` | `/admin/faults/backend/restart` | optional `{"down_for_ms": n}` | `{"down_for_ms","took_ms"}`, once the backend is back (standalone mode; 404 in cluster mode) |
//!
//! An identity is `{"display_name","kind","client_id","object_id","resource_id","assignment"}`,
//! `assignment` being `null` or `{"policy","rules","alias"}`.
//!
//! `POST /admin/tokens` signs with the tenant's key: claims as the token endpoint would issue
//! for that object id (the identity's `appid` and `xms_mirid` when it exists), `aud` defaulting
//! to `https://redis.azure.com`, living `lifetime_secs` (default: the configured lifetime;
//! negative for a token that has already expired), then `claims` merged over them (a `null`
//! removes a claim, e.g. `{"oid": null}`).
//!
//! Fault names also accept their Rust spelling (`TooManyRequests`, …).
//!
//! The faults, in short (see [`crate::faults`]): `wrong-audience` issues otherwise-valid tokens
//! whose `aud` is `audience` (default `https://management.azure.com/`), which the gateway refuses
//! with `WRONGPASS`; `refuse_reauth` refuses every re-`AUTH`; `random_close` closes each
//! authenticated connection abruptly (TCP close, no reply, no TLS `close_notify`) after an
//! exponentially distributed delay of mean `1 / per_connection_per_second` seconds (0 or `null`
//! turns it off); `close-all` closes every client connection at once, the same way; and
//! `backend/restart` restarts the backend `redis-server` (`SHUTDOWN SAVE`, down for
//! `down_for_ms`, then up again with its data and users).
//!
//! Logs name the method, path and status only: never the bearer key, a body, a secret or a
//! token.

mod access_keys;
mod api;
mod assignments;
mod cluster;
mod faults;
mod identities;
mod observe;
mod policies;
mod tokens;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post, put};
use axum::Router;

pub use api::{ApiError, JsonBody};

use crate::backend::Backend;
use crate::cluster::Cluster;
use crate::directory::Directory;
use crate::faults::Faults;
use crate::signing::TokenIssuer;
use crate::stats::Stats;

/// What the admin endpoints act on.
#[derive(Clone)]
pub struct AdminState {
    /// The tenant and the cache's data-access configuration.
    pub directory: Arc<Directory>,
    /// The token issuer (lifetime, minting).
    pub issuer: Arc<TokenIssuer>,
    /// The faults in force.
    pub faults: Arc<Faults>,
    /// The backend, where custom policies become ACL users.
    pub backend: Arc<Backend>,
    /// The cluster, in cluster mode.
    pub cluster: Option<Arc<Cluster>>,
    /// The emulator's counters (backend restarts are counted here).
    pub stats: Arc<Stats>,
    /// The bearer key every request must present (a secret: `Debug` redacts it).
    pub admin_key: String,
    /// The longest token lifetime the gateway accepts: `PUT /admin/token-lifetime` refuses a
    /// longer one (its tokens would all get `WRONGPASS`).
    pub max_token_lifetime: Duration,
    /// The emulator's listeners, by name, which `GET /health` checks.
    pub listeners: Vec<(&'static str, std::net::SocketAddr)>,
    /// The Azure product played: it decides the access-policy model (see
    /// [`profile::policies`](crate::profile::policies)).
    pub profile: crate::unsupported::Profile,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("tenant_id", &self.directory.tenant_id())
            .field("admin_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A fresh admin key: 32 random bytes, base64url.
pub fn generate_admin_key() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    crate::signing::base64_url_nopad(&bytes)
}

/// The admin routes (see the module documentation), behind the bearer check, and the open
/// `/health` and `/metrics`.
pub fn router(state: AdminState) -> Router {
    let open = Router::new()
        .route("/health", get(observe::health))
        .route("/metrics", get(observe::metrics))
        .layer(axum::middleware::from_fn(api::log_request))
        .with_state(state.clone());
    Router::new()
        .route("/admin/stats", get(observe::stats))
        .route(
            "/admin/identities",
            get(identities::list).post(identities::create),
        )
        .route("/admin/identities/{object_id}", get(identities::get_one))
        .route(
            "/admin/policies",
            get(policies::list).post(policies::create),
        )
        .route("/admin/assignments", get(assignments::list))
        .route(
            "/admin/assignments/{object_id}",
            put(assignments::put).delete(assignments::delete),
        )
        .route(
            "/admin/access-keys",
            get(access_keys::get_keys).put(access_keys::set_enabled),
        )
        .route(
            "/admin/access-keys/regenerate",
            post(access_keys::regenerate),
        )
        .route(
            "/admin/token-lifetime",
            get(tokens::get_lifetime).put(tokens::set_lifetime),
        )
        .route("/admin/tokens", post(tokens::mint))
        .route("/admin/cluster/nodes", get(cluster::nodes))
        .route(
            "/admin/cluster/nodes/{index}/restart",
            post(cluster::restart),
        )
        .route(
            "/admin/cluster/slots/{slot}/migrate",
            post(cluster::migrate),
        )
        .route(
            "/admin/faults/identity",
            get(faults::get_fault).put(faults::set_fault),
        )
        .route(
            "/admin/faults/gateway",
            get(faults::get_gateway_fault).put(faults::set_gateway_fault),
        )
        .route(
            "/admin/faults/gateway/close-all",
            post(faults::close_all_connections),
        )
        .route(
            "/admin/faults/backend/restart",
            post(faults::restart_backend),
        )
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            api::require_key,
        ))
        .layer(axum::middleware::from_fn(api::log_request))
        .with_state(state)
        .merge(open)
}
