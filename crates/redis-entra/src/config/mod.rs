//! Configuration from Service Connector's variables (or built in code): where the cache is, and
//! how to sign in to it.
//!
//! [`RedisConfig::from_env`] reads, Service Connector's names first:
//!
//! | variable | meaning |
//! |---|---|
//! | `AZURE_REDIS_HOST`, `AZURE_REDIS_PORT`, `AZURE_REDIS_DATABASE`, `AZURE_REDIS_SSL` | where |
//! | `AZURE_REDIS_CLIENTID`, `AZURE_REDIS_CLIENTSECRET`, `AZURE_REDIS_TENANTID` | service principal, or (client id alone) user-assigned managed identity |
//! | `AZURE_REDIS_CONNECTIONSTRING`, `AZURE_REDIS_PASSWORD` | an access key |
//! | `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`, `AZURE_TENANT_ID`, `AZURE_CLIENT_CERTIFICATE_PATH` (+ `_PASSWORD`, `AZURE_CLIENT_SEND_CERTIFICATE_CHAIN`), `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_AUTHORITY_HOST`, `IDENTITY_ENDPOINT`/`IDENTITY_HEADER` | the Azure SDK's |
//!
//! With no secret and no key, it is a managed identity (system-assigned unless a client id is
//! set). A combination that cannot be right is an error naming the variables, never a guess.

mod connection_string;
mod profile;

use std::path::PathBuf;
use std::sync::Arc;

use azure_core::credentials::TokenCredential;

pub use connection_string::ConnectionString;
pub use profile::{AzureCloud, AzureProfile, AzureService, SCOPE, SCOPE_APP_ID};

use crate::connect::options::{ConnectOptions, Protocol};
use crate::credential::{
    client_certificate, client_secret, managed_identity, workload_identity, AccessKeyCredential,
    CertificateSource, ClientCertificateOptions, ClientSecretOptions, ManagedIdentityOptions,
    UserAssignedId, WorkloadIdentityOptions,
};
use crate::error::{Error, Result};
use crate::tls::TlsOptions;
use crate::token::manager::{TokenManager, TokenManagerOptions, Username};
use crate::EntraConnection;

/// How to sign in.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Auth {
    /// A service principal with a client secret.
    ClientSecret {
        /// Tenant id.
        tenant_id: String,
        /// Application (client) id.
        client_id: String,
        /// The secret's value.
        secret: String,
    },
    /// A managed identity; user-assigned when an id is given.
    ManagedIdentity {
        /// The user-assigned identity's client id, if any.
        client_id: Option<String>,
    },
    /// A service principal with a certificate (`AZURE_CLIENT_CERTIFICATE_PATH`): PEM or
    /// PKCS#12, signed assertions in pure Rust (see
    /// [`ClientCertificateCredential`](crate::credential::ClientCertificateCredential)).
    ClientCertificate {
        /// Tenant id.
        tenant_id: String,
        /// Application (client) id.
        client_id: String,
        /// The PEM or PKCS#12 file.
        path: PathBuf,
        /// The password of the PKCS#12 file or encrypted PEM key
        /// (`AZURE_CLIENT_CERTIFICATE_PASSWORD`).
        password: Option<String>,
        /// Send the chain as `x5c` (`AZURE_CLIENT_SEND_CERTIFICATE_CHAIN`).
        send_certificate_chain: bool,
    },
    /// AKS workload identity: a federated service-account token exchanged for an Entra token.
    WorkloadIdentity {
        /// Tenant id.
        tenant_id: String,
        /// Application (client) id.
        client_id: String,
        /// The projected service-account token file.
        token_file: PathBuf,
    },
    /// An access key (no Entra ID).
    AccessKey {
        /// The key.
        key: String,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ClientSecret {
                tenant_id,
                client_id,
                ..
            } => f
                .debug_struct("ClientSecret")
                .field("tenant_id", tenant_id)
                .field("client_id", client_id)
                .field("secret", &"<redacted>")
                .finish(),
            Self::ClientCertificate {
                tenant_id,
                client_id,
                path,
                password,
                send_certificate_chain,
            } => f
                .debug_struct("ClientCertificate")
                .field("tenant_id", tenant_id)
                .field("client_id", client_id)
                .field("path", path)
                .field("password", &password.as_ref().map(|_| "<redacted>"))
                .field("send_certificate_chain", send_certificate_chain)
                .finish(),
            Self::ManagedIdentity { client_id } => f
                .debug_struct("ManagedIdentity")
                .field("client_id", client_id)
                .finish(),
            Self::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
            } => f
                .debug_struct("WorkloadIdentity")
                .field("tenant_id", tenant_id)
                .field("client_id", client_id)
                .field("token_file", token_file)
                .finish(),
            Self::AccessKey { .. } => f
                .debug_struct("AccessKey")
                .field("key", &"<redacted>")
                .finish(),
        }
    }
}

