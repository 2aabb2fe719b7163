//! The token endpoint's grants for users (public clients, no client secret):
//!
//! - `grant_type=password` (resource owner password): `client_id`, `username`, `password`,
//!   `scope`; a wrong password is `invalid_grant` AADSTS50126, an unknown user AADSTS50034;
//! - `grant_type=urn:ietf:params:oauth:grant-type:device_code`: `client_id`, `device_code`;
//!   answers `authorization_pending` (AADSTS70016), `slow_down`, `expired_token`
//!   (AADSTS70020), `authorization_declined` (AADSTS70000) or the token;
//! - `grant_type=authorization_code`: `client_id`, `code`, `redirect_uri`, `code_verifier`
//!   (PKCE S256, required), `scope`;
//! - `grant_type=refresh_token`: `client_id`, `refresh_token`, `scope`. A refresh token is
//!   issued with every user token whose scope asks for `offline_access`, and is single use
//!   (each redemption issues a new one, as Entra rotates them); an unknown, used or expired
//!   one is `invalid_grant` AADSTS70008.
//!
//! A user's token is a v1 access token with `idtyp=user`, `upn`, `scp`, and the reply carries
//! an `id_token` and `client_info` as Entra's does (MSAL-based clients read them).

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use serde_json::{json, Value};

use super::errors::{json_reply, EntraError};
use super::form::FormParams;
use super::resource::{audience_for_scope, ScopeError};
use super::sign_in::{
    insert_bounded, DeviceStatus, RefreshGrant, SignInState, REFRESH_TOKEN_LIFETIME,
};
use super::IdentityState;
use crate::directory::{Directory, PrincipalKind, UserAccount};
use crate::signing::now_secs;
use crate::stats::Stats;

/// The device code grant type.
pub(crate) const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The Azure CLI's public client id, which Microsoft's SDKs use for user sign-in by default.
pub(crate) const AZURE_CLI_CLIENT_ID: &str = "04b07795-8ddb-461a-bbee-02f9e1bf7b46";

/// Whether this grant type is one of ours.
pub(crate) fn handles(grant_type: &str) -> bool {
    matches!(
        grant_type,
        "password" | DEVICE_CODE_GRANT | "authorization_code" | "refresh_token"
    )
}

/// A public client the tenant knows: the Azure CLI's well-known id, or any application's.
pub(crate) fn check_public_client(
    directory: &Directory,
    client_id: &str,
) -> Result<(), EntraError> {
    if client_id.eq_ignore_ascii_case(AZURE_CLI_CLIENT_ID)
        || directory
            .by_client_id(client_id)
            .is_some_and(|p| p.kind != PrincipalKind::User)
    {
        Ok(())
    } else {
        Err(EntraError::application_not_found(
            client_id,
            directory.tenant_id(),
        ))
    }
}

/// The audience a user flow's scope names (same rules as client credentials).
pub(crate) fn user_audience(directory: &Directory, scope: &str) -> Result<String, EntraError> {
    match audience_for_scope(scope) {
        Ok(audience) => Ok(audience),
        Err(ScopeError::Invalid) => Err(EntraError::invalid_scope(scope)),
        Err(ScopeError::NotDefault) => Err(EntraError::scope_without_default(scope)),
        Err(ScopeError::UnknownResource(r)) => {
            Err(EntraError::resource_not_found(&r, directory.tenant_id()))
        }
    }
}

fn invalid_grant(code: u32, message: impl Into<String>) -> EntraError {
    EntraError::new(StatusCode::BAD_REQUEST, "invalid_grant", code, message)
}

/// Runs a user grant. `form` was read by the token endpoint.
pub(crate) async fn token(
    state: &IdentityState,
    grant_type: &str,
    form: &FormParams,
) -> Result<Response, EntraError> {
    let client_id = form
        .get("client_id")
        .ok_or_else(|| EntraError::missing_parameter("client_id"))?;
    check_public_client(&state.directory, client_id)?;
    match grant_type {
        "password" => password(state, client_id, form),
        DEVICE_CODE_GRANT => device_code(state, client_id, form),
        "refresh_token" => refresh_token(state, client_id, form),
        _ => authorization_code(state, client_id, form),
    }
}

fn password(
    state: &IdentityState,
    client_id: &str,
    form: &FormParams,
) -> Result<Response, EntraError> {
    let username = form
        .get("username")
        .ok_or_else(|| EntraError::missing_parameter("username"))?;
    let password = form
        .get("password")
        .ok_or_else(|| EntraError::missing_parameter("password"))?;
    let scope = form
        .get("scope")
        .ok_or_else(|| EntraError::missing_parameter("scope"))?;
    let audience = user_audience(&state.directory, scope)?;
    let user = check_password(&state.directory, username, password)?;
    user_token_reply(state, &user, client_id, &audience, scope)
}

