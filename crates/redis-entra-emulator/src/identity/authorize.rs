//! The authorization endpoint of the authorization-code flow with PKCE, as a browser sees it:
//!
//! - `GET /{tenant}/oauth2/v2.0/authorize?client_id&response_type=code&redirect_uri&scope&state&code_challenge&code_challenge_method=S256[&login_hint]`
//!   shows a minimal sign-in page (username and password). With
//!   [`SignInState::set_auto_submit`](super::SignInState::set_auto_submit) on, the page submits
//!   itself and signs in the tenant's first user (for headless browser tests);
//! - `POST /{tenant}/oauth2/v2.0/authorize` (the page's form) checks the user and redirects
//!   (302) to `redirect_uri?code=…&state=…`; the code is redeemed at the token endpoint with
//!   `grant_type=authorization_code` and the `code_verifier` (see [`super::user_grants`]).
//!
//! As for public clients on Entra, the redirect URI must be a loopback one
//! (`http://127.0.0.1:PORT/…`, `http://localhost:PORT/…`), and PKCE with S256 is required.
//! Request errors are shown as a page (AADSTS code and text), never as a redirect to an
//! unchecked URI. Codes and passwords are never logged.

use std::collections::HashMap;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use uuid::Uuid;

use super::device_code::html_escape;
use super::errors::EntraError;
use super::form::read_form;
use super::sign_in::{insert_bounded, CodeGrant, AUTH_CODE_LIFETIME};
use super::tenant::TenantRef;
use super::user_grants::{check_password, check_public_client, user_audience};
use super::IdentityState;

/// The request parameters the page carries from the GET to the POST.
const CARRIED: [&str; 7] = [
    "client_id",
    "response_type",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
];

fn error_page(error: &EntraError) -> Response {
    (
        error.status,
        Html(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sign in error</title></head>\
             <body><h1>Sorry, but we're having trouble signing you in.</h1><p id=\"error\">{}</p>\
             <p>{}</p></body></html>",
            html_escape(error.error),
            html_escape(&error.aadsts_line())
        )),
    )
        .into_response()
}

/// Checks the request; the redirect URI when it is acceptable.
fn check_request(
    state: &IdentityState,
    tenant: &str,
    params: &HashMap<String, String>,
) -> Result<(), EntraError> {
    if let TenantRef::Unknown = TenantRef::resolve(&state.directory, tenant) {
        return Err(EntraError::tenant_not_found(tenant));
    }
    let get = |name: &str| {
        params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| EntraError::missing_parameter(name))
    };
    check_public_client(&state.directory, get("client_id")?)?;
    if get("response_type")? != "code" {
        return Err(EntraError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_response_type",
            700054,
            "The response_type must be 'code' for the authorization code flow.",
        ));
    }
    let redirect = get("redirect_uri")?;
    let loopback = url::Url::parse(redirect).is_ok_and(|u| {
        u.scheme() == "http"
            && matches!(
                u.host_str(),
                Some("127.0.0.1") | Some("localhost") | Some("[::1]")
            )
    });
    if !loopback {
        return Err(EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50011,
            "The redirect URI specified in the request does not match the redirect URIs \
             configured for the application: the emulator accepts loopback ones \
             (http://127.0.0.1:PORT/ or http://localhost:PORT/).",
        ));
    }
    user_audience(&state.directory, get("scope")?)?;
    get("code_challenge")?;
    if get("code_challenge_method")? != "S256" {
        return Err(EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            501491,
            "Invalid code_challenge_method: use S256.",
        ));
    }
    Ok(())
}

