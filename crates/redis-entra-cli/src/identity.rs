//! Which identity signs in: the credential, and the [`CacheKey`] its tokens are cached under.
//!
//! Without `--credential`, the configuration decides (Service Connector's and the Azure SDK's
//! variables, see [`redis_entra::config`]); the key names the same identity the credential
//! will sign in as, from non-secret facts only (kind, authority, tenant, client id, endpoint).

// The library's option structs are filled field by field from their defaults, not with struct
// expressions: they may become #[non_exhaustive], which forbids struct expressions (even with
// `..Default::default()`) outside their crate.
#![allow(clippy::field_reassign_with_default)]

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use redis_entra::config::{Auth, RedisConfig};

use crate::settings;
use crate::token_cache::CacheKey;

/// A credential, and the key to cache its tokens under (`None`: not cached).
pub struct Identity {
    /// Asks for tokens.
    pub credential: Arc<dyn TokenCredential>,
    /// Names the identity in the token cache.
    pub cache_key: Option<CacheKey>,
}

/// The authority host tokens come from: `AZURE_AUTHORITY_HOST`, else the cloud's.
pub fn authority(config: &RedisConfig) -> String {
    config
        .authority_host
        .clone()
        .unwrap_or_else(|| config.profile.cloud.authority_host().to_string())
}

fn var(name: &str) -> Option<String> {
    settings::env(name)
}

/// The size and modification time of a file, as text (`absent` when it isn't there): part of
/// a key whose identity lives in a tool's files (`az login` rewrites `azureProfile.json`), so
/// that signing in as someone else stops the old token being served.
pub fn file_stamp(path: &std::path::Path) -> String {
    match std::fs::metadata(path) {
        Ok(meta) => {
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{} bytes, modified {modified}", meta.len())
        }
        Err(_) => "absent".into(),
    }
}

