//! `DefaultAzureCredential`: the chain every Azure SDK tries, with the same variables and the
//! same order:
//!
//! | link | available when |
//! |---|---|
//! | `EnvironmentCredential` | `AZURE_CLIENT_SECRET`, `AZURE_CLIENT_CERTIFICATE_PATH` or `AZURE_USERNAME` is set (see [`EnvironmentCredential`](super::EnvironmentCredential)) |
//! | `WorkloadIdentityCredential` | `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID` and `AZURE_TENANT_ID` are set (AKS) |
//! | `ManagedIdentityCredential` | `IDENTITY_ENDPOINT` is set (App Service, Functions, Container Apps), or IMDS answers (VMs); `AZURE_CLIENT_ID` picks a user-assigned identity |
//! | `AzureCliCredential` | `az` is on `PATH` and signed in |
//! | `AzureDeveloperCliCredential` | `azd` is on `PATH` and signed in |
//!
//! `AZURE_TOKEN_CREDENTIALS` narrows it: `dev` (the two CLIs), `prod` (environment, workload
//! identity, managed identity), or one link's name. Any other value is an error listing the
//! valid ones.
//!
//! An unavailable link passes to the next; a configured link that fails stops the chain; once
//! a link succeeds, later calls go straight to it. See [`super::chain`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};

use super::azure_cli::{azure_cli, AzureCliOptions, DEFAULT_CLI_TIMEOUT};
use super::azure_developer_cli::{azure_developer_cli, AzureDeveloperCliOptions};
use super::chain::{unavailable, ChainOptions, ChainedCredential};
use super::environment::{from_lookup, process_env, EnvLookup};
use super::managed_identity::{managed_identity, ManagedIdentityOptions, UserAssignedId};
use super::workload_identity::{workload_identity, WorkloadIdentityOptions};
use crate::error::{Error, Result};
use crate::tls::TlsOptions;

/// The links' names, in order, as `AZURE_TOKEN_CREDENTIALS` spells them.
pub const LINK_NAMES: [&str; 5] = [
    "EnvironmentCredential",
    "WorkloadIdentityCredential",
    "ManagedIdentityCredential",
    "AzureCliCredential",
    "AzureDeveloperCliCredential",
];

/// Options for [`default_azure_credential`].
#[derive(Clone)]
#[non_exhaustive]
pub struct DefaultAzureCredentialOptions {
    /// Whom to trust for token requests.
    pub tls: TlsOptions,
    /// The authority host; `None` reads `AZURE_AUTHORITY_HOST`, then uses the public cloud.
    pub authority_host: Option<String>,
    /// The tenant the developer CLIs ask for (`--tenant`); `None` uses their current one.
    pub tenant_id: Option<String>,
    /// A user-assigned managed identity's client id; `None` reads `AZURE_CLIENT_ID`.
    pub managed_identity_client_id: Option<String>,
    /// Overrides `AZURE_TOKEN_CREDENTIALS` (`dev`, `prod` or a link's name).
    pub token_credentials: Option<String>,
    /// How long each developer CLI may run.
    pub cli_timeout: Duration,
    /// Before any link has succeeded, how long the managed identity link waits for IMDS
    /// when `IDENTITY_ENDPOINT` is not set, before calling itself unavailable.
    pub managed_identity_probe_timeout: Duration,
    /// Where variables come from; `None` is the process environment. (The managed identity
    /// link's endpoint variables are always read from the process environment.)
    pub env: Option<EnvLookup>,
}

authority_and_tls!(DefaultAzureCredentialOptions);

impl Default for DefaultAzureCredentialOptions {
    fn default() -> Self {
        Self {
            tls: TlsOptions::default(),
            authority_host: None,
            tenant_id: None,
            managed_identity_client_id: None,
            token_credentials: None,
            cli_timeout: DEFAULT_CLI_TIMEOUT,
            managed_identity_probe_timeout: Duration::from_secs(2),
            env: None,
        }
    }
}

impl std::fmt::Debug for DefaultAzureCredentialOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DefaultAzureCredentialOptions")
            .field("authority_host", &self.authority_host)
            .field("tenant_id", &self.tenant_id)
            .field(
                "managed_identity_client_id",
                &self.managed_identity_client_id,
            )
            .field("token_credentials", &self.token_credentials)
            .field("cli_timeout", &self.cli_timeout)
            .field(
                "managed_identity_probe_timeout",
                &self.managed_identity_probe_timeout,
            )
            .field("env", &self.env.as_ref().map(|_| "<custom>"))
            .finish_non_exhaustive()
    }
}

/// Which links `AZURE_TOKEN_CREDENTIALS` (or the option) selects.
pub fn selected_links(value: Option<&str>) -> Result<Vec<&'static str>> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(LINK_NAMES.to_vec());
    };
    if value.eq_ignore_ascii_case("dev") {
        return Ok(LINK_NAMES[3..].to_vec());
    }
    if value.eq_ignore_ascii_case("prod") {
        return Ok(LINK_NAMES[..3].to_vec());
    }
    if let Some(name) = LINK_NAMES.iter().find(|n| n.eq_ignore_ascii_case(value)) {
        return Ok(vec![name]);
    }
    Err(Error::Config(format!(
        "AZURE_TOKEN_CREDENTIALS is {value:?}, which is not one of: dev, prod, {}",
        LINK_NAMES.join(", ")
    )))
}