impl Auth {
    /// A name for people.
    pub fn describe(&self) -> String {
        match self {
            Self::ClientSecret { client_id, .. } => {
                format!("service principal {client_id} with a client secret")
            }
            Self::ClientCertificate { client_id, .. } => {
                format!("service principal {client_id} with a certificate")
            }
            Self::ManagedIdentity { client_id: None } => "system-assigned managed identity".into(),
            Self::ManagedIdentity {
                client_id: Some(id),
            } => {
                format!("user-assigned managed identity {id}")
            }
            Self::WorkloadIdentity { client_id, .. } => format!("workload identity {client_id}"),
            Self::AccessKey { .. } => "access key".into(),
        }
    }
}

/// Where the cache is and how to sign in to it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// Host name.
    pub host: String,
    /// TLS port.
    pub port: u16,
    /// Database number.
    pub db: i64,
    /// RESP2 or RESP3.
    pub protocol: Protocol,
    /// How to sign in.
    pub auth: Auth,
    /// The Entra authority host (`AZURE_AUTHORITY_HOST`), if not the cloud's default.
    pub authority_host: Option<String>,
    /// Whom to trust.
    pub tls: TlsOptions,
    /// What the host name says about the service.
    pub profile: AzureProfile,
}

fn config_error(msg: impl Into<String>) -> Error {
    Error::Config(msg.into())
}

/// Reads variables through `lookup`, rejecting set-but-empty ones.
struct Vars<F: Fn(&str) -> Option<String>>(F);

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    fn get(&self, name: &str) -> Result<Option<String>> {
        match (self.0)(name) {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => Err(config_error(format!(
                "{name} is set but empty: give it a value or unset it"
            ))),
            Some(v) => Ok(Some(v.trim().to_string())),
        }
    }
}

fn parse_port(name: &str, v: &str) -> Result<u16> {
    match v.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(config_error(format!(
            "{name}={v:?} is not a port number (1-65535); Azure Cache for Redis uses 6380, Azure Managed Redis 10000"
        ))),
    }
}

impl RedisConfig {
    /// A configuration for `host` signing in with `auth`, with the profile's defaults.
    ///
    /// ```
    /// use redis_entra::config::{Auth, RedisConfig};
    /// let c = RedisConfig::new("mycache.redis.cache.windows.net", Auth::ManagedIdentity { client_id: None });
    /// assert_eq!(c.port, 6380);
    /// ```
    pub fn new(host: impl Into<String>, auth: Auth) -> Self {
        let host = host.into();
        let profile = AzureProfile::from_host(&host);
        Self {
            port: profile.default_port(),
            protocol: profile.default_protocol(),
            db: 0,
            host,
            auth,
            authority_host: None,
            tls: TlsOptions::default(),
            profile,
        }
    }

    /// Reads the process environment (see the [module docs](self)).
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (for tests, or other sources of settings).
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let vars = Vars(lookup);
        let conn_str = match vars.get("AZURE_REDIS_CONNECTIONSTRING")? {
            Some(s) => Some(ConnectionString::parse(&s, "AZURE_REDIS_CONNECTIONSTRING")?),
            None => None,
        };

