//! The Azure Instance Metadata Service's managed-identity shape (virtual machines).
//!
//! `GET /metadata/identity/oauth2/token?api-version=…&resource=…[&client_id=|&object_id=|&msi_res_id=]`
//! with header `Metadata: true` (IMDS's guard against server-side request forgery). Any
//! api-version is accepted. The reply has every value a string:
//! `{"access_token","refresh_token":"","expires_in","expires_on","not_before","resource","token_type","client_id"}`.
//! Errors are `{"error","error_description"}`: 400 `bad_request_102` "Required metadata header
//! not specified", 400 `invalid_request` "Identity not found", 400 `invalid_resource`.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;
use uuid::Uuid;

use super::errors::{json_reply, resource_not_found_text};
use super::fault_injection::{self, Flavor};
use super::form::FormParams;
use super::managed_identity::{issue_counted, select_identity, SelectError, Selector};
use super::resource::audience_for_resource;
use super::IdentityState;
use crate::stats::Stats;

/// An IMDS error: status, `error`, `error_description`.
pub(crate) type ImdsError = (StatusCode, &'static str, String);

/// `GET /metadata/identity/oauth2/token`.
pub(crate) async fn imds_token(
    State(state): State<IdentityState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    Stats::bump(&state.stats.token_requests);
    state.stats.token_requests_by_grant.bump("imds");
    let correlation = Uuid::new_v4().to_string();
    if let Some(reply) = fault_injection::apply(&state, Flavor::Imds, &correlation).await {
        log(None, "injected fault", reply.status());
        return reply;
    }
    let params = FormParams::parse(query.unwrap_or_default().as_bytes());
    let (client_id, result) = serve_imds(&state, &params, &headers);
    match result {
        Ok(reply) => {
            log(client_id.as_deref(), "token issued", reply.status());
            reply
        }
        Err((status, error, description)) => {
            log(client_id.as_deref(), error, status);
            json_reply(
                status,
                &json!({ "error": error, "error_description": description }),
            )
        }
    }
}

/// IMDS's checks and reply; returns the chosen identity's client id for the log. (Azure
/// Arc's endpoint serves the same shape once its challenge is answered.)
pub(crate) fn serve_imds(
    state: &IdentityState,
    params: &FormParams,
    headers: &HeaderMap,
) -> (Option<String>, Result<Response, ImdsError>) {
    let bad = |error: &'static str, description: String| {
        (None, Err((StatusCode::BAD_REQUEST, error, description)))
    };
    let metadata_ok = headers
        .get("metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if !metadata_ok {
        return bad(
            "bad_request_102",
            "Required metadata header not specified".to_string(),
        );
    }
    if params.get("api-version").is_none() {
        return bad(
            "invalid_request",
            "Bad request. api-version was not specified in the request (e.g. \
             api-version=2018-02-01)."
                .to_string(),
        );
    }
    let Some(resource) = params.get("resource") else {
        return bad(
            "invalid_request",
            "Required audience parameter not specified".to_string(),
        );
    };
    let mut selectors = Vec::new();
    if let Some(id) = params.get("client_id") {
        selectors.push(Selector::Client(id));
    }
    if let Some(id) = params.get("object_id") {
        selectors.push(Selector::Object(id));
    }
    if let Some(id) = params.get("msi_res_id") {
        selectors.push(Selector::Resource(id));
    }
    let principal = match select_identity(&state.directory, &selectors) {
        Ok(principal) => principal,
        Err(SelectError::Conflicting) => {
            return bad(
                "invalid_request",
                "Use at most one of client_id, object_id and msi_res_id.".to_string(),
            )
        }
        Err(SelectError::NotFound) => {
            return bad("invalid_request", "Identity not found".to_string())
        }
    };
    let client_id = Some(principal.client_id.clone());
    let Some(audience) = audience_for_resource(resource) else {
        let text = resource_not_found_text(resource, state.directory.tenant_id());
        return (
            client_id,
            Err((
                StatusCode::BAD_REQUEST,
                "invalid_resource",
                format!("AADSTS500011: {text}"),
            )),
        );
    };
    let Some(issued) = issue_counted(state, &principal, &audience) else {
        return (
            client_id,
            Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                "unknown",
                "The token could not be signed.".to_string(),
            )),
        );
    };
    let not_before = issued.expires_on.saturating_sub(issued.expires_in);
    let body = json!({
        "access_token": issued.token,
        "refresh_token": "",
        "expires_in": issued.expires_in.to_string(),
        "expires_on": issued.expires_on.to_string(),
        "not_before": not_before.to_string(),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": principal.client_id,
    });
    (client_id, Ok(json_reply(StatusCode::OK, &body)))
}

/// The debug line of one IMDS request.
fn log(client_id: Option<&str>, outcome: &str, status: StatusCode) {
    tracing::debug!(
        method = "GET",
        path = "/metadata/identity/oauth2/token",
        client_id = client_id.unwrap_or("-"),
        outcome,
        status = status.as_u16(),
        "managed identity token request"
    );
}