/// The Azure SDKs' `DefaultAzureCredential` (see the module documentation). The chain is
/// returned as itself so that [`ChainedCredential::selected_name`] can say which link won.
pub fn default_azure_credential(
    options: DefaultAzureCredentialOptions,
) -> Result<Arc<ChainedCredential>> {
    let env = options.env.clone().unwrap_or_else(process_env);
    let token_credentials = options
        .token_credentials
        .clone()
        .or_else(|| env("AZURE_TOKEN_CREDENTIALS"));
    let names = selected_links(token_credentials.as_deref())?;
    let authority_host = options
        .authority_host
        .clone()
        .or_else(|| env("AZURE_AUTHORITY_HOST"));
    let mut links: Vec<(String, Arc<dyn TokenCredential>)> = Vec::new();
    for name in names {
        let credential: Arc<dyn TokenCredential> = match name {
            "EnvironmentCredential" => {
                from_lookup(env.clone(), authority_host.clone(), &options.tls)?
            }
            "WorkloadIdentityCredential" => {
                workload_link(&env, authority_host.as_deref(), &options.tls)?
            }
            "ManagedIdentityCredential" => {
                let client_id = options
                    .managed_identity_client_id
                    .clone()
                    .or_else(|| env("AZURE_CLIENT_ID"));
                Arc::new(ManagedIdentityLink {
                    inner: managed_identity(ManagedIdentityOptions {
                        user_assigned_id: client_id.map(UserAssignedId::ClientId),
                        tls: options.tls.clone(),
                    })?,
                    endpoint_set: std::env::var_os("IDENTITY_ENDPOINT").is_some(),
                    probe_timeout: options.managed_identity_probe_timeout,
                    succeeded: AtomicBool::new(false),
                })
            }
            "AzureCliCredential" => azure_cli(AzureCliOptions {
                tenant_id: options.tenant_id.clone(),
                timeout: options.cli_timeout,
                program: None,
            })?,
            _ => azure_developer_cli(AzureDeveloperCliOptions {
                tenant_id: options.tenant_id.clone(),
                timeout: options.cli_timeout,
                program: None,
            })?,
        };
        links.push((name.to_string(), credential));
    }
    Ok(Arc::new(ChainedCredential::new(
        links,
        ChainOptions {
            name: "DefaultAzureCredential".into(),
            stop_on_failure: true,
        },
    )))
}

/// Workload identity from `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`
/// (our [`WorkloadIdentityCredential`](super::WorkloadIdentityCredential)), or unavailable.
fn workload_link(
    env: &EnvLookup,
    authority_host: Option<&str>,
    tls: &TlsOptions,
) -> Result<Arc<dyn TokenCredential>> {
    let file = env("AZURE_FEDERATED_TOKEN_FILE");
    let client = env("AZURE_CLIENT_ID");
    let tenant = env("AZURE_TENANT_ID");
    let (Some(file), Some(client_id), Some(tenant_id)) =
        (file.clone(), client.clone(), tenant.clone())
    else {
        let absent: Vec<&str> = [
            ("AZURE_FEDERATED_TOKEN_FILE", file.is_some()),
            ("AZURE_CLIENT_ID", client.is_some()),
            ("AZURE_TENANT_ID", tenant.is_some()),
        ]
        .iter()
        .filter(|(_, set)| !set)
        .map(|(n, _)| *n)
        .collect();
        return Ok(Arc::new(Unavailable(format!(
            "{} not set (on AKS, the workload identity webhook sets them when the pod's service account is annotated)",
            absent.join(", ")
        ))));
    };
    workload_identity(WorkloadIdentityOptions {
        tenant_id,
        client_id,
        token_file: file.into(),
        authority_host: authority_host.map(str::to_string),
        tls: tls.clone(),
    })
}

/// A link that is never available, saying why.
#[derive(Debug)]
struct Unavailable(String);

#[async_trait::async_trait]
impl TokenCredential for Unavailable {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        Err(unavailable(self.0.clone()))
    }
}

/// azure_identity's managed identity, made "unavailable" rather than failed when there is no
/// endpoint: without `IDENTITY_ENDPOINT`, until it has once succeeded, any failure (or no
/// answer from IMDS within the probe timeout) means there is no managed identity here.
#[derive(Debug)]
struct ManagedIdentityLink {
    inner: Arc<dyn TokenCredential>,
    endpoint_set: bool,
    probe_timeout: Duration,
    succeeded: AtomicBool,
}

#[async_trait::async_trait]
impl TokenCredential for ManagedIdentityLink {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        if self.endpoint_set || self.succeeded.load(Ordering::Relaxed) {
            let token = self.inner.get_token(scopes, options).await?;
            self.succeeded.store(true, Ordering::Relaxed);
            return Ok(token);
        }
        if !super::imds::reachable(self.probe_timeout).await {
            return Err(unavailable(format!(
                "IDENTITY_ENDPOINT is not set and the instance metadata service (IMDS, {}) did not answer within {:?}: run on Azure with a managed identity, or set IDENTITY_ENDPOINT and IDENTITY_HEADER",
                super::imds::address(),
                self.probe_timeout
            )));
        }
        match tokio::time::timeout(self.probe_timeout, self.inner.get_token(scopes, options)).await {
            Ok(Ok(token)) => {
                self.succeeded.store(true, Ordering::Relaxed);
                Ok(token)
            }
            Ok(Err(e)) => Err(unavailable(format!(
                "IDENTITY_ENDPOINT is not set and the instance metadata service (IMDS) gave no token ({}): run on Azure with a managed identity, or set IDENTITY_ENDPOINT and IDENTITY_HEADER",
                e.to_string().replace(['\r', '\n'], " ")
            ))),
            Err(_) => Err(unavailable(format!(
                "IDENTITY_ENDPOINT is not set and the instance metadata service (IMDS, 169.254.169.254) did not answer within {:?}: run on Azure with a managed identity, or set IDENTITY_ENDPOINT and IDENTITY_HEADER",
                self.probe_timeout
            ))),
        }
    }
}
