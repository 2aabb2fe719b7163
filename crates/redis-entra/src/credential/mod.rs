//! Credentials: one file per way to sign in, all behind azure_core's `TokenCredential`, so they
//! compose with every Azure SDK crate, and [`from_env`] to choose one from the environment the
//! way Service Connector sets it up.

/// `with_authority_host` and `with_tls` for a credential's options (which have both fields).
macro_rules! authority_and_tls {
    ($options:ty) => {
        impl $options {
            /// Sets the Entra ID authority host (default: `AZURE_AUTHORITY_HOST`, else
            /// `https://login.microsoftonline.com`).
            pub fn with_authority_host(mut self, host: impl Into<String>) -> Self {
                self.authority_host = Some(host.into());
                self
            }

            /// Sets whom the token requests' TLS trusts.
            pub fn with_tls(mut self, tls: $crate::tls::TlsOptions) -> Self {
                self.tls = tls;
                self
            }
        }
    };
}

mod access_key;
mod azure_cli;
mod azure_developer_cli;
pub mod chain;
mod client_assertion;
mod client_certificate;
mod client_secret;
mod default;
mod device_code;
mod environment;
mod http;
pub mod imds;
mod interactive_browser;
mod managed_identity;
mod oauth;
mod username_password;
mod workload_identity;

use std::sync::Arc;

use azure_core::credentials::TokenCredential;

pub use access_key::AccessKeyCredential;
pub use azure_cli::{azure_cli, AzureCliCredential, AzureCliOptions};
pub use azure_developer_cli::{
    azure_developer_cli, AzureDeveloperCliCredential, AzureDeveloperCliOptions,
};
pub use chain::{ChainOptions, ChainedCredential, CredentialUnavailable};
pub use client_certificate::{
    client_certificate, AssertionAlgorithm, CertificateSource, ClientCertificateCredential,
    ClientCertificateOptions,
};
pub use client_secret::{client_secret, ClientSecretOptions};
pub use default::{default_azure_credential, selected_links, DefaultAzureCredentialOptions};
pub use device_code::{
    device_code, DeviceCodeCallback, DeviceCodeCredential, DeviceCodeOptions, DeviceCodePrompt,
};
pub use environment::{
    environment, process_env, EnvLookup, EnvironmentCredential, EnvironmentOptions,
};
pub use http::client_options;
pub use interactive_browser::{
    interactive_browser, InteractiveBrowserCredential, InteractiveBrowserOptions, OpenUrl,
};
pub use managed_identity::{managed_identity, ManagedIdentityOptions, UserAssignedId};
pub use oauth::DEVELOPER_SIGN_IN_CLIENT_ID;
pub use username_password::{
    username_password, UsernamePasswordCredential, UsernamePasswordOptions,
};
pub use workload_identity::{
    workload_identity, WorkloadIdentityCredential, WorkloadIdentityOptions,
};

use crate::error::{Error, Result};
use crate::tls::TlsOptions;

/// Options for [`from_env`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct FromEnvOptions {
    /// Whom to trust for token requests.
    pub tls: TlsOptions,
}

/// Whether to use the [`default_azure_credential`] chain for `auth`: when the environment names
/// no identity at all (Service Connector's system-assigned managed identity, but no
/// managed-identity endpoint in sight, as on a laptop), or when `AZURE_TOKEN_CREDENTIALS` asks
/// for the chain. Then a developer's `az login` works, and a VM's managed identity still does.
pub fn prefers_default_chain(auth: &crate::config::Auth) -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let unspecified = *auth == crate::config::Auth::ManagedIdentity { client_id: None }
        && !set("IDENTITY_ENDPOINT")
        && !set("MSI_ENDPOINT");
    unspecified || set("AZURE_TOKEN_CREDENTIALS")
}

/// The Entra credential the environment describes: Service Connector's variables first, then
/// the Azure SDK's (see [`crate::config`]); the [`default_azure_credential`] chain when they
/// name no identity (see [`prefers_default_chain`]). The same rule as
/// [`RedisConfig::credential`](crate::config::RedisConfig::credential) and the command.
pub fn from_env(options: &FromEnvOptions) -> Result<Arc<dyn TokenCredential>> {
    let authority_host = std::env::var("AZURE_AUTHORITY_HOST")
        .ok()
        .filter(|v| !v.trim().is_empty());
    crate::config::Auth::entra_from_env()?
        .credential(authority_host, &options.tls)?
        .ok_or_else(|| Error::Config("an access key is not an Entra credential".into()))
}
