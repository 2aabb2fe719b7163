//! The App Service managed-identity protocol (also Functions and Container Apps), and the
//! choice of identity that every managed-identity shape shares.
//!
//! `GET /msi/token?api-version=2019-08-01&resource=<uri>[&client_id=|&principal_id=|&object_id=|&mi_res_id=]`
//! with header `X-IDENTITY-HEADER: $IDENTITY_HEADER`. The reply is
//! `{"access_token","expires_on":"<epoch string>","resource","token_type":"Bearer","client_id"}`.
//! Other headers (Python's azure-identity also sends `Metadata: true`) are ignored.
//!
//! Errors take App Service's shape, `{"statusCode":N,"message":"…","correlationId":"…"}`.
//! A missing or wrong `X-IDENTITY-HEADER` is a 401: App Service's behaviour here is not
//! documented; a 401 for the 2019-08-01 protocol is what users reported observing
//! (Azure/azure-sdk-for-js#11595), and no client retries it. An identity that is not attached
//! is App Service's 400 "Unable to load the proper Managed Identity.".

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;
use uuid::Uuid;

use super::client_auth::constant_time_eq;
use super::errors::{json_reply, resource_not_found_text};
use super::fault_injection::{self, Flavor};
use super::form::FormParams;
use super::resource::audience_for_resource;
use super::IdentityState;
use crate::directory::{Directory, Principal, PrincipalKind};
use crate::signing::IssuedToken;
use crate::stats::Stats;

/// The App Service protocol version the emulator speaks.
const APP_SERVICE_API_VERSION: &str = "2019-08-01";

