//! A person signing in on another device: the device authorization grant (RFC 8628).
//!
//! The credential asks `POST {authority}/{tenant}/oauth2/v2.0/devicecode` for a code, shows the
//! user the message ("open this page and enter this code") through the application's callback
//! (by default: printed to stderr), then polls the token endpoint with
//! `grant_type=urn:ietf:params:oauth:grant-type:device_code` at the interval Entra asks for,
//! slowing down when told to, until the user signs in, declines, or the code expires.
//!
//! The access token is kept and returned while it has more than five minutes left; then the
//! refresh token Entra returned (the credential asks for `offline_access`) gets a new one, so a
//! token manager's refreshes prompt the user only when the refresh token is refused. The device
//! code and the refresh token are secrets: they are never logged or shown.

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use serde::Deserialize;

use super::oauth::{Authority, PostError, UserTokenCache, DEVELOPER_SIGN_IN_CLIENT_ID};
use crate::error::{Error, Result};
use crate::tls::TlsOptions;

/// What the user must do: shown through [`DeviceCodeOptions::prompt`]. Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCodePrompt {
    /// The code to enter (`ABCD12345`).
    pub user_code: String,
    /// The page to enter it at.
    pub verification_uri: String,
    /// Entra's sentence saying both.
    pub message: String,
    /// How long the code is valid.
    pub expires_in: Duration,
}

/// Shows a [`DeviceCodePrompt`] to the user.
pub type DeviceCodeCallback = Arc<dyn Fn(&DeviceCodePrompt) + Send + Sync>;

/// Options for [`device_code`].
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct DeviceCodeOptions {
    /// The tenant id or domain (`organizations` for any work account).
    pub tenant_id: String,
    /// The public client application's id; empty uses the Azure CLI's well-known client id.
    pub client_id: String,
    /// The authority host; `None` reads `AZURE_AUTHORITY_HOST`, then uses the public cloud.
    pub authority_host: Option<String>,
    /// Whom to trust for the endpoints.
    pub tls: TlsOptions,
    /// Shows the message; `None` prints it to stderr.
    pub prompt: Option<DeviceCodeCallback>,
    /// Gives up after this long even if the code is still valid; `None` waits until it
    /// expires.
    pub timeout: Option<Duration>,
}

impl DeviceCodeOptions {
    /// Device code sign-in through app `client_id` in tenant `tenant_id`.
    pub fn new(tenant_id: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            ..Self::default()
        }
    }
}

authority_and_tls!(DeviceCodeOptions);

impl std::fmt::Debug for DeviceCodeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCodeOptions")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("authority_host", &self.authority_host)
            .field("prompt", &self.prompt.as_ref().map(|_| "<callback>"))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Tokens for a person signing in with a device code (see the module documentation).
pub struct DeviceCodeCredential {
    authority: Authority,
    client_id: String,
    prompt: DeviceCodeCallback,
    timeout: Option<Duration>,
    cache: UserTokenCache,
}

impl std::fmt::Debug for DeviceCodeCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCodeCredential")
            .field("authority", &self.authority)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// A device code credential.
pub fn device_code(options: DeviceCodeOptions) -> Result<Arc<DeviceCodeCredential>> {
    if options.tenant_id.is_empty() {
        return Err(Error::Config(
            "a device code sign-in needs a tenant: set tenant_id (or AZURE_TENANT_ID), or use \"organizations\""
                .into(),
        ));
    }
    let client_id = if options.client_id.is_empty() {
        DEVELOPER_SIGN_IN_CLIENT_ID.to_string()
    } else {
        options.client_id
    };
    let prompt = options.prompt.unwrap_or_else(|| {
        Arc::new(|p: &DeviceCodePrompt| eprintln!("{}", p.message)) as DeviceCodeCallback
    });
    Ok(Arc::new(DeviceCodeCredential {
        authority: Authority::new(
            options.authority_host.as_deref(),
            &options.tenant_id,
            &options.tls,
        )?,
        client_id,
        prompt,
        timeout: options.timeout,
        cache: UserTokenCache::default(),
    }))
}

#[derive(Deserialize)]
struct DeviceCodeReply {
    device_code: String,
    user_code: String,
    verification_uri: String,
    expires_in: u64,
    interval: Option<u64>,
    message: Option<String>,
}

fn credential_error(message: String) -> azure_core::Error {
    azure_core::Error::with_message(ErrorKind::Credential, message)
}

impl DeviceCodeCredential {
    /// Makes the cached access token look spent, so the next call uses the refresh token
    /// (for tests).
    #[doc(hidden)]
    pub async fn expire_cached_token(&self) {
        self.cache.expire_access_token().await;
    }

    async fn sign_in(&self, scope: String) -> azure_core::Result<serde_json::Value> {
        let reply = self
            .authority
            .post(
                "devicecode",
                &[("client_id", &self.client_id), ("scope", &scope)],
            )
            .await
            .map_err(|e| e.into_azure("could not start the device code sign-in", None))?;
        let reply: DeviceCodeReply = serde_json::from_value(reply).map_err(|e| {
            credential_error(format!(
                "the device code reply is not what Entra sends: {e}"
            ))
        })?;
        let expires_in = Duration::from_secs(reply.expires_in);
        let prompt = DeviceCodePrompt {
            message: reply.message.clone().unwrap_or_else(|| {
                format!(
                    "To sign in, use a web browser to open the page {} and enter the code {} to authenticate.",
                    reply.verification_uri, reply.user_code
                )
            }),
            user_code: reply.user_code.clone(),
            verification_uri: reply.verification_uri.clone(),
            expires_in,
        };
        (self.prompt)(&prompt);
        tracing::debug!(verification_uri = %reply.verification_uri, "waiting for the device code sign-in");
        let deadline =
            tokio::time::Instant::now() + self.timeout.unwrap_or(expires_in).min(expires_in);
        let mut interval = Duration::from_secs(reply.interval.unwrap_or(5).max(1));
        loop {
            if tokio::time::Instant::now() + interval > deadline {
                return Err(credential_error(format!(
                    "nobody completed the device code sign-in in time (code {} at {}): run again and sign in within {} seconds",
                    reply.user_code,
                    reply.verification_uri,
                    expires_in.as_secs()
                )));
            }
            tokio::time::sleep(interval).await;
            let result = self
                .authority
                .post(
                    "token",
                    &[
                        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                        ("client_id", &self.client_id),
                        ("device_code", &reply.device_code),
                    ],
                )
                .await;
            match result {
                Ok(reply) => return Ok(reply),
                Err(PostError::OAuth(e)) if e.error == "authorization_pending" => {}
                Err(PostError::OAuth(e)) if e.error == "slow_down" => {
                    interval += Duration::from_secs(5);
                }
                Err(PostError::OAuth(e)) if e.error == "authorization_declined" => {
                    return Err(credential_error(format!(
                        "the device code sign-in was declined ({}): run again and approve the request at {}, or sign in another way",
                        e.description, reply.verification_uri
                    )));
                }
                Err(PostError::OAuth(e))
                    if e.error == "expired_token" || e.error == "code_expired" =>
                {
                    return Err(credential_error(format!(
                        "the device code expired before anyone signed in ({}): run again and complete the sign-in within {} seconds",
                        e.description,
                        expires_in.as_secs()
                    )));
                }
                Err(e) => return Err(e.into_azure("the device code sign-in failed", None)),
            }
        }
    }
}

#[async_trait::async_trait]
impl TokenCredential for DeviceCodeCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let scope = scopes.join(" ");
        self.cache
            .get(&self.authority, &self.client_id, &scope, |asked| {
                self.sign_in(asked)
            })
            .await
    }
}
