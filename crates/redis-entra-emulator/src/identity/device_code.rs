//! The device authorization grant (RFC 8628), as Entra serves it:
//!
//! - `POST /{tenant}/oauth2/v2.0/devicecode` (`client_id`, `scope`) answers
//!   `{device_code, user_code, verification_uri, expires_in, interval, message}`;
//! - the client polls the token endpoint with
//!   `grant_type=urn:ietf:params:oauth:grant-type:device_code` (see [`super::user_grants`]);
//! - the user approves at `verification_uri`, a page of the emulator
//!   (`GET /{tenant}/oauth2/v2.0/devicecode/verify`), or a test posts
//!   `POST /{tenant}/oauth2/v2.0/devicecode/approve` with `user_code`, `username` and
//!   `password` (the sign-in form: approval needs the user's credentials), or
//!   `action=decline`. With auto-approval on (the default, see [`super::SignInState`]) the
//!   code is approved for the tenant's first user when issued, and an approval without
//!   credentials approves it as that user; with it off, an approval without credentials is
//!   refused (400 `invalid_request`, AADSTS900144) and the code stays pending.
//!
//! The device code is never logged.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;
use uuid::Uuid;

use super::errors::{correlation_id, json_reply, EntraError};
use super::form::read_form;
use super::sign_in::{insert_bounded, DeviceGrant, DeviceStatus, DEVICE_CODE_LIFETIME};
use super::tenant::TenantRef;
use super::user_grants::{check_password, check_public_client, user_audience};
use super::IdentityState;

fn check_tenant(state: &IdentityState, tenant: &str) -> Result<(), EntraError> {
    match TenantRef::resolve(&state.directory, tenant) {
        TenantRef::Unknown => Err(EntraError::tenant_not_found(tenant)),
        _ => Ok(()),
    }
}

/// A user code as Entra shows them: nine upper-case letters and digits.
fn new_user_code() -> String {
    Uuid::new_v4()
        .simple()
        .to_string()
        .to_ascii_uppercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(9)
        .collect()
}

/// `POST /{tenant}/oauth2/v2.0/devicecode`.
pub(crate) async fn start(
    State(state): State<IdentityState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let correlation = correlation_id(&headers);
    let result = async {
        check_tenant(&state, &tenant)?;
        let form = read_form(&headers, body).await?;
        let client_id = form
            .get("client_id")
            .ok_or_else(|| EntraError::missing_parameter("client_id"))?;
        check_public_client(&state.directory, client_id)?;
        let scope = form
            .get("scope")
            .ok_or_else(|| EntraError::missing_parameter("scope"))?;
        user_audience(&state.directory, scope)?;
        let sign_in = &*state.sign_in;
        let device_code = format!(
            "DAQABAAEAAA{}{}",
            Uuid::new_v4().simple(),
            Uuid::new_v4().simple()
        );
        let user_code = new_user_code();
        let interval = sign_in.device_code_interval();
        let status = match (sign_in.auto_approve(), state.directory.users().first()) {
            (true, Some(user)) => DeviceStatus::Approved(user.object_id.clone()),
            _ => DeviceStatus::Pending,
        };
        let now = Instant::now();
        insert_bounded(
            &sign_in.device_codes,
            device_code.clone(),
            DeviceGrant {
                user_code: user_code.clone(),
                client_id: client_id.to_string(),
                scope: scope.to_string(),
                expires_at: now + DEVICE_CODE_LIFETIME,
                interval,
                last_poll: now,
                status,
            },
        );
        let verification_uri = format!(
            "{}/{}/oauth2/v2.0/devicecode/verify",
            state.authority(),
            state.directory.tenant_id()
        );
        tracing::debug!(%tenant, client_id, "device code issued");
        Ok(json_reply(
            StatusCode::OK,
            &json!({
                "user_code": user_code,
                "device_code": device_code,
                "verification_uri": verification_uri,
                "expires_in": DEVICE_CODE_LIFETIME.as_secs(),
                "interval": interval.as_secs(),
                "message": format!(
                    "To sign in, use a web browser to open the page {verification_uri} and enter the code {user_code} to authenticate."
                ),
            }),
        ))
    }
    .await;
    result.unwrap_or_else(|e: EntraError| e.respond(state.authority(), &correlation))
}

/// `POST /{tenant}/oauth2/v2.0/devicecode/approve`: `user_code`, `username` and `password`
/// (required unless auto-approval is on: then, without them, the tenant's first user), or
/// `action=decline`.
pub(crate) async fn approve(
    State(state): State<IdentityState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let correlation = correlation_id(&headers);
    let result = async {
        check_tenant(&state, &tenant)?;
        let form = read_form(&headers, body).await?;
        let user_code = form
            .get("user_code")
            .ok_or_else(|| EntraError::missing_parameter("user_code"))?;
        let sign_in = &*state.sign_in;
        let decline = form
            .get("action")
            .is_some_and(|a| a.eq_ignore_ascii_case("decline"));
        let done = if decline {
            sign_in.decline(user_code)
        } else {
            let user = match (form.get("username"), form.get("password")) {
                (Some(u), Some(p)) => check_password(&state.directory, u, p)?,
                (None, _) if !sign_in.auto_approve() => {
                    return Err(EntraError::missing_parameter("username"))
                }
                (Some(_), None) if !sign_in.auto_approve() => {
                    return Err(EntraError::missing_parameter("password"))
                }
                _ => state.directory.users().into_iter().next().ok_or_else(|| {
                    EntraError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        50034,
                        "The tenant has no users to approve the sign-in as.",
                    )
                })?,
            };
            sign_in.approve(user_code, &user.object_id)
        };
        if !done {
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                70019,
                "The code you entered is not valid, has expired, or was already used.",
            ));
        }
        tracing::debug!(%tenant, declined = decline, "device code answered");
        Ok(json_reply(
            StatusCode::OK,
            &json!({"status": if decline { "declined" } else { "approved" }}),
        ))
    }
    .await;
    result.unwrap_or_else(|e: EntraError| e.respond(state.authority(), &correlation))
}

/// `GET /{tenant}/oauth2/v2.0/devicecode/verify`: a page to enter the code and sign in.
pub(crate) async fn verify_page(Path(tenant): Path<String>) -> Response {
    let tenant = html_escape(&tenant);
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Enter code</title></head><body>\
         <h1>Enter code</h1><p>Enter the code shown by the application, then sign in.</p>\
         <form method=\"post\" action=\"/{tenant}/oauth2/v2.0/devicecode/approve\">\
         <label>Code <input name=\"user_code\" autofocus></label><br>\
         <label>Username <input name=\"username\" autocomplete=\"username\"></label><br>\
         <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\"></label><br>\
         <button name=\"action\" value=\"approve\">Sign in</button> \
         <button name=\"action\" value=\"decline\">Decline</button></form></body></html>"
    ))
    .into_response()
}

/// Escapes text for HTML.
pub(crate) fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