fn sign_in_page(
    tenant: &str,
    params: &HashMap<String, String>,
    auto: bool,
    problem: Option<&str>,
) -> Response {
    let hidden: String = CARRIED
        .iter()
        .filter_map(|name| {
            params.get(*name).map(|v| {
                format!(
                    "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                    html_escape(v)
                )
            })
        })
        .collect();
    let hint = params
        .get("login_hint")
        .map(|h| html_escape(h))
        .unwrap_or_default();
    let problem = problem
        .map(|p| format!("<p id=\"error\">{}</p>", html_escape(p)))
        .unwrap_or_default();
    let (fields, script) = if auto {
        (
            "<input type=\"hidden\" name=\"auto\" value=\"1\">".to_string(),
            "<script>document.forms[0].submit();</script>",
        )
    } else {
        (
            format!(
                "<label>Username <input name=\"username\" value=\"{hint}\" autocomplete=\"username\"></label><br>\
                 <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\"></label><br>\
                 <button type=\"submit\">Sign in</button>"
            ),
            "",
        )
    };
    let mut response = Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sign in to your account</title></head>\
         <body><h1>Sign in</h1>{problem}<form method=\"post\" action=\"/{}/oauth2/v2.0/authorize\">{hidden}{fields}</form>{script}</body></html>",
        html_escape(tenant)
    ))
    .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

/// `GET /{tenant}/oauth2/v2.0/authorize`.
pub(crate) async fn page(
    State(state): State<IdentityState>,
    Path(tenant): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if let Err(e) = check_request(&state, &tenant, &params) {
        tracing::debug!(%tenant, outcome = %format!("refused: AADSTS{}", e.code), "authorize page");
        return error_page(&e);
    }
    tracing::debug!(%tenant, "authorize page");
    sign_in_page(&tenant, &params, state.sign_in.auto_submit(), None)
}

/// `POST /{tenant}/oauth2/v2.0/authorize`: the sign-in form.
pub(crate) async fn submit(
    State(state): State<IdentityState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let form = match read_form(&headers, body).await {
        Ok(form) => form,
        Err(e) => return error_page(&e),
    };
    let mut params: HashMap<String, String> = HashMap::new();
    for name in CARRIED {
        if let Some(v) = form.get(name) {
            params.insert(name.to_string(), v.to_string());
        }
    }
    if let Err(e) = check_request(&state, &tenant, &params) {
        return error_page(&e);
    }
    let auto = form.get("auto") == Some("1") && state.sign_in.auto_submit();
    let user = if auto {
        match state.directory.users().into_iter().next() {
            Some(user) => user,
            None => {
                return error_page(&EntraError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    50034,
                    "The tenant has no users to sign in as.",
                ))
            }
        }
    } else {
        let (Some(username), Some(password)) = (form.get("username"), form.get("password")) else {
            return sign_in_page(
                &tenant,
                &params,
                false,
                Some("Enter your username and password."),
            );
        };
        match check_password(&state.directory, username, password) {
            Ok(user) => user,
            Err(e) => {
                tracing::debug!(%tenant, outcome = %format!("refused: AADSTS{}", e.code), "sign-in form");
                return sign_in_page(&tenant, &params, false, Some(&e.aadsts_line()));
            }
        }
    };
    let code = format!(
        "1.AAAA{}{}",
        Uuid::new_v4().simple(),
        Uuid::new_v4().simple()
    );
    let get = |n: &str| params.get(n).cloned().unwrap_or_default();
    insert_bounded(
        &state.sign_in.codes,
        code.clone(),
        CodeGrant {
            client_id: get("client_id"),
            redirect_uri: get("redirect_uri"),
            code_challenge: get("code_challenge"),
            scope: get("scope"),
            object_id: user.object_id.clone(),
            expires_at: Instant::now() + AUTH_CODE_LIFETIME,
        },
    );
    let mut location = match url::Url::parse(&get("redirect_uri")) {
        Ok(url) => url,
        Err(_) => return error_page(&EntraError::missing_parameter("redirect_uri")),
    };
    location.query_pairs_mut().append_pair("code", &code);
    if let Some(s) = params.get("state") {
        location.query_pairs_mut().append_pair("state", s);
    }
    tracing::debug!(%tenant, "signed in; redirecting to the loopback redirect URI");
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, location.to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
    )
        .into_response()
}