/// The Azure CLI's configuration folder: `AZURE_CONFIG_DIR`, else `~/.azure`.
pub fn azure_config_dir() -> Option<std::path::PathBuf> {
    var("AZURE_CONFIG_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| var("HOME").map(|h| std::path::Path::new(&h).join(".azure")))
}

/// The key of the `DefaultAzureCredential` chain: every variable that steers it, and the Azure
/// CLI's sign-in (its profile file's stamp).
pub fn default_chain_key(authority: &str) -> CacheKey {
    let mut key = CacheKey::new("default").with("authority", Some(authority));
    for name in [
        "AZURE_TOKEN_CREDENTIALS",
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_USERNAME",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_CLIENT_CERTIFICATE_PATH",
        "IDENTITY_ENDPOINT",
        "MSI_ENDPOINT",
    ] {
        key = key.with(name, var(name).as_deref());
    }
    azure_cli_facts(key)
}

/// Adds the Azure CLI's configuration folder and its sign-in file's stamp.
pub fn azure_cli_facts(key: CacheKey) -> CacheKey {
    let dir = azure_config_dir();
    let stamp = dir
        .as_ref()
        .map(|d| file_stamp(&d.join("azureProfile.json")));
    key.with("azure_config_dir", dir.as_ref().and_then(|d| d.to_str()))
        .with("azure_profile", stamp.as_deref())
}

/// The managed-identity endpoint in use: App Service's `IDENTITY_ENDPOINT`, else IMDS.
pub fn managed_identity_endpoint() -> String {
    var("IDENTITY_ENDPOINT")
        .or_else(|| var("MSI_ENDPOINT"))
        .unwrap_or_else(|| format!("imds {}", redis_entra::credential::imds::address()))
}

/// The cache key of the sign-in `config` describes (`None` for an access key, or a kind this
/// command doesn't know).
pub fn key_of(config: &RedisConfig) -> Option<CacheKey> {
    let authority = authority(config);
    if redis_entra::credential::prefers_default_chain(&config.auth) {
        return Some(default_chain_key(&authority));
    }
    let key = match &config.auth {
        Auth::ClientSecret {
            tenant_id,
            client_id,
            secret,
        } => CacheKey::new("client-secret")
            .with("authority", Some(&authority))
            .with("tenant", Some(tenant_id))
            .with("client_id", Some(client_id))
            .with_secret("secret", secret),
        Auth::ClientCertificate {
            tenant_id,
            client_id,
            path,
            ..
        } => CacheKey::new("client-certificate")
            .with("authority", Some(&authority))
            .with("tenant", Some(tenant_id))
            .with("client_id", Some(client_id))
            .with("certificate", path.to_str())
            .with("certificate_file", Some(&file_stamp(path))),
        Auth::ManagedIdentity { client_id } => CacheKey::new("managed-identity")
            .with("endpoint", Some(&managed_identity_endpoint()))
            .with("client_id", client_id.as_deref()),
        Auth::WorkloadIdentity {
            tenant_id,
            client_id,
            token_file,
        } => CacheKey::new("workload-identity")
            .with("authority", Some(&authority))
            .with("tenant", Some(tenant_id))
            .with("client_id", Some(client_id))
            .with("token_file", token_file.to_str()),
        _ => return None,
    };
    Some(key)
}

/// `--credential`'s values, in the Azure CLI's and the SDKs' words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CredentialKind {
    /// The `DefaultAzureCredential` chain: environment, workload identity, managed identity,
    /// Azure CLI, Azure Developer CLI.
    #[value(alias = "DefaultAzureCredential")]
    Default,
    /// The account `az login` signed in (`--tenant` picks the tenant).
    #[value(alias = "AzureCliCredential")]
    AzureCli,
    /// The account `azd auth login` signed in.
    #[value(alias = "AzureDeveloperCliCredential")]
    AzureDeveloperCli,
    /// A managed identity: system-assigned, or user-assigned with --client-id.
    #[value(alias = "ManagedIdentityCredential")]
    ManagedIdentity,
    /// AKS workload identity (AZURE_FEDERATED_TOKEN_FILE).
    #[value(alias = "WorkloadIdentityCredential")]
    WorkloadIdentity,
    /// An application's secret (AZURE_REDIS_CLIENTSECRET or AZURE_CLIENT_SECRET) or
    /// certificate (AZURE_CLIENT_CERTIFICATE_PATH).
    #[value(alias = "EnvironmentCredential", alias = "ClientSecretCredential")]
    ServicePrincipal,
    /// A user's sign-in on another device, with a code.
    #[value(alias = "DeviceCodeCredential")]
    DeviceCode,
    /// A user's sign-in in the system browser.
    #[value(alias = "interactive-browser", alias = "InteractiveBrowserCredential")]
    Browser,
}

impl CredentialKind {
    fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::AzureCli => "azure-cli",
            Self::AzureDeveloperCli => "azure-developer-cli",
            Self::ManagedIdentity => "managed-identity",
            Self::WorkloadIdentity => "workload-identity",
            Self::ServicePrincipal => "service-principal",
            Self::DeviceCode => "device-code",
            Self::Browser => "browser",
        }
    }
}

/// `--credential`, `--client-id` and `--tenant`.
#[derive(Debug, Clone, Default)]
pub struct Choice {
    /// How to sign in; `None`: as the variables say.
    pub kind: Option<CredentialKind>,
    /// The application's or user-assigned identity's client id.
    pub client_id: Option<String>,
    /// The tenant.
    pub tenant: Option<String>,
}

fn usage(message: String) -> anyhow::Error {
    anyhow::Error::new(crate::exit::UsageError(message))
}

/// The first of the variables `names` that is set.
fn first_var(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| var(n))
}

impl Choice {
    fn client_id(&self) -> Option<String> {
        self.client_id
            .clone()
            .or_else(|| first_var(&["AZURE_REDIS_CLIENTID", "AZURE_CLIENT_ID"]))
    }

    fn tenant(&self) -> Option<String> {
        self.tenant
            .clone()
            .or_else(|| first_var(&["AZURE_REDIS_TENANTID", "AZURE_TENANT_ID"]))
    }

    fn refuse_flag(&self, flag: &str, given: bool, why: &str) -> anyhow::Result<()> {
        match (self.kind, given) {
            (Some(kind), true) => Err(usage(format!(
                "{flag} does not apply to --credential {}: {why}",
                kind.name()
            ))),
            _ => Ok(()),
        }
    }