/// The user if the password is right; AADSTS50034 / AADSTS50126 otherwise.
pub(crate) fn check_password(
    directory: &Directory,
    username: &str,
    password: &str,
) -> Result<UserAccount, EntraError> {
    let Some(user) = directory.user_by_name(username) else {
        return Err(invalid_grant(
            50034,
            format!(
                "The user account {{EmailHidden}} does not exist in the {} directory. To sign \
                 into this application, the account must be added to the directory.",
                directory.tenant_id()
            ),
        ));
    };
    if !constant_time_eq(user.password.as_bytes(), password.as_bytes()) {
        return Err(invalid_grant(
            50126,
            "Error validating credentials due to invalid username or password.",
        ));
    }
    Ok(user)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn device_code(
    state: &IdentityState,
    client_id: &str,
    form: &FormParams,
) -> Result<Response, EntraError> {
    let code = form
        .get("device_code")
        .ok_or_else(|| EntraError::missing_parameter("device_code"))?;
    let sign_in: &SignInState = &state.sign_in;
    let (object_id, scope) = {
        let mut codes = sign_in
            .device_codes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(grant) = codes.get_mut(code) else {
            return Err(invalid_grant(
                70000,
                "The provided value for the input parameter 'device_code' is not valid.",
            ));
        };
        let now = Instant::now();
        if grant.expires_at <= now {
            codes.remove(code);
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "expired_token",
                70020,
                "The provided value for the input parameter 'device_code' is not valid. This \
                 device code has expired.",
            ));
        }
        if !grant.client_id.eq_ignore_ascii_case(client_id) {
            return Err(invalid_grant(
                70000,
                "The device code was issued to another client_id.",
            ));
        }
        let since = now.duration_since(grant.last_poll);
        grant.last_poll = now;
        if since < grant.interval / 2 {
            grant.interval += Duration::from_secs(5);
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "slow_down",
                70016,
                format!(
                    "OAuth 2.0 device flow error. The client is polling too fast: wait {} \
                     seconds between requests.",
                    grant.interval.as_secs()
                ),
            ));
        }
        match &grant.status {
            DeviceStatus::Pending => {
                return Err(EntraError::new(
                    StatusCode::BAD_REQUEST,
                    "authorization_pending",
                    70016,
                    "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
                ))
            }
            DeviceStatus::Declined => {
                codes.remove(code);
                return Err(EntraError::new(
                    StatusCode::BAD_REQUEST,
                    "authorization_declined",
                    70000,
                    "The user declined the sign-in request.",
                ));
            }
            DeviceStatus::Approved(oid) => {
                let out = (oid.clone(), grant.scope.clone());
                codes.remove(code);
                out
            }
        }
    };
    let user = state
        .directory
        .users()
        .into_iter()
        .find(|u| u.object_id == object_id)
        .ok_or_else(|| invalid_grant(50034, "The user account no longer exists."))?;
    let audience = user_audience(&state.directory, &scope)?;
    user_token_reply(state, &user, client_id, &audience, &scope)
}

fn authorization_code(
    state: &IdentityState,
    client_id: &str,
    form: &FormParams,
) -> Result<Response, EntraError> {
    let code = form
        .get("code")
        .ok_or_else(|| EntraError::missing_parameter("code"))?;
    let redirect_uri = form
        .get("redirect_uri")
        .ok_or_else(|| EntraError::missing_parameter("redirect_uri"))?;
    let verifier = form
        .get("code_verifier")
        .ok_or_else(|| EntraError::missing_parameter("code_verifier"))?;
    let grant = state
        .sign_in
        .codes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(code)
        .ok_or_else(|| {
            invalid_grant(
                70008,
                "The provided authorization code or refresh token has expired due to \
                 inactivity, or was already redeemed. Send a new interactive authorization \
                 request for this user and resource.",
            )
        })?;
    if grant.expires_at <= Instant::now() {
        return Err(invalid_grant(
            70008,
            "The provided authorization code has expired. Send a new interactive \
             authorization request for this user and resource.",
        ));
    }
    if !grant.client_id.eq_ignore_ascii_case(client_id) {
        return Err(invalid_grant(
            70000,
            "The authorization code was issued to another client_id.",
        ));
    }
    if grant.redirect_uri != redirect_uri {
        return Err(invalid_grant(
            50148,
            "The redirect_uri does not match the one the authorization code was issued for.",
        ));
    }
    if pkce_s256(verifier) != grant.code_challenge {
        return Err(invalid_grant(
            501481,
            "The Code_Verifier does not match the code_challenge supplied in the authorization \
             request.",
        ));
    }
    let user = state
        .directory
        .users()
        .into_iter()
        .find(|u| u.object_id == grant.object_id)
        .ok_or_else(|| invalid_grant(50034, "The user account no longer exists."))?;
    let scope = form.get("scope").unwrap_or(&grant.scope).to_string();
    let audience = user_audience(&state.directory, &scope)?;
    user_token_reply(state, &user, client_id, &audience, &scope)
}

