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

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Which credential the environment describes, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvCredentialKind {
    /// A service principal with a client secret.
    ClientSecret {
        /// The variable the secret came from.
        secret_var: &'static str,
    },
    /// A managed identity (user-assigned when a client id is set).
    ManagedIdentity {
        /// The user-assigned identity's client id, if any.
        client_id: Option<String>,
    },
}

/// Looks at the environment and says which credential it describes.
///
/// Service Connector's variables come first (`AZURE_REDIS_CLIENTID`, `AZURE_REDIS_CLIENTSECRET`,
/// `AZURE_REDIS_TENANTID`), then the Azure SDK's (`AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`,
/// `AZURE_TENANT_ID`). A secret means a service principal; otherwise a managed identity,
/// user-assigned when a client id is set.
pub fn env_credential_kind() -> Result<EnvCredentialKind> {
    let secret_var = if var("AZURE_REDIS_CLIENTSECRET").is_some() {
        Some("AZURE_REDIS_CLIENTSECRET")
    } else if var("AZURE_CLIENT_SECRET").is_some() {
        Some("AZURE_CLIENT_SECRET")
    } else {
        None
    };
    match secret_var {
        Some(secret_var) => Ok(EnvCredentialKind::ClientSecret { secret_var }),
        None => Ok(EnvCredentialKind::ManagedIdentity {
            client_id: var("AZURE_REDIS_CLIENTID").or_else(|| var("AZURE_CLIENT_ID")),
        }),
    }
}

/// The credential the environment describes (see [`env_credential_kind`]).
pub fn from_env(options: &FromEnvOptions) -> Result<Arc<dyn TokenCredential>> {
    match env_credential_kind()? {
        EnvCredentialKind::ClientSecret { secret_var } => {
            let (client_var, tenant_var) = if secret_var == "AZURE_REDIS_CLIENTSECRET" {
                ("AZURE_REDIS_CLIENTID", "AZURE_REDIS_TENANTID")
            } else {
                ("AZURE_CLIENT_ID", "AZURE_TENANT_ID")
            };
            let client_id = var(client_var).ok_or_else(|| {
                Error::Config(format!(
                    "{secret_var} is set but {client_var} is not: set {client_var} to the application (client) id"
                ))
            })?;
            let tenant_id = var(tenant_var)
                .or_else(|| var("AZURE_TENANT_ID"))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{secret_var} is set but {tenant_var} is not: set {tenant_var} to the tenant (directory) id"
                    ))
                })?;
            client_secret(ClientSecretOptions {
                tenant_id,
                client_id,
                secret: var(secret_var).unwrap_or_default(),
                authority_host: var("AZURE_AUTHORITY_HOST"),
                tls: options.tls.clone(),
            })
        }
        EnvCredentialKind::ManagedIdentity { client_id } => {
            managed_identity(ManagedIdentityOptions {
                user_assigned_id: client_id.map(UserAssignedId::ClientId),
                tls: options.tls.clone(),
            })
        }
    }
}
