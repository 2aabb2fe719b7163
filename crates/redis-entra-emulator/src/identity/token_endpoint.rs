//! The v2 token endpoint: `POST /{tenant}/oauth2/v2.0/token`, client-credentials grant.
//!
//! The request is checked in the order Entra checks it, each failure answered with Entra's
//! code: the tenant (AADSTS90002; AADSTS50059 for `common`/`organizations`), the form body
//! (AADSTS90004), `grant_type` (AADSTS900144, AADSTS70003), `client_id` and `scope`
//! (AADSTS900144), the scope's shape (AADSTS70011, AADSTS1002012), the client and its
//! credential (AADSTS700016, AADSTS7000215, AADSTS7000218, AADSTS700027), then the resource
//! (AADSTS500011). Parameters MSAL adds (`client_info`, `x-client-*`, …) are ignored.
//!
//! Success is `200 {"token_type":"Bearer","expires_in":N,"ext_expires_in":N,"access_token":"…"}`
//! with `Cache-Control: no-store`; every request is a fresh token (the emulator caches nothing).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;
use uuid::Uuid;

use super::client_auth::{authenticate_at, ClientAuth};
use super::errors::{correlation_id, json_reply, set_request_ids, EntraError};
use super::fault_injection::{self, Flavor};
use super::form::read_form;
use super::resource::{audience_for_scope, ScopeError};
use super::tenant::TenantRef;
use super::IdentityState;
use crate::stats::Stats;

/// The only grant this endpoint serves so far.
const CLIENT_CREDENTIALS: &str = "client_credentials";

/// What the endpoint did with a request, for the log line.
struct Outcome {
    /// The client id the request named, if it named one.
    client_id: Option<String>,
    /// The token reply, or the error.
    result: Result<Response, EntraError>,
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub(crate) async fn token(
    State(state): State<IdentityState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    Stats::bump(&state.stats.token_requests);
    let correlation = correlation_id(&headers);
    if let Some(reply) = fault_injection::apply(&state, Flavor::Entra, &correlation).await {
        tracing::debug!(
            method = "POST",
            path = "/{tenant}/oauth2/v2.0/token",
            %tenant,
            outcome = "injected fault",
            status = reply.status().as_u16(),
            "token request"
        );
        return reply;
    }
    let outcome = client_credentials(&state, &tenant, &headers, body, &correlation).await;
    let client_id = outcome.client_id.as_deref().unwrap_or("-");
    match outcome.result {
        Ok(reply) => {
            tracing::debug!(
                method = "POST",
                path = "/{tenant}/oauth2/v2.0/token",
                %tenant,
                client_id,
                outcome = "token issued",
                "token request"
            );
            reply
        }
        Err(error) => {
            tracing::debug!(
                method = "POST",
                path = "/{tenant}/oauth2/v2.0/token",
                %tenant,
                client_id,
                outcome = %format!("refused: {} AADSTS{}", error.error, error.code),
                status = error.status.as_u16(),
                "token request"
            );
            error.respond(state.authority(), &correlation)
        }
    }
}

/// Runs the client-credentials grant.
async fn client_credentials(
    state: &IdentityState,
    tenant: &str,
    headers: &HeaderMap,
    body: Body,
    correlation: &str,
) -> Outcome {
    let mut client_id = None;
    let result = async {
        match TenantRef::resolve(&state.directory, tenant) {
            TenantRef::Own => {}
            TenantRef::MultiTenant => return Err(EntraError::no_tenant_information()),
            TenantRef::Unknown => return Err(EntraError::tenant_not_found(tenant)),
        }
        let form = read_form(headers, body).await?;
        let grant_type = form
            .get("grant_type")
            .ok_or_else(|| EntraError::missing_parameter("grant_type"))?;
        state
            .stats
            .token_requests_by_grant
            .bump(grant_label(grant_type));
        if super::user_grants::handles(grant_type) {
            client_id = form.get("client_id").map(str::to_string);
            return super::user_grants::token(state, grant_type, &form).await;
        }
        if grant_type != CLIENT_CREDENTIALS {
            return Err(EntraError::unsupported_grant_type(grant_type));
        }
        let auth = ClientAuth::from_request(headers, &form)?;
        client_id.clone_from(&auth.client_id);
        let id = auth
            .client_id
            .as_deref()
            .ok_or_else(|| EntraError::missing_parameter("client_id"))?;
        let scope = form
            .get("scope")
            .ok_or_else(|| EntraError::missing_parameter("scope"))?;
        let audience = match audience_for_scope(scope) {
            Ok(audience) => Ok(audience),
            Err(ScopeError::Invalid) => return Err(EntraError::invalid_scope(scope)),
            Err(ScopeError::NotDefault) => return Err(EntraError::scope_without_default(scope)),
            Err(ScopeError::UnknownResource(resource)) => Err(resource),
        };
        let principal = authenticate_at(&state.directory, state.authority(), id, &auth.credential)?;
        let audience = audience.map_err(|resource| {
            EntraError::resource_not_found(&resource, state.directory.tenant_id())
        })?;
        let audience = fault_injection::audience(state, &audience);
        let issued = state.issuer.issue(&principal, &audience).map_err(|e| {
            tracing::warn!(error = %e, "the emulator could not sign a token");
            EntraError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                50000,
                "There was an error issuing a token or an issue with our sign-in service.",
            )
        })?;
        Stats::bump(&state.stats.tokens_issued);
        let body = json!({
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "ext_expires_in": issued.expires_in,
            "access_token": issued.token,
        });
        let mut reply = json_reply(StatusCode::OK, &body);
        set_request_ids(
            reply.headers_mut(),
            &Uuid::new_v4().to_string(),
            correlation,
        );
        Ok(reply)
    }
    .await;
    Outcome { client_id, result }
}

/// A grant type as the counters name it (a fixed set: a client cannot add labels).
fn grant_label(grant_type: &str) -> &'static str {
    match grant_type {
        "client_credentials" => "client_credentials",
        "authorization_code" => "authorization_code",
        "refresh_token" => "refresh_token",
        "urn:ietf:params:oauth:grant-type:device_code" | "device_code" => "device_code",
        "password" => "password",
        _ => "other",
    }
}
