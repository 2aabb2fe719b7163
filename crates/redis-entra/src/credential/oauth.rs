//! The bits of Entra's OAuth 2.0 endpoints our own public-client credentials share (device
//! code, username/password, interactive browser): where the authority is, posting a form,
//! reading a token reply, and turning Entra's error JSON into an error that names the fix.
//!
//! Nothing here logs a form value, a token or a response body.

use std::time::Duration;

use azure_core::credentials::AccessToken;
use azure_core::error::ErrorKind;
use serde::Deserialize;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::tls::TlsOptions;

/// The public cloud's authority host.
pub(crate) const PUBLIC_AUTHORITY: &str = "https://login.microsoftonline.com";

/// The Azure CLI's well-known public client id, which Microsoft's SDKs use for user sign-in
/// when the application gives none.
pub const DEVELOPER_SIGN_IN_CLIENT_ID: &str = "04b07795-8ddb-461a-bbee-02f9e1bf7b46";

/// A tenant's OAuth 2.0 v2 endpoints, and an HTTP client that trusts what it should.
#[derive(Debug, Clone)]
pub(crate) struct Authority {
    http: reqwest::Client,
    /// `https://host/{tenant}/oauth2/v2.0`, no trailing slash.
    base: String,
}

/// Entra's error reply, reduced to what is safe to show.
#[derive(Debug, Clone)]
pub(crate) struct OAuthError {
    /// HTTP status.
    pub status: u16,
    /// The OAuth `error` (`authorization_pending`, `invalid_grant`, …).
    pub error: String,
    /// The first line of `error_description` (`AADSTS50126: …`).
    pub description: String,
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (HTTP {}): {}",
            self.error, self.status, self.description
        )
    }
}

#[derive(Deserialize)]
struct RawError {
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct RawToken {
    access_token: String,
    expires_in: Option<serde_json::Value>,
}

/// The authority host: the option, else `AZURE_AUTHORITY_HOST`, else the public cloud; https
/// only.
pub(crate) fn authority_host(option: Option<&str>) -> Result<String> {
    let host = option
        .map(str::to_string)
        .or_else(|| {
            std::env::var("AZURE_AUTHORITY_HOST")
                .ok()
                .filter(|v| !v.trim().is_empty())
        })
        .unwrap_or_else(|| PUBLIC_AUTHORITY.to_string());
    let url = url::Url::parse(&host)
        .map_err(|e| Error::Config(format!("the authority host {host:?} is not a URL: {e}")))?;
    if url.scheme() != "https" {
        return Err(Error::Config(format!(
            "the authority host {host:?} must use https"
        )));
    }
    Ok(host.trim_end_matches('/').to_string())
}

impl Authority {
    /// The endpoints of `tenant` at `authority_host` (see [`authority_host`]).
    pub fn new(
        authority_host_option: Option<&str>,
        tenant: &str,
        tls: &TlsOptions,
    ) -> Result<Self> {
        let host = authority_host(authority_host_option)?;
        if tenant.is_empty()
            || !tenant
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
        {
            return Err(Error::Config(format!(
                "the tenant {tenant:?} is not a tenant id or domain: set AZURE_TENANT_ID"
            )));
        }
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls.client_config()?)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Tls(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: format!("{host}/{tenant}/oauth2/v2.0"),
        })
    }

    /// `…/oauth2/v2.0/{endpoint}`.
    pub fn url(&self, endpoint: &str) -> String {
        format!("{}/{endpoint}", self.base)
    }

    /// Posts a form to `…/oauth2/v2.0/{endpoint}`: the JSON reply on 2xx, Entra's error
    /// otherwise. Transport failures are `Err(Err(..))`.
    pub async fn post(
        &self,
        endpoint: &str,
        form: &[(&str, &str)],
    ) -> std::result::Result<serde_json::Value, PostError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter())
            .finish();
        let response = self
            .http
            .post(self.url(endpoint))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| {
                PostError::Transport(format!(
                    "could not reach {}: {}",
                    self.url(endpoint),
                    without_url_query(&e.to_string())
                ))
            })?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| PostError::Transport(format!("reading the reply: {e}")))?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body).map_err(|e| {
                PostError::Transport(format!("the reply of {endpoint} is not JSON: {e}"))
            });
        }
        let raw: RawError = serde_json::from_slice(&body).unwrap_or(RawError {
            error: None,
            error_description: None,
        });
        Err(PostError::OAuth(OAuthError {
            status,
            error: raw.error.unwrap_or_else(|| "unknown_error".into()),
            description: raw
                .error_description
                .as_deref()
                .and_then(|d| d.lines().next())
                .unwrap_or("no description")
                .trim()
                .to_string(),
        }))
    }
}

/// Why a post failed.
#[derive(Debug, Clone)]
pub(crate) enum PostError {
    /// Entra answered with an error.
    OAuth(OAuthError),
    /// No usable answer.
    Transport(String),
}