    fn need(&self, what: Option<String>, message: &str) -> anyhow::Result<String> {
        what.ok_or_else(|| {
            usage(format!(
                "--credential {} {message}",
                self.kind.map_or("", CredentialKind::name)
            ))
        })
    }
}

/// The identity `choice` names; without `--credential`, the one the configuration describes.
pub fn resolve(choice: &Choice, config: &RedisConfig) -> anyhow::Result<Identity> {
    match choice.kind {
        None => Ok(Identity {
            credential: settings::entra_credential(config)?,
            cache_key: key_of(config),
        }),
        Some(kind) => chosen(kind, choice, authority(config), config.tls.clone()),
    }
}

/// The identity `--credential KIND` names, its tokens from `authority`.
pub fn chosen(
    kind: CredentialKind,
    choice: &Choice,
    authority: String,
    tls: redis_entra::TlsOptions,
) -> anyhow::Result<Identity> {
    let authority_host = Some(authority.clone());
    use redis_entra::credential as c;
    let identity = match kind {
        CredentialKind::Default => {
            let mut o = c::DefaultAzureCredentialOptions::default();
            o.tls = tls;
            o.authority_host = authority_host;
            o.tenant_id = choice.tenant.clone();
            o.managed_identity_client_id = choice.client_id.clone();
            let key = default_chain_key(&authority)
                .with("tenant_flag", choice.tenant.as_deref())
                .with("client_id_flag", choice.client_id.as_deref());
            Identity {
                credential: c::default_azure_credential(o)?,
                cache_key: Some(key),
            }
        }
        CredentialKind::AzureCli | CredentialKind::AzureDeveloperCli => {
            choice.refuse_flag(
                "--client-id",
                choice.client_id.is_some(),
                "the developer CLIs sign in as the account you logged in with (`az login`, `azd auth login`)",
            )?;
            let credential: Arc<dyn TokenCredential> = if kind == CredentialKind::AzureCli {
                let mut o = c::AzureCliOptions::default();
                o.tenant_id = choice.tenant.clone();
                c::azure_cli(o)?
            } else {
                let mut o = c::AzureDeveloperCliOptions::default();
                o.tenant_id = choice.tenant.clone();
                c::azure_developer_cli(o)?
            };
            let mut key = CacheKey::new(kind.name()).with("tenant", choice.tenant.as_deref());
            key = if kind == CredentialKind::AzureCli {
                azure_cli_facts(key)
            } else {
                let azd = var("AZD_CONFIG_DIR")
                    .map(std::path::PathBuf::from)
                    .or_else(|| var("HOME").map(|h| std::path::Path::new(&h).join(".azd")));
                let stamp = azd.as_ref().map(|d| file_stamp(&d.join("auth")));
                key.with("azd_auth", stamp.as_deref())
            };
            Identity {
                credential,
                cache_key: Some(key),
            }
        }
        CredentialKind::ManagedIdentity => {
            choice.refuse_flag(
                "--tenant",
                choice.tenant.is_some(),
                "a managed identity belongs to the tenant of the Azure resource it is attached to",
            )?;
            let client_id = choice.client_id();
            let mut o = c::ManagedIdentityOptions::default();
            o.user_assigned_id = client_id.clone().map(c::UserAssignedId::ClientId);
            o.tls = tls;
            Identity {
                credential: c::managed_identity(o)?,
                cache_key: Some(
                    CacheKey::new(kind.name())
                        .with("endpoint", Some(&managed_identity_endpoint()))
                        .with("client_id", client_id.as_deref()),
                ),
            }
        }
        CredentialKind::WorkloadIdentity => {
            let tenant = choice.need(
                choice.tenant(),
                "needs a tenant: pass --tenant or set AZURE_TENANT_ID",
            )?;
            let client_id = choice.need(
                choice.client_id(),
                "needs the application's client id: pass --client-id or set AZURE_CLIENT_ID",
            )?;
            let token_file = choice.need(
                var("AZURE_FEDERATED_TOKEN_FILE"),
                "needs AZURE_FEDERATED_TOKEN_FILE (set by the workload identity webhook on AKS)",
            )?;
            let mut o = c::WorkloadIdentityOptions::default();
            o.tenant_id = tenant.clone();
            o.client_id = client_id.clone();
            o.token_file = token_file.clone().into();
            o.authority_host = authority_host;
            o.tls = tls;
            Identity {
                credential: c::workload_identity(o)?,
                cache_key: Some(
                    CacheKey::new(kind.name())
                        .with("authority", Some(&authority))
                        .with("tenant", Some(&tenant))
                        .with("client_id", Some(&client_id))
                        .with("token_file", Some(&token_file)),
                ),
            }
        }
        CredentialKind::ServicePrincipal => {
            let tenant = choice.need(
                choice.tenant(),
                "needs a tenant: pass --tenant or set AZURE_REDIS_TENANTID (or AZURE_TENANT_ID)",
            )?;
            let client_id = choice.need(
                choice.client_id(),
                "needs the application's client id: pass --client-id or set AZURE_REDIS_CLIENTID (or AZURE_CLIENT_ID)",
            )?;
            let key = CacheKey::new(kind.name())
                .with("authority", Some(&authority))
                .with("tenant", Some(&tenant))
                .with("client_id", Some(&client_id));
            let secret = first_var(&["AZURE_REDIS_CLIENTSECRET", "AZURE_CLIENT_SECRET"]);
            let key = match (&secret, var("AZURE_CLIENT_CERTIFICATE_PATH")) {
                (Some(secret), _) => key.with_secret("secret", secret),
                (None, Some(path)) => key
                    .with("certificate", Some(&path))
                    .with("certificate_file", Some(&file_stamp(path.as_ref()))),
                (None, None) => key,
            };
            let credential: Arc<dyn TokenCredential> = if let Some(secret) = secret {
                let mut o = c::ClientSecretOptions::default();
                o.tenant_id = tenant;
                o.client_id = client_id;
                o.secret = secret;
                o.authority_host = authority_host;
                o.tls = tls;
                c::client_secret(o)?
            } else if let Some(path) = var("AZURE_CLIENT_CERTIFICATE_PATH") {
                let mut o = c::ClientCertificateOptions::default();
                o.tenant_id = tenant;
                o.client_id = client_id;
                o.certificate = c::CertificateSource::Path(path.into());
                o.password = std::env::var("AZURE_CLIENT_CERTIFICATE_PASSWORD")
                    .ok()
                    .filter(|p| !p.is_empty());
                o.send_certificate_chain = var("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN")
                    .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true"));
                o.authority_host = authority_host;
                o.tls = tls;
                c::client_certificate(o)?
            } else {
                return Err(usage(
                    "--credential service-principal needs a secret or a certificate: set AZURE_REDIS_CLIENTSECRET (or AZURE_CLIENT_SECRET) to the secret's value, or AZURE_CLIENT_CERTIFICATE_PATH to a PEM or PKCS#12 file".into(),
                ));
            };
            Identity {
                credential,
                cache_key: Some(key),
            }
        }
        CredentialKind::DeviceCode | CredentialKind::Browser => {
            // A user signs in: the tenant given, else any work or school account's.
            let tenant = choice.tenant().unwrap_or_else(|| "organizations".into());
            let client_id = choice.client_id.clone().unwrap_or_default();
            let credential: Arc<dyn TokenCredential> = if kind == CredentialKind::DeviceCode {
                let mut o = c::DeviceCodeOptions::default();
                o.tenant_id = tenant.clone();
                o.client_id = client_id.clone();
                o.authority_host = authority_host;
                o.tls = tls;
                c::device_code(o)?
            } else {
                let mut o = c::InteractiveBrowserOptions::default();
                o.tenant_id = tenant.clone();
                o.client_id = client_id.clone();
                o.authority_host = authority_host;
                o.tls = tls;
                c::interactive_browser(o)?
            };
            Identity {
                credential,
                cache_key: Some(
                    CacheKey::new(kind.name())
                        .with("authority", Some(&authority))
                        .with("tenant", Some(&tenant))
                        .with("client_id", Some(&client_id)),
                ),
            }
        }
    };
    Ok(identity)
}