        // Where.
        let host_var = vars.get("AZURE_REDIS_HOST")?;
        let (host, host_port) = match (&host_var, &conn_str) {
            (Some(h), _) => {
                if h.contains("://") {
                    return Err(config_error(format!(
                        "AZURE_REDIS_HOST={h:?} is a URL: give the host name alone (e.g. mycache.redis.cache.windows.net), or put the URL in AZURE_REDIS_CONNECTIONSTRING"
                    )));
                }
                if h.contains(char::is_whitespace) || h.contains('@') || h.contains('/') {
                    return Err(config_error(format!(
                        "AZURE_REDIS_HOST={h:?} is not a host name"
                    )));
                }
                let parsed = ConnectionString::parse(h, "AZURE_REDIS_HOST")?;
                if let Some(cs) = &conn_str {
                    if !cs.host.eq_ignore_ascii_case(&parsed.host) {
                        return Err(config_error(format!(
                            "AZURE_REDIS_HOST ({}) and AZURE_REDIS_CONNECTIONSTRING ({}) name different hosts: keep one",
                            parsed.host, cs.host
                        )));
                    }
                }
                (parsed.host, parsed.port)
            }
            (None, Some(cs)) => (cs.host.clone(), cs.port),
            (None, None) => {
                return Err(config_error(
                    "no Redis host: set AZURE_REDIS_HOST (e.g. mycache.redis.cache.windows.net) or AZURE_REDIS_CONNECTIONSTRING",
                ))
            }
        };
        let profile = AzureProfile::from_host(&host);
        let port_var = match vars.get("AZURE_REDIS_PORT")? {
            Some(p) => Some(parse_port("AZURE_REDIS_PORT", &p)?),
            None => None,
        };
        let other_port = host_port.or(conn_str.as_ref().and_then(|c| c.port));
        if let (Some(a), Some(b)) = (port_var, other_port) {
            if a != b {
                return Err(config_error(format!(
                    "AZURE_REDIS_PORT={a} disagrees with the port {b} in AZURE_REDIS_HOST/AZURE_REDIS_CONNECTIONSTRING: keep one"
                )));
            }
        }
        let port = port_var.or(other_port).unwrap_or(profile.default_port());
        let (ssl, ssl_var) = match vars.get("AZURE_REDIS_SSL")? {
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => (Some(true), "AZURE_REDIS_SSL"),
                "false" | "0" | "no" => (Some(false), "AZURE_REDIS_SSL"),
                _ => {
                    return Err(config_error(format!(
                        "AZURE_REDIS_SSL={v:?} is not true or false"
                    )))
                }
            },
            None => (
                conn_str.as_ref().and_then(|c| c.ssl),
                "AZURE_REDIS_CONNECTIONSTRING",
            ),
        };
        if ssl == Some(false) {
            return Err(config_error(format!(
                "{ssl_var} turns TLS off: redis-entra connects over TLS only, as Azure requires for Entra ID and by default for keys; use rediss:// or ssl=True on port 6380 (10000 on Managed Redis)"
            )));
        }
        let db = match vars.get("AZURE_REDIS_DATABASE")? {
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n >= 0 => n,
                _ => {
                    return Err(config_error(format!(
                        "AZURE_REDIS_DATABASE={v:?} is not a database number (0, 1, …)"
                    )))
                }
            },
            None => conn_str.as_ref().and_then(|c| c.db).unwrap_or(0),
        };

        // How to sign in.
        let key_var = vars.get("AZURE_REDIS_PASSWORD")?;
        let cs_key = conn_str.as_ref().and_then(|c| c.password.clone());
        if let (Some(a), Some(b)) = (&key_var, &cs_key) {
            if a != b {
                return Err(config_error(
                    "AZURE_REDIS_PASSWORD and the password in AZURE_REDIS_CONNECTIONSTRING differ: keep one",
                ));
            }
        }
        if conn_str.is_some() && cs_key.is_none() && key_var.is_none() {
            return Err(config_error(
                "AZURE_REDIS_CONNECTIONSTRING has no password: it should be rediss://:<access key>@<host>:6380/0 (or unset it to use Entra ID)",
            ));
        }
        let key = key_var.or(cs_key);
        let redis_client = vars.get("AZURE_REDIS_CLIENTID")?;
        let redis_secret = vars.get("AZURE_REDIS_CLIENTSECRET")?;
        let redis_tenant = vars.get("AZURE_REDIS_TENANTID")?;
        let authority_host = vars.get("AZURE_AUTHORITY_HOST")?;
        if let Some(a) = &authority_host {
            if !a.to_ascii_lowercase().starts_with("https://") {
                return Err(config_error(format!(
                    "AZURE_AUTHORITY_HOST={a:?} must be an https:// URL (e.g. https://login.microsoftonline.com)"
                )));
            }
        }
        match (vars.get("IDENTITY_ENDPOINT")?, vars.get("IDENTITY_HEADER")?) {
            (Some(_), None) => {
                return Err(config_error(
                    "IDENTITY_ENDPOINT is set without IDENTITY_HEADER: App Service and Container Apps set both; set or unset them together",
                ))
            }
            (None, Some(_)) => {
                return Err(config_error(
                    "IDENTITY_HEADER is set without IDENTITY_ENDPOINT: set or unset them together",
                ))
            }
            _ => {}
        }

        let auth = if let Some(key) = key {
            if redis_client.is_some() || redis_secret.is_some() || redis_tenant.is_some() {
                return Err(config_error(
                    "both an access key (AZURE_REDIS_PASSWORD or AZURE_REDIS_CONNECTIONSTRING) and an Entra identity (AZURE_REDIS_CLIENTID/CLIENTSECRET/TENANTID) are set: keep the one Service Connector set for this connection",
                ));
            }
            Auth::AccessKey { key }
        } else {
            entra_auth(&vars)?
        };

        Ok(Self {
            host,
            port,
            db,
            protocol: profile.default_protocol(),
            auth,
            authority_host,
            tls: TlsOptions::default(),
            profile,
        })
    }

    /// Where to connect.
    pub fn connect_options(&self) -> ConnectOptions {
        let mut o = ConnectOptions::new(self.host.clone(), self.port);
        o.db = self.db;
        o.protocol = self.protocol;
        o.tls = self.tls.clone();
        o
    }

    /// The Entra credential the configuration names (`None` for an access key).
    pub fn credential(&self) -> Result<Option<Arc<dyn TokenCredential>>> {
        let authority_host = self
            .authority_host
            .clone()
            .or_else(|| match self.profile.cloud {
                AzureCloud::Public => None,
                cloud => Some(cloud.authority_host().to_string()),
            });
        self.auth.credential(authority_host, &self.tls)
    }

    /// A token manager for this configuration. An access key goes through the same machinery:
    /// a credential that hands out the key, and the fixed username `default`
    /// (`AUTH default <key>`), so a key connection is kept and reconnected like an Entra one.
    pub fn token_manager(&self) -> Result<TokenManager> {
        if let Auth::AccessKey { key } = &self.auth {
            return Ok(TokenManager::new(
                Arc::new(AccessKeyCredential::new(key.clone())),
                TokenManagerOptions {
                    username: Username::Fixed("default".into()),
                    ..TokenManagerOptions::default()
                },
            ));
        }
        let credential = self
            .credential()?
            .ok_or_else(|| config_error("no credential for this configuration"))?;
        Ok(TokenManager::new(
            credential,
            TokenManagerOptions::default(),
        ))
    }

    /// Connects as configured (Entra ID or an access key), kept authenticated.
    pub async fn connect(&self) -> Result<EntraConnection> {
        EntraConnection::connect(self.connect_options(), self.token_manager()?).await
    }
}

