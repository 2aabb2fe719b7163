//! Injected faults on token requests, so clients' retry logic can be tested.
//!
//! Every token request (token endpoint and managed-identity endpoints) consults
//! [`crate::faults::Faults::identity`] before anything else. The failure replies are shaped as
//! the endpoint they imitate would shape them: Entra's AADSTS JSON for the token endpoint,
//! `{"statusCode","message"}` for App Service, `{"error","error_description"}` for IMDS.
//!
//! [`IdentityFault::WrongAudience`] is not a failure: the request is served, and every place
//! that signs an access token asks [`audience`] which `aud` to put in it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::errors::{json_reply, set_json_no_store, EntraError};
use super::IdentityState;
use crate::faults::IdentityFault;

/// Which endpoint's error shape a fault reply takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// The Entra token endpoint.
    Entra,
    /// The App Service managed-identity endpoint.
    AppService,
    /// The VM instance metadata service.
    Imds,
}

/// A body that claims to be JSON and is not: a reply cut off mid-way.
const MALFORMED_BODY: &str = "{\"token_type\":\"Bearer\",\"expires_in\":";

/// Applies the fault in force: `Some(reply)` when the request must fail, `None` when it must
/// be served (after waiting, for [`IdentityFault::Slow`]).
pub(crate) async fn apply(
    state: &IdentityState,
    flavor: Flavor,
    correlation_id: &str,
) -> Option<Response> {
    let fault = state.faults.identity();
    let (status, retry_after) = match fault {
        IdentityFault::Slow(delay) => {
            tokio::time::sleep(delay).await;
            return None;
        }
        IdentityFault::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, None),
        IdentityFault::TooManyRequests { retry_after_secs } => {
            (StatusCode::TOO_MANY_REQUESTS, Some(retry_after_secs))
        }
        IdentityFault::InternalError => (StatusCode::INTERNAL_SERVER_ERROR, None),
        IdentityFault::MalformedJson => {
            let mut response = (StatusCode::OK, MALFORMED_BODY).into_response();
            set_json_no_store(response.headers_mut());
            return Some(response);
        }
        IdentityFault::Status {
            code,
            retry_after_secs,
        } => (
            StatusCode::from_u16(code)
                .ok()
                .filter(|s| s.is_client_error() || s.is_server_error())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            retry_after_secs,
        ),
        IdentityFault::None | IdentityFault::WrongAudience { .. } => return None,
    };
    let mut response = match flavor {
        Flavor::Entra => {
            entra_reply(status, retry_after).respond(state.authority(), correlation_id)
        }
        Flavor::AppService => {
            let body = json!({
                "statusCode": status.as_u16(),
                "message": plain_message(status, retry_after),
                "correlationId": correlation_id,
            });
            json_reply(status, &body)
        }
        Flavor::Imds => {
            let error = match status {
                StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
                StatusCode::SERVICE_UNAVAILABLE => "service_unavailable",
                StatusCode::NOT_FOUND => "not_found",
                StatusCode::GONE => "gone",
                _ => "unknown",
            };
            let body = json!({
                "error": error,
                "error_description": plain_message(status, retry_after),
            });
            json_reply(status, &body)
        }
    };
    if let Some(secs) = retry_after {
        if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    Some(response)
}

/// The `aud` to put in an access token requested for `requested`: the wrong audience while
/// [`IdentityFault::WrongAudience`] is in force, else `requested`.
pub(crate) fn audience(state: &IdentityState, requested: &str) -> String {
    match state.faults.identity() {
        IdentityFault::WrongAudience { audience } => audience,
        _ => requested.to_string(),
    }
}

/// The Entra error for an injected failure. The codes are Entra's own for these situations:
/// AADSTS90033 (transient error), AADSTS90055 (throttled), AADSTS50000 (token issuance error).
fn entra_reply(status: StatusCode, retry_after: Option<u64>) -> EntraError {
    match status {
        StatusCode::SERVICE_UNAVAILABLE => EntraError::new(
            status,
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
        ),
        StatusCode::TOO_MANY_REQUESTS => EntraError::new(
            status,
            "temporarily_unavailable",
            90055,
            plain_message(status, retry_after),
        ),
        _ => EntraError::new(
            status,
            "server_error",
            50000,
            "There was an error issuing a token or an issue with our sign-in service.",
        ),
    }
}

/// A human message for an injected failure.
fn plain_message(status: StatusCode, retry_after: Option<u64>) -> String {
    match (status, retry_after) {
        (StatusCode::TOO_MANY_REQUESTS, Some(secs)) => {
            format!(
                "Too many requests; the token service is throttling. Retry after {secs} seconds."
            )
        }
        (StatusCode::SERVICE_UNAVAILABLE, _) => {
            "The token service is temporarily unavailable. Please try again.".to_string()
        }
        (StatusCode::NOT_FOUND, _) => {
            "The identity endpoint is being updated (404). Please try again.".to_string()
        }
        (StatusCode::GONE, _) => {
            "The identity endpoint is being updated and will be back within 70 seconds (410)."
                .to_string()
        }
        (s, _) if s.is_client_error() => format!("The request failed with HTTP {}.", s.as_u16()),
        _ => "The token service had an internal error.".to_string(),
    }
}
