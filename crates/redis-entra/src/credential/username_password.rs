//! A user signing in with a username and password (the OAuth 2.0 resource-owner password
//! grant, `grant_type=password`).
//!
//! Microsoft discourages this flow (it cannot do multi-factor authentication, and Entra refuses
//! it for accounts that require it); it exists for tests and legacy automation. Prefer
//! [`DeviceCodeCredential`](super::DeviceCodeCredential) or
//! [`InteractiveBrowserCredential`](super::InteractiveBrowserCredential)
//! for people.

use std::sync::Arc;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};

use super::oauth::{access_token, Authority, PostError, DEVELOPER_SIGN_IN_CLIENT_ID};
use crate::error::{Error, Result};
use crate::tls::TlsOptions;

/// Options for [`username_password`].
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct UsernamePasswordOptions {
    /// The tenant (directory) id or domain.
    pub tenant_id: String,
    /// The public client application's id; empty uses the Azure CLI's well-known client id.
    pub client_id: String,
    /// The user's sign-in name (`user@contoso.com`).
    pub username: String,
    /// The user's password.
    pub password: String,
    /// The authority host; `None` reads `AZURE_AUTHORITY_HOST`, then uses the public cloud.
    pub authority_host: Option<String>,
    /// Whom to trust for the token endpoint.
    pub tls: TlsOptions,
}

impl UsernamePasswordOptions {
    /// A user's name and password, signing in through app `client_id` in tenant `tenant_id`.
    pub fn new(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            username: username.into(),
            password: password.into(),
            ..Self::default()
        }
    }
}

authority_and_tls!(UsernamePasswordOptions);

impl std::fmt::Debug for UsernamePasswordOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsernamePasswordOptions")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("authority_host", &self.authority_host)
            .finish()
    }
}

/// Tokens for a user signing in with a password.
pub struct UsernamePasswordCredential {
    authority: Authority,
    client_id: String,
    username: String,
    password: String,
}

impl std::fmt::Debug for UsernamePasswordCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsernamePasswordCredential")
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A username/password credential.
pub fn username_password(
    options: UsernamePasswordOptions,
) -> Result<Arc<UsernamePasswordCredential>> {
    if options.tenant_id.is_empty() {
        return Err(Error::Config(
            "a username and password need a tenant id: set AZURE_TENANT_ID".into(),
        ));
    }
    if options.username.is_empty() || options.password.is_empty() {
        return Err(Error::Config(
            "a username/password sign-in needs both: set AZURE_USERNAME and AZURE_PASSWORD".into(),
        ));
    }
    let client_id = if options.client_id.is_empty() {
        DEVELOPER_SIGN_IN_CLIENT_ID.to_string()
    } else {
        options.client_id
    };
    Ok(Arc::new(UsernamePasswordCredential {
        authority: Authority::new(
            options.authority_host.as_deref(),
            &options.tenant_id,
            &options.tls,
        )?,
        client_id,
        username: options.username,
        password: options.password,
    }))
}

#[async_trait::async_trait]
impl TokenCredential for UsernamePasswordCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let scope = scopes.join(" ");
        tracing::debug!(username = %self.username, "requesting a token with a username and password");
        let reply = self
            .authority
            .post(
                "token",
                &[
                    ("grant_type", "password"),
                    ("client_id", &self.client_id),
                    ("username", &self.username),
                    ("password", &self.password),
                    ("scope", &scope),
                ],
            )
            .await
            .map_err(|e| {
                let hint = match &e {
                    PostError::OAuth(o) if o.description.contains("AADSTS50126") => Some(
                        "the username or password is wrong: check AZURE_USERNAME and AZURE_PASSWORD (or the options you passed)",
                    ),
                    PostError::OAuth(o) if o.description.contains("AADSTS50076") || o.description.contains("AADSTS50079") => Some(
                        "this account requires multi-factor authentication, which a password alone cannot do: use the device code or interactive browser credential",
                    ),
                    _ => None,
                };
                e.into_azure("username/password sign-in failed", hint)
            })?;
        access_token(&reply)
    }
}
