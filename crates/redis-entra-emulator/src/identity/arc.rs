//! Azure Arc's managed-identity endpoint (the himds agent on a connected machine), IMDS-shaped
//! behind a challenge:
//!
//! 1. `GET /metadata/identity/oauth2/token?api-version=2020-06-01&resource=…` with
//!    `Metadata: true` and no `Authorization` gets **401** with
//!    `WWW-Authenticate: Basic realm=<path>`, where `<path>` is a fresh `*.key` file (≤ 4096
//!    bytes, readable by the owner only) that the agent just wrote;
//! 2. the client repeats the request with `Authorization: Basic <file contents>` and gets
//!    IMDS's reply (`client_id`/`object_id`/`msi_res_id` select a user-assigned identity).
//!
//! A key is good for one token request, within [`ARC_KEY_LIFETIME`]; at most
//! [`ARC_KEY_CAPACITY`] are outstanding (a new challenge first drops the expired ones, then the
//! oldest, deleting their files). A wrong key is a 401 without a new challenge. The real
//! agent keeps the files in `/var/opt/azcmagent/tokens`; the emulator in its own folder, so
//! SDKs that insist on that folder (Python's azure-identity) cannot be pointed at it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::json;
use uuid::Uuid;

use super::client_auth::constant_time_eq;
use super::errors::json_reply;
use super::fault_injection::{self, Flavor};
use super::form::FormParams;
use super::imds::serve_imds;
use super::IdentityState;
use crate::stats::Stats;

/// How long a challenge key is good for.
pub const ARC_KEY_LIFETIME: Duration = Duration::from_secs(60);
/// How many challenge keys may be outstanding at once.
pub const ARC_KEY_CAPACITY: usize = 256;

/// An outstanding challenge: its key file and when it was written.
struct Challenge {
    path: PathBuf,
    issued: Instant,
}

/// The Arc endpoint's state: the identity endpoints' and the outstanding challenge keys.
#[derive(Clone)]
struct ArcState {
    identity: IdentityState,
    key_dir: PathBuf,
    keys: Arc<Mutex<HashMap<String, Challenge>>>,
}

/// The Azure Arc endpoint's routes (serve them over plain HTTP on loopback, as himds does on
/// `127.0.0.1:40342`): `GET /metadata/identity/oauth2/token`. Challenge key files are written
/// into `key_dir`, which must exist.
pub fn arc_router(state: IdentityState, key_dir: PathBuf) -> Router {
    Router::new()
        .route("/metadata/identity/oauth2/token", get(arc_token))
        .layer(axum::middleware::from_fn(super::logging::log_request))
        .with_state(ArcState {
            identity: state,
            key_dir,
            keys: Arc::new(Mutex::new(HashMap::new())),
        })
}

fn error(status: StatusCode, error: &str, description: &str) -> Response {
    json_reply(
        status,
        &json!({ "error": error, "error_description": description }),
    )
}

/// `GET /metadata/identity/oauth2/token` on the Arc endpoint.
async fn arc_token(
    State(state): State<ArcState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    Stats::bump(&state.identity.stats.token_requests);
    state
        .identity
        .stats
        .token_requests_by_grant
        .bump("azure_arc");
    let correlation = Uuid::new_v4().to_string();
    if let Some(reply) = fault_injection::apply(&state.identity, Flavor::Imds, &correlation).await {
        log("injected fault", reply.status());
        return reply;
    }
    let metadata_ok = headers
        .get("metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if !metadata_ok {
        log("no Metadata header", StatusCode::BAD_REQUEST);
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request_102",
            "Required metadata header not specified",
        );
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, key)| key.trim().to_string());
    let Some(presented) = presented else {
        return challenge(&state);
    };
    let accepted = {
        let mut keys = state.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let found = keys
            .keys()
            .find(|k| constant_time_eq(k.as_bytes(), presented.as_bytes()))
            .cloned();
        match found.and_then(|k| keys.remove(&k)) {
            Some(challenge) => {
                let _ = std::fs::remove_file(&challenge.path);
                challenge.issued.elapsed() < ARC_KEY_LIFETIME
            }
            None => false,
        }
    };
    if !accepted {
        log("wrong challenge key", StatusCode::UNAUTHORIZED);
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_request",
            "The Authorization header does not hold the contents of the challenge's key file.",
        );
    }
    let params = FormParams::parse(query.unwrap_or_default().as_bytes());
    match serve_imds(&state.identity, &params, &headers).1 {
        Ok(reply) => {
            log("token issued", reply.status());
            reply
        }
        Err((status, err, description)) => {
            log(err, status);
            error(status, err, &description)
        }
    }
}

/// The 401 challenge: a fresh key file, named in `WWW-Authenticate`.
fn challenge(state: &ArcState) -> Response {
    let key = Uuid::new_v4().simple().to_string();
    let path = state
        .key_dir
        .join(format!("{}.key", Uuid::new_v4().simple()));
    if let Err(e) = crate::env_file::write_atomic(&path, &key) {
        tracing::warn!(error = %e, "the Arc endpoint could not write a challenge key file");
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unknown",
            "The agent could not write the challenge's key file.",
        );
    }
    {
        let mut keys = state.keys.lock().unwrap_or_else(PoisonError::into_inner);
        keys.retain(|_, c| {
            let live = c.issued.elapsed() < ARC_KEY_LIFETIME;
            if !live {
                let _ = std::fs::remove_file(&c.path);
            }
            live
        });
        while keys.len() >= ARC_KEY_CAPACITY {
            let oldest = keys
                .iter()
                .min_by_key(|(_, c)| c.issued)
                .map(|(k, _)| k.clone());
            match oldest.and_then(|k| keys.remove(&k)) {
                Some(c) => {
                    let _ = std::fs::remove_file(&c.path);
                }
                None => break,
            }
        }
        keys.insert(
            key,
            Challenge {
                path: path.clone(),
                issued: Instant::now(),
            },
        );
    }
    let mut reply = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Send the contents of the file named in WWW-Authenticate as Authorization: Basic.",
    );
    if let Ok(value) = HeaderValue::from_str(&format!("Basic realm={}", path.display())) {
        reply.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    log("challenged", StatusCode::UNAUTHORIZED);
    reply
}

fn log(outcome: &str, status: StatusCode) {
    tracing::debug!(
        method = "GET",
        path = "/metadata/identity/oauth2/token",
        endpoint = "azure-arc",
        outcome,
        status = status.as_u16(),
        "managed identity token request"
    );
}
