//! The emulator as a Kubernetes cluster's OIDC issuer (the AKS "OIDC issuer" feature): the
//! discovery document and JWKS that Entra fetches to verify projected service-account tokens
//! presented as federated assertions.
//!
//! - `GET /oidc/{id}/.well-known/openid-configuration`
//! - `GET /oidc/{id}/openid/v1/jwks`
//!
//! The issuer URL is `{authority}/oidc/{id}/` (with the trailing slash, as AKS issuers have);
//! only issuers registered with [`crate::directory::Directory::trust_oidc_issuer`] answer, any
//! other `{id}` is a 404.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::errors::json_reply;
use super::IdentityState;

/// The issuer URL for `id` on this authority.
/// (Public as `identity::oidc_issuer_url`.)
pub fn issuer_url(authority: &str, id: &str) -> String {
    format!("{}/oidc/{id}/", authority.trim_end_matches('/'))
}

fn not_found() -> Response {
    json_reply(
        StatusCode::NOT_FOUND,
        &json!({"error": "not_found", "error_description": "no OIDC issuer here"}),
    )
}

/// `GET /oidc/{id}/.well-known/openid-configuration`.
pub(crate) async fn openid_configuration(
    State(state): State<IdentityState>,
    Path(id): Path<String>,
) -> Response {
    let issuer = issuer_url(state.authority(), &id);
    if state.directory.oidc_issuer_keys(&issuer).is_none() {
        return not_found();
    }
    let body = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}openid/v1/jwks"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    });
    json_reply(StatusCode::OK, &body)
}

/// `GET /oidc/{id}/openid/v1/jwks`.
pub(crate) async fn jwks(State(state): State<IdentityState>, Path(id): Path<String>) -> Response {
    let issuer = issuer_url(state.authority(), &id);
    match state.directory.oidc_issuer_keys(&issuer) {
        Some(keys) => json_reply(StatusCode::OK, &json!({ "keys": keys })),
        None => not_found(),
    }
}
