//! A managed identity, system- or user-assigned (azure_identity's `ManagedIdentityCredential`,
//! which picks App Service / Container Apps / Functions through `IDENTITY_ENDPOINT` and
//! `IDENTITY_HEADER`, or the VM's IMDS otherwise).

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
pub use azure_identity::UserAssignedId;
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions};

use super::http::client_options;
use crate::error::Result;
use crate::tls::TlsOptions;

/// What a managed identity credential needs.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ManagedIdentityOptions {
    /// A user-assigned identity; `None` for the system-assigned one.
    pub user_assigned_id: Option<UserAssignedId>,
    /// Whom to trust (the App Service endpoint is plain HTTP; IMDS too).
    pub tls: TlsOptions,
}

impl ManagedIdentityOptions {
    /// A user-assigned identity (by client id, object id or resource id).
    pub fn user_assigned(id: UserAssignedId) -> Self {
        Self {
            user_assigned_id: Some(id),
            ..Self::default()
        }
    }

    /// Sets whom the token requests' TLS trusts.
    pub fn with_tls(mut self, tls: crate::tls::TlsOptions) -> Self {
        self.tls = tls;
        self
    }
}

/// A managed identity credential.
pub fn managed_identity(options: ManagedIdentityOptions) -> Result<Arc<dyn TokenCredential>> {
    let credential = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
        user_assigned_id: options.user_assigned_id,
        client_options: client_options(&options.tls)?,
    }))?;
    Ok(credential)
}
