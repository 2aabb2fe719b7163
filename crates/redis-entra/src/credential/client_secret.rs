//! A service principal signing in with a client secret (azure_identity's
//! `ClientSecretCredential`, with our TLS trust and retry ownership).

use std::sync::Arc;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::TokenCredential;
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};

use super::http::client_options;
use crate::error::{Error, Result};
use crate::tls::TlsOptions;

/// What a client secret credential needs.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ClientSecretOptions {
    /// The tenant (directory) id.
    pub tenant_id: String,
    /// The application (client) id.
    pub client_id: String,
    /// The client secret's value (not its id).
    pub secret: String,
    /// The authority host, e.g. `https://login.microsoftonline.com`; `None` reads
    /// `AZURE_AUTHORITY_HOST`, then uses the public cloud.
    pub authority_host: Option<String>,
    /// Whom to trust for the token endpoint.
    pub tls: TlsOptions,
}

impl ClientSecretOptions {
    /// A service principal's client secret, in tenant `tenant_id`.
    pub fn new(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            secret: secret.into(),
            ..Self::default()
        }
    }
}

authority_and_tls!(ClientSecretOptions);

impl std::fmt::Debug for ClientSecretOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSecretOptions")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("secret", &"<redacted>")
            .field("authority_host", &self.authority_host)
            .finish()
    }
}

/// A client secret credential.
pub fn client_secret(options: ClientSecretOptions) -> Result<Arc<dyn TokenCredential>> {
    if options.tenant_id.is_empty() {
        return Err(Error::Config(
            "a client secret needs a tenant id: set AZURE_REDIS_TENANTID (or AZURE_TENANT_ID)"
                .into(),
        ));
    }
    if options.client_id.is_empty() {
        return Err(Error::Config(
            "a client secret needs a client id: set AZURE_REDIS_CLIENTID (or AZURE_CLIENT_ID)"
                .into(),
        ));
    }
    let mut client_options = client_options(&options.tls)?;
    if let Some(host) = &options.authority_host {
        let url = url::Url::parse(host)
            .map_err(|e| Error::Config(format!("the authority host {host:?} is not a URL: {e}")))?;
        if url.scheme() != "https" {
            return Err(Error::Config(format!(
                "the authority host {host:?} must use https"
            )));
        }
        let mut custom = CustomConfiguration::default();
        custom.authority_host = host.trim_end_matches('/').to_string();
        client_options.cloud = Some(Arc::new(CloudConfiguration::Custom(custom)));
    }
    let credential = ClientSecretCredential::new(
        &options.tenant_id,
        options.client_id,
        options.secret.into(),
        Some(ClientSecretCredentialOptions { client_options }),
    )?;
    Ok(credential)
}