/// How a request names a user-assigned identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Selector<'a> {
    /// By client id: `client_id`.
    Client(&'a str),
    /// By object id: `principal_id` / `object_id`.
    Object(&'a str),
    /// By ARM resource id: `mi_res_id` (App Service) / `msi_res_id` (IMDS).
    Resource(&'a str),
}

/// Why no identity could be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SelectError {
    /// More than one selector was given.
    Conflicting,
    /// No managed identity matches (or none is system-assigned, without a selector).
    NotFound,
}

/// The managed identity a request selects: the system-assigned one without a selector, else
/// the managed identity (system- or user-assigned) the selector names, provided it is attached
/// to the emulated compute resource ([`Directory::is_attached`]). Service principals are
/// never chosen: they are not attached to a compute resource.
pub(crate) fn select_identity(
    directory: &Directory,
    selectors: &[Selector<'_>],
) -> Result<Principal, SelectError> {
    let found = match selectors {
        [] => directory.system_assigned_identity(),
        [Selector::Client(id)] => directory.by_client_id(id),
        [Selector::Object(id)] => directory.by_object_id(id),
        [Selector::Resource(id)] => directory.by_resource_id(id),
        _ => return Err(SelectError::Conflicting),
    };
    found
        .filter(|p| {
            matches!(
                p.kind,
                PrincipalKind::SystemAssignedIdentity | PrincipalKind::UserAssignedIdentity
            ) && directory.is_attached(&p.object_id)
        })
        .ok_or(SelectError::NotFound)
}

/// Issues a token for a managed identity and counts it; `None` (logged) if signing failed.
pub(crate) fn issue_counted(
    state: &IdentityState,
    principal: &Principal,
    audience: &str,
) -> Option<IssuedToken> {
    let audience = fault_injection::audience(state, audience);
    match state.issuer.issue(principal, &audience) {
        Ok(issued) => {
            Stats::bump(&state.stats.tokens_issued);
            Some(issued)
        }
        Err(e) => {
            tracing::warn!(error = %e, "the emulator could not sign a token");
            None
        }
    }
}

/// App Service's error reply.
fn app_service_error(status: StatusCode, message: &str, correlation_id: &str) -> Response {
    json_reply(
        status,
        &json!({
            "statusCode": status.as_u16(),
            "message": message,
            "correlationId": correlation_id,
        }),
    )
}

/// `GET /msi/token` (App Service protocol 2019-08-01).
pub(crate) async fn app_service_token(
    State(state): State<IdentityState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    Stats::bump(&state.stats.token_requests);
    state
        .stats
        .token_requests_by_grant
        .bump("app_service_managed_identity");
    let correlation = Uuid::new_v4().to_string();
    if let Some(reply) = fault_injection::apply(&state, Flavor::AppService, &correlation).await {
        log(None, "injected fault", reply.status());
        return reply;
    }
    let params = FormParams::parse(query.unwrap_or_default().as_bytes());
    let (client_id, result) = serve_app_service(&state, &params, &headers);
    match result {
        Ok(reply) => {
            log(client_id.as_deref(), "token issued", reply.status());
            reply
        }
        Err((status, message)) => {
            log(client_id.as_deref(), &message, status);
            app_service_error(status, &message, &correlation)
        }
    }
}

/// The App Service protocol's checks and reply; returns the chosen identity's client id for
/// the log.
fn serve_app_service(
    state: &IdentityState,
    params: &FormParams,
    headers: &HeaderMap,
) -> (Option<String>, Result<Response, (StatusCode, String)>) {
    let header_ok = headers
        .get("x-identity-header")
        .is_some_and(|v| constant_time_eq(v.as_bytes(), state.identity_header.as_bytes()));
    if !header_ok {
        let message = if headers.contains_key("x-identity-header") {
            "The X-IDENTITY-HEADER value is not this app's IDENTITY_HEADER."
        } else {
            "The request lacks the X-IDENTITY-HEADER header; send the value of IDENTITY_HEADER."
        };
        return (None, Err((StatusCode::UNAUTHORIZED, message.to_string())));
    }
    let bad_request = |message: String| (None, Err((StatusCode::BAD_REQUEST, message)));
    let Some(api_version) = params.get("api-version") else {
        return bad_request(format!(
            "The api-version query parameter is required; use api-version={APP_SERVICE_API_VERSION}."
        ));
    };
    if api_version != APP_SERVICE_API_VERSION {
        return bad_request(format!(
            "api-version '{api_version}' is not supported here; use \
             api-version={APP_SERVICE_API_VERSION} (with the X-IDENTITY-HEADER header)."
        ));
    }
    let Some(resource) = params.get("resource") else {
        return bad_request(
            "The resource query parameter is required (e.g. resource=https://redis.azure.com)."
                .to_string(),
        );
    };
    let mut selectors = Vec::new();
    if let Some(id) = params.get("client_id") {
        selectors.push(Selector::Client(id));
    }
    for name in ["principal_id", "object_id"] {
        if let Some(id) = params.get(name) {
            selectors.push(Selector::Object(id));
        }
    }
    if let Some(id) = params.get("mi_res_id") {
        selectors.push(Selector::Resource(id));
    }
    let principal = match select_identity(&state.directory, &selectors) {
        Ok(principal) => principal,
        Err(SelectError::Conflicting) => {
            return bad_request(
                "Use at most one of client_id, principal_id, object_id and mi_res_id.".to_string(),
            )
        }
        Err(SelectError::NotFound) => {
            return bad_request("Unable to load the proper Managed Identity.".to_string())
        }
    };
    let client_id = Some(principal.client_id.clone());
    let Some(audience) = audience_for_resource(resource) else {
        let text = resource_not_found_text(resource, state.directory.tenant_id());
        return (
            client_id,
            Err((StatusCode::BAD_REQUEST, format!("AADSTS500011: {text}"))),
        );
    };
    let Some(issued) = issue_counted(state, &principal, &audience) else {
        return (
            client_id,
            Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                "The token could not be signed.".to_string(),
            )),
        );
    };
    let body = json!({
        "access_token": issued.token,
        "expires_on": issued.expires_on.to_string(),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": principal.client_id,
    });
    (client_id, Ok(json_reply(StatusCode::OK, &body)))
}

/// The debug line of one managed-identity request.
fn log(client_id: Option<&str>, outcome: &str, status: StatusCode) {
    tracing::debug!(
        method = "GET",
        path = "/msi/token",
        client_id = client_id.unwrap_or("-"),
        outcome,
        status = status.as_u16(),
        "managed identity token request"
    );
}