/// The Entra sign-in the variables describe (no access key involved).
fn entra_auth<F: Fn(&str) -> Option<String>>(vars: &Vars<F>) -> Result<Auth> {
    let redis_client = vars.get("AZURE_REDIS_CLIENTID")?;
    let redis_secret = vars.get("AZURE_REDIS_CLIENTSECRET")?;
    let redis_tenant = vars.get("AZURE_REDIS_TENANTID")?;
    let sdk_client = vars.get("AZURE_CLIENT_ID")?;
    let sdk_secret = vars.get("AZURE_CLIENT_SECRET")?;
    let sdk_tenant = vars.get("AZURE_TENANT_ID")?;
    let token_file = vars.get("AZURE_FEDERATED_TOKEN_FILE")?;
    let auth = if let Some(secret) = redis_secret {
        let client_id = redis_client.ok_or_else(|| {
            config_error("AZURE_REDIS_CLIENTSECRET is set but AZURE_REDIS_CLIENTID is not: set it to the application (client) id")
        })?;
        let tenant_id = redis_tenant.or(sdk_tenant).ok_or_else(|| {
            config_error("AZURE_REDIS_CLIENTSECRET is set but AZURE_REDIS_TENANTID is not: set it to the tenant (directory) id")
        })?;
        Auth::ClientSecret {
            tenant_id,
            client_id,
            secret,
        }
    } else if let Some(client_id) = redis_client {
        match (token_file, redis_tenant.or(sdk_tenant.clone())) {
            (Some(file), Some(tenant_id)) => Auth::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file: PathBuf::from(file),
            },
            (Some(_), None) => {
                return Err(config_error(
                    "AZURE_FEDERATED_TOKEN_FILE (workload identity) needs a tenant: set AZURE_TENANT_ID or AZURE_REDIS_TENANTID",
                ))
            }
            (None, _) if vars.get("AZURE_REDIS_TENANTID")?.is_some() => {
                return Err(config_error(
                    "AZURE_REDIS_TENANTID and AZURE_REDIS_CLIENTID are set without AZURE_REDIS_CLIENTSECRET: set the secret for a service principal, or unset the tenant for a user-assigned managed identity",
                ))
            }
            (None, _) => Auth::ManagedIdentity {
                client_id: Some(client_id),
            },
        }
    } else if let Some(secret) = sdk_secret {
        let client_id = sdk_client.ok_or_else(|| {
            config_error("AZURE_CLIENT_SECRET is set but AZURE_CLIENT_ID is not: set it to the application (client) id")
        })?;
        let tenant_id = sdk_tenant.ok_or_else(|| {
            config_error("AZURE_CLIENT_SECRET is set but AZURE_TENANT_ID is not: set it to the tenant (directory) id")
        })?;
        Auth::ClientSecret {
            tenant_id,
            client_id,
            secret,
        }
    } else if let Some(file) = token_file {
        let client_id = sdk_client.ok_or_else(|| {
            config_error("AZURE_FEDERATED_TOKEN_FILE is set but AZURE_CLIENT_ID is not (the workload identity webhook sets both)")
        })?;
        let tenant_id = sdk_tenant.ok_or_else(|| {
            config_error("AZURE_FEDERATED_TOKEN_FILE is set but AZURE_TENANT_ID is not (the workload identity webhook sets both)")
        })?;
        Auth::WorkloadIdentity {
            tenant_id,
            client_id,
            token_file: PathBuf::from(file),
        }
    } else if let Some(path) = vars.get("AZURE_CLIENT_CERTIFICATE_PATH")? {
        let client_id = sdk_client.ok_or_else(|| {
            config_error("AZURE_CLIENT_CERTIFICATE_PATH is set but AZURE_CLIENT_ID is not: set it to the application (client) id")
        })?;
        let tenant_id = sdk_tenant.ok_or_else(|| {
            config_error("AZURE_CLIENT_CERTIFICATE_PATH is set but AZURE_TENANT_ID is not: set it to the tenant (directory) id")
        })?;
        let send_certificate_chain = match vars.get("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN")? {
            None => false,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "1" | "true" => true,
                "0" | "false" => false,
                _ => {
                    return Err(config_error(format!(
                        "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN={v:?} is not true/false (or 1/0)"
                    )))
                }
            },
        };
        Auth::ClientCertificate {
            tenant_id,
            client_id,
            path: PathBuf::from(path),
            password: (vars.0)("AZURE_CLIENT_CERTIFICATE_PASSWORD").filter(|p| !p.is_empty()),
            send_certificate_chain,
        }
    } else if vars.get("AZURE_USERNAME")?.is_some() {
        if vars.get("AZURE_PASSWORD")?.is_none() {
            return Err(config_error(
                "AZURE_USERNAME is set without AZURE_PASSWORD: set both for a user's sign-in, or neither",
            ));
        }
        return Err(config_error(
            "AZURE_USERNAME and AZURE_PASSWORD are set, but RedisConfig does not sign users in: use redis_entra::credential::default_azure_credential (its EnvironmentCredential reads them) or credential::username_password with EntraConnection, or use a service principal or a managed identity",
        ));
    } else {
        Auth::ManagedIdentity {
            client_id: sdk_client,
        }
    };
    Ok(auth)
}