fn refresh_token(
    state: &IdentityState,
    client_id: &str,
    form: &FormParams,
) -> Result<Response, EntraError> {
    let token = form
        .get("refresh_token")
        .ok_or_else(|| EntraError::missing_parameter("refresh_token"))?;
    let scope = form
        .get("scope")
        .ok_or_else(|| EntraError::missing_parameter("scope"))?;
    let audience = user_audience(&state.directory, scope)?;
    let grant = state
        .sign_in
        .refresh_tokens
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(token)
        .filter(|g| g.expires_at > Instant::now())
        .ok_or_else(|| {
            invalid_grant(
                70008,
                "The provided authorization code or refresh token has expired due to \
                 inactivity, or was already redeemed. Send a new interactive authorization \
                 request for this user and resource.",
            )
        })?;
    if !grant.client_id.eq_ignore_ascii_case(client_id) {
        return Err(invalid_grant(
            70000,
            "The refresh token was issued to another client_id.",
        ));
    }
    let user = state
        .directory
        .users()
        .into_iter()
        .find(|u| u.object_id == grant.object_id)
        .ok_or_else(|| invalid_grant(50034, "The user account no longer exists."))?;
    user_token_reply(state, &user, client_id, &audience, scope)
}

/// base64url(SHA-256(verifier)): PKCE's S256 challenge.
pub(crate) fn pkce_s256(verifier: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

fn server_error(e: impl std::fmt::Display) -> EntraError {
    tracing::warn!(error = %e, "the emulator could not sign a token");
    EntraError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        50000,
        "There was an error issuing a token or an issue with our sign-in service.",
    )
}

/// The token reply for a user: access token, id token, client info.
fn user_token_reply(
    state: &IdentityState,
    user: &UserAccount,
    client_id: &str,
    audience: &str,
    scope: &str,
) -> Result<Response, EntraError> {
    let principal = state
        .directory
        .by_object_id(&user.object_id)
        .ok_or_else(|| invalid_grant(50034, "The user account no longer exists."))?;
    let lifetime = state.issuer.lifetime().as_secs().max(1);
    let audience = super::fault_injection::audience(state, audience);
    let mut claims = state
        .issuer
        .claims_for(&principal, &audience, lifetime as i64);
    if let Value::Object(map) = &mut claims {
        map.insert("appid".into(), json!(client_id));
        map.insert("appidacr".into(), json!("0"));
        map.insert("idtyp".into(), json!("user"));
        map.insert("upn".into(), json!(user.username));
        map.insert("unique_name".into(), json!(user.username));
        map.insert("name".into(), json!(principal.display_name));
        map.insert("scp".into(), json!("user_impersonation"));
        map.insert("amr".into(), json!(["pwd"]));
    }
    let access_token = state.issuer.sign(&claims).map_err(server_error)?;
    let tenant = state.directory.tenant_id();
    let now = now_secs();
    let id_claims = json!({
        "aud": client_id,
        "iss": format!("{}/{tenant}/v2.0", state.authority()),
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "name": principal.display_name,
        "oid": user.object_id,
        "preferred_username": user.username,
        "sub": user.object_id,
        "tid": tenant,
        "ver": "2.0",
    });
    let id_token = state.issuer.sign(&id_claims).map_err(server_error)?;
    let client_info = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"uid": user.object_id, "utid": tenant}).to_string());
    Stats::bump(&state.stats.tokens_issued);
    let mut body = json!({
        "token_type": "Bearer",
        "scope": scope,
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access_token,
        "id_token": id_token,
        "client_info": client_info,
    });
    if scope
        .split_whitespace()
        .any(|s| s.eq_ignore_ascii_case("offline_access"))
    {
        let refresh = format!(
            "1.AQ{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        insert_bounded(
            &state.sign_in.refresh_tokens,
            refresh.clone(),
            RefreshGrant {
                client_id: client_id.to_string(),
                object_id: user.object_id.clone(),
                expires_at: Instant::now() + REFRESH_TOKEN_LIFETIME,
            },
        );
        if let Value::Object(map) = &mut body {
            map.insert("refresh_token".into(), json!(refresh));
        }
    }
    Ok(json_reply(StatusCode::OK, &body))
}
