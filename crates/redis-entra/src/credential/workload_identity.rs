//! AKS workload identity: the projected Kubernetes service-account token
//! (`AZURE_FEDERATED_TOKEN_FILE`) exchanged for an Entra token through the client-assertion
//! grant, against the app's federated credential.
//!
//! The kubelet rotates the file at 80 % of the service-account token's lifetime. The Azure
//! SDKs cache its contents for 10 minutes, which can send an expired assertion (AADSTS700024)
//! right after a rotation; this credential checks the file's modification time and length on
//! every token request and re-reads it when either changed, or when the last read is older
//! than five minutes, so it always sends what the kubelet last wrote.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;

use super::client_assertion::{resolve_authority, TokenEndpoint};
use crate::error::Result;
use crate::tls::TlsOptions;

/// Re-read the file at least this often, even when it looks unchanged.
const MAX_AGE: Duration = Duration::from_secs(300);

/// What a workload identity credential needs.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct WorkloadIdentityOptions {
    /// The tenant (`AZURE_TENANT_ID`).
    pub tenant_id: String,
    /// The application or user-assigned identity's client id (`AZURE_CLIENT_ID`).
    pub client_id: String,
    /// The projected service-account token (`AZURE_FEDERATED_TOKEN_FILE`).
    pub token_file: PathBuf,
    /// The authority host; `None` reads `AZURE_AUTHORITY_HOST`, then uses the public cloud.
    pub authority_host: Option<String>,
    /// Whom to trust for the token endpoint.
    pub tls: TlsOptions,
}

impl WorkloadIdentityOptions {
    /// Workload identity federation: app `client_id` in tenant `tenant_id`, with the federated token in `token_file`.
    pub fn new(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        token_file: impl Into<PathBuf>,
    ) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            token_file: token_file.into(),
            ..Self::default()
        }
    }
}

authority_and_tls!(WorkloadIdentityOptions);

/// The file as last read. `Debug` never shows the token.
struct Snapshot {
    token: String,
    modified: Option<SystemTime>,
    len: u64,
    read_at: Instant,
}

/// An AKS workload identity credential: the projected service-account token
/// (`AZURE_FEDERATED_TOKEN_FILE`) exchanged for an Entra token as a client assertion.
///
/// The file is re-read whenever its modification time or length changed, and at least every
/// five minutes, so a token the kubelet rotated (at 80 % of its lifetime) is picked up at once;
/// the Azure SDKs cache it for ten minutes and can send an expired one (AADSTS700024). Tokens
/// are not cached: every call is a request (the [`TokenManager`](crate::TokenManager) caches
/// and refreshes). `Debug` never shows the service-account token.
pub struct WorkloadIdentityCredential {
    endpoint: TokenEndpoint,
    token_file: PathBuf,
    snapshot: Mutex<Option<Snapshot>>,
}

impl std::fmt::Debug for WorkloadIdentityCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadIdentityCredential")
            .field("endpoint", &self.endpoint)
            .field("token_file", &self.token_file)
            .finish_non_exhaustive()
    }
}

/// A workload identity credential.
pub fn workload_identity(options: WorkloadIdentityOptions) -> Result<Arc<dyn TokenCredential>> {
    Ok(Arc::new(WorkloadIdentityCredential::new(options)?))
}

impl WorkloadIdentityCredential {
    /// Checks the options; reads nothing yet (the file may appear later, as a projected volume
    /// does).
    pub fn new(options: WorkloadIdentityOptions) -> Result<Self> {
        if options.token_file.as_os_str().is_empty() {
            return Err(crate::Error::Config(
                "workload identity needs the service-account token file: set AZURE_FEDERATED_TOKEN_FILE".into(),
            ));
        }
        let authority = resolve_authority(options.authority_host.as_deref())?;
        let endpoint = TokenEndpoint::new(
            &authority,
            &options.tenant_id,
            &options.client_id,
            &options.tls,
        )?;
        Ok(Self {
            endpoint,
            token_file: options.token_file,
            snapshot: Mutex::new(None),
        })
    }

    /// The service-account token: the cached one while the file is unchanged and the read is
    /// recent, else a fresh read.
    fn assertion(&self) -> azure_core::Result<String> {
        let meta =
            std::fs::metadata(&self.token_file).map_err(|e| unreadable(&self.token_file, &e))?;
        let modified = meta.modified().ok();
        let len = meta.len();
        let mut snapshot = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = snapshot.as_ref() {
            if s.modified == modified && s.len == len && s.read_at.elapsed() < MAX_AGE {
                return Ok(s.token.clone());
            }
        }
        let text = std::fs::read_to_string(&self.token_file)
            .map_err(|e| unreadable(&self.token_file, &e))?;
        let token = text.trim().to_string();
        if token.is_empty() {
            return Err(azure_core::Error::with_message(
                ErrorKind::Credential,
                format!(
                    "the federated token file {} is empty: is the service-account token volume projected (azure.workload.identity/use: \"true\" on the pod)?",
                    self.token_file.display()
                ),
            ));
        }
        *snapshot = Some(Snapshot {
            token: token.clone(),
            modified,
            len,
            read_at: Instant::now(),
        });
        Ok(token)
    }
}

fn unreadable(path: &Path, e: &std::io::Error) -> azure_core::Error {
    azure_core::Error::with_message(
        ErrorKind::Credential,
        format!(
            "cannot read the federated token file {} ({e}): check AZURE_FEDERATED_TOKEN_FILE and that the pod has the azure.workload.identity/use label",
            path.display()
        ),
    )
}

/// What to check when Entra refuses a federated assertion.
fn workload_hint(code: u32) -> Option<&'static str> {
    match code {
        70021 => Some(
            "no federated credential of the app matches this token's issuer, subject and audience: add one for the cluster's OIDC issuer and system:serviceaccount:<namespace>:<service account>, audience api://AzureADTokenExchange",
        ),
        700024 => Some(
            "the service-account token in AZURE_FEDERATED_TOKEN_FILE has expired: is the kubelet still rotating it?",
        ),
        700016 => Some("check AZURE_CLIENT_ID (the application or identity's client id) and AZURE_TENANT_ID"),
        90002 => Some("check AZURE_TENANT_ID and AZURE_AUTHORITY_HOST"),
        _ => None,
    }
}

#[async_trait]
impl TokenCredential for WorkloadIdentityCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let assertion = self.assertion()?;
        self.endpoint
            .exchange(scopes, &assertion, workload_hint)
            .await
    }
}
