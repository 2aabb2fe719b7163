//! Credentials: one file per way to sign in, all behind azure_core's `TokenCredential`, so they
//! compose with every Azure SDK crate, and [`from_env`] to choose one from the environment the
//! way Service Connector sets it up.

mod client_secret;
mod http;
mod managed_identity;

use std::sync::Arc;

use azure_core::credentials::TokenCredential;

pub use client_secret::{client_secret, ClientSecretOptions};
pub use http::client_options;
pub use managed_identity::{managed_identity, ManagedIdentityOptions, UserAssignedId};

use crate::error::{Error, Result};
use crate::tls::TlsOptions;

/// Options for [`from_env`].
#[derive(Debug, Clone, Default)]
pub struct FromEnvOptions {
    /// Whom to trust for token requests.
    pub tls: TlsOptions,
}

/// The Entra credential the environment describes: Service Connector's variables first, then
/// the Azure SDK's; a managed identity when there is no secret (see [`crate::config`]).
pub fn from_env(options: &FromEnvOptions) -> Result<Arc<dyn TokenCredential>> {
    let authority_host = std::env::var("AZURE_AUTHORITY_HOST")
        .ok()
        .filter(|v| !v.trim().is_empty());
    crate::config::Auth::entra_from_env()?
        .credential(authority_host, &options.tls)?
        .ok_or_else(|| Error::Config("an access key is not an Entra credential".into()))
}