impl PostError {
    /// As an `azure_core` error, with `hint` (what to do) after Entra's own text.
    pub fn into_azure(self, what: &str, hint: Option<&str>) -> azure_core::Error {
        let text = match self {
            PostError::OAuth(e) => format!("{what}: {e}"),
            PostError::Transport(t) => format!("{what}: {t}"),
        };
        let text = match hint {
            Some(h) => format!("{text}: {h}"),
            None => text,
        };
        azure_core::Error::with_message(ErrorKind::Credential, text)
    }
}

/// Drops any `?query` from URLs inside an error text.
fn without_url_query(text: &str) -> String {
    text.split_whitespace()
        .map(|w| match w.find('?') {
            Some(i) if w.contains("://") => &w[..i],
            _ => w,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads a token reply (`access_token`, `expires_in`).
pub(crate) fn access_token(reply: &serde_json::Value) -> azure_core::Result<AccessToken> {
    let raw: RawToken = serde_json::from_value(reply.clone()).map_err(|e| {
        azure_core::Error::with_message(
            ErrorKind::DataConversion,
            format!("the token reply has no access_token: {e}"),
        )
    })?;
    let expires_in = match &raw.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .unwrap_or(3600);
    let expires_on = OffsetDateTime::now_utc() + time::Duration::seconds(expires_in);
    Ok(AccessToken::new(raw.access_token, expires_on))
}

/// Tokens kept this long before expiry are used again rather than refreshed.
const REUSE_MARGIN: time::Duration = time::Duration::minutes(5);

/// The scope with `offline_access` added (so Entra returns a refresh token).
fn with_offline_access(scope: &str) -> String {
    if scope
        .split_whitespace()
        .any(|s| s.eq_ignore_ascii_case("offline_access"))
    {
        scope.to_string()
    } else {
        format!("{scope} offline_access")
    }
}

/// A user's latest token and refresh token. `Debug` shows neither.
struct UserSession {
    scope: String,
    token: AccessToken,
    refresh_token: Option<String>,
}

/// The token cache of the interactive user credentials (device code, browser): the access
/// token is reused while it has more than five minutes left; then the refresh token is
/// redeemed (`grant_type=refresh_token`), and only when that fails does the user sign in
/// again. Concurrent callers wait for the one sign-in.
#[derive(Default)]
pub(crate) struct UserTokenCache {
    session: tokio::sync::Mutex<Option<UserSession>>,
}

impl std::fmt::Debug for UserTokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserTokenCache")
    }
}

impl UserTokenCache {
    /// A token for `scope`: cached, refreshed, or from `sign_in` (given the scope to ask for,
    /// it returns Entra's token reply).
    pub async fn get<F, Fut>(
        &self,
        authority: &Authority,
        client_id: &str,
        scope: &str,
        sign_in: F,
    ) -> azure_core::Result<AccessToken>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = azure_core::Result<serde_json::Value>>,
    {
        let mut session = self.session.lock().await;
        if let Some(s) = session.as_ref().filter(|s| s.scope == scope) {
            if s.token.expires_on - OffsetDateTime::now_utc() > REUSE_MARGIN {
                return Ok(s.token.clone());
            }
            if let Some(refresh) = &s.refresh_token {
                let asked = with_offline_access(scope);
                let reply = authority
                    .post(
                        "token",
                        &[
                            ("grant_type", "refresh_token"),
                            ("client_id", client_id),
                            ("refresh_token", refresh),
                            ("scope", &asked),
                        ],
                    )
                    .await;
                match reply {
                    Ok(reply) => {
                        let token = access_token(&reply)?;
                        *session = Some(UserSession {
                            scope: scope.to_string(),
                            token: token.clone(),
                            refresh_token: refresh_token_of(&reply),
                        });
                        tracing::debug!("user token refreshed with the refresh token");
                        return Ok(token);
                    }
                    Err(PostError::OAuth(e)) => {
                        tracing::debug!(error = %e.error, "the refresh token was refused; signing in again");
                    }
                    Err(PostError::Transport(t)) => {
                        return Err(azure_core::Error::with_message(
                            ErrorKind::Credential,
                            format!("refreshing the user's token failed: {t}"),
                        ))
                    }
                }
            }
        }
        let reply = sign_in(with_offline_access(scope)).await?;
        let token = access_token(&reply)?;
        *session = Some(UserSession {
            scope: scope.to_string(),
            token: token.clone(),
            refresh_token: refresh_token_of(&reply),
        });
        Ok(token)
    }

    /// Makes the cached access token look spent (for tests of the refresh path).
    #[doc(hidden)]
    pub async fn expire_access_token(&self) {
        if let Some(s) = self.session.lock().await.as_mut() {
            s.token.expires_on = OffsetDateTime::now_utc();
        }
    }
}

/// The `refresh_token` of a token reply.
fn refresh_token_of(reply: &serde_json::Value) -> Option<String> {
    reply["refresh_token"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}