impl Auth {
    /// The Entra sign-in the process environment describes, ignoring access keys (for tools
    /// that need a token but no cache, like `redis-entra token`).
    pub fn entra_from_env() -> Result<Self> {
        entra_auth(&Vars(|name: &str| std::env::var(name).ok()))
    }

    /// The credential for this sign-in (`None` for an access key). `authority_host` overrides
    /// `AZURE_AUTHORITY_HOST` and the public cloud.
    ///
    /// One rule for every entry point (this, [`RedisConfig::connect`],
    /// [`credential::from_env`](crate::credential::from_env) and the `redis-entra` command):
    /// when no identity is named at all, or `AZURE_TOKEN_CREDENTIALS` is set, it is the
    /// [`default_azure_credential`](crate::credential::default_azure_credential) chain (see
    /// [`prefers_default_chain`](crate::credential::prefers_default_chain)), so the same program
    /// signs in with a VM's managed identity and with a developer's `az login`.
    pub fn credential(
        &self,
        authority_host: Option<String>,
        tls: &TlsOptions,
    ) -> Result<Option<Arc<dyn TokenCredential>>> {
        if crate::credential::prefers_default_chain(self) {
            let chain = crate::credential::default_azure_credential(
                crate::credential::DefaultAzureCredentialOptions {
                    tls: tls.clone(),
                    authority_host,
                    ..Default::default()
                },
            )?;
            return Ok(Some(chain));
        }
        let credential: Arc<dyn TokenCredential> = match self {
            Self::AccessKey { .. } => return Ok(None),
            Self::ClientSecret {
                tenant_id,
                client_id,
                secret,
            } => client_secret(ClientSecretOptions {
                tenant_id: tenant_id.clone(),
                client_id: client_id.clone(),
                secret: secret.clone(),
                authority_host,
                tls: tls.clone(),
            })?,
            Self::ManagedIdentity { client_id } => managed_identity(ManagedIdentityOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                tls: tls.clone(),
            })?,
            Self::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
            } => workload_identity(WorkloadIdentityOptions {
                tenant_id: tenant_id.clone(),
                client_id: client_id.clone(),
                token_file: token_file.clone(),
                authority_host,
                tls: tls.clone(),
            })?,
            Self::ClientCertificate {
                tenant_id,
                client_id,
                path,
                password,
                send_certificate_chain,
            } => client_certificate(ClientCertificateOptions {
                tenant_id: tenant_id.clone(),
                client_id: client_id.clone(),
                certificate: CertificateSource::Path(path.clone()),
                password: password.clone(),
                send_certificate_chain: *send_certificate_chain,
                authority_host,
                tls: tls.clone(),
                ..Default::default()
            })?,
        };
        Ok(Some(credential))
    }
}
