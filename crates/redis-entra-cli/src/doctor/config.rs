//! The configuration check: which variables are set (secrets shown as set, never their value),
//! where the command will connect, which credential the variables select, and combinations that
//! cannot be right.
//!
//! The verdict on the variables is the library's ([`RedisConfig::from_vars`](redis_entra::config::RedisConfig::from_vars), the one reader
//! of Service Connector's and the Azure SDK's names); this adds what is worth knowing even when
//! it is not an error (variables that disagree or are ignored, a secret that looks like an ID).

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use redis_entra::config::Auth;
use redis_entra::{ConnectOptions, RedisCredentials, TokenClaims};

use super::Check;
use crate::exit;
use crate::settings::{env, ConnectionArgs};

/// The variables the command reads, and whether each holds a secret.
const VARIABLES: &[(&str, bool)] = &[
    ("AZURE_REDIS_HOST", false),
    ("AZURE_REDIS_PORT", false),
    ("AZURE_REDIS_DATABASE", false),
    ("AZURE_REDIS_SSL", false),
    ("AZURE_REDIS_CLIENTID", false),
    ("AZURE_REDIS_CLIENTSECRET", true),
    ("AZURE_REDIS_TENANTID", false),
    ("AZURE_REDIS_PASSWORD", true),
    ("AZURE_REDIS_CONNECTIONSTRING", true),
    ("AZURE_CLIENT_ID", false),
    ("AZURE_CLIENT_SECRET", true),
    ("AZURE_TENANT_ID", false),
    ("AZURE_AUTHORITY_HOST", false),
    ("AZURE_CLIENT_CERTIFICATE_PATH", false),
    ("AZURE_CLIENT_CERTIFICATE_PASSWORD", true),
    ("AZURE_FEDERATED_TOKEN_FILE", false),
    ("AZURE_USERNAME", false),
    ("AZURE_PASSWORD", true),
    ("IDENTITY_ENDPOINT", false),
    ("IDENTITY_HEADER", true),
    ("MSI_ENDPOINT", false),
    ("MSI_SECRET", true),
    ("SSL_CERT_FILE", false),
    ("SSL_CERT_DIR", false),
];

/// What the configuration check found, for the checks after it.
pub struct Config {
    /// The check as printed.
    pub check: Check,
    /// Where to connect, if the host and port are known.
    pub options: Option<ConnectOptions>,
    /// The credential the environment selects, if it could be built.
    pub credential: Option<Arc<dyn TokenCredential>>,
    /// Whether that credential is a managed identity.
    pub managed_identity: bool,
    /// The access key, when the variables describe one instead of an identity (`AUTH default
    /// <key>`).
    pub access_key: Option<RedisCredentials>,
}

/// Whether `s` looks like a GUID (client ids, tenant ids and secret *ids* do; secret values
/// don't).
fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.trim().split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `NAME=value` for the variables that are set, secrets as `NAME=(set, hidden)`.
fn variables_set() -> Vec<String> {
    VARIABLES
        .iter()
        .filter_map(|(name, secret)| {
            let value = env(name)?;
            Some(if *secret {
                format!("{name}=(set, hidden)")
            } else {
                format!("{name}={value}")
            })
        })
        .collect()
}

/// The variable a client secret is read from.
pub fn secret_var() -> &'static str {
    if env("AZURE_REDIS_CLIENTSECRET").is_some() {
        "AZURE_REDIS_CLIENTSECRET"
    } else {
        "AZURE_CLIENT_SECRET"
    }
}

/// The credential in words, with where it comes from.
fn describe(auth: &Auth) -> String {
    match auth {
        Auth::ClientSecret { tenant_id, .. } => {
            format!("{} ({}), tenant {tenant_id}", auth.describe(), secret_var())
        }
        Auth::ManagedIdentity { .. } => {
            let endpoint = if env("IDENTITY_ENDPOINT").is_some() {
                "through IDENTITY_ENDPOINT (App Service, Functions, Container Apps)"
            } else if env("MSI_ENDPOINT").is_some() {
                "through MSI_ENDPOINT"
            } else {
                "through the instance metadata service of Azure VMs and AKS, since no client secret and no IDENTITY_ENDPOINT are set"
            };
            format!("{} {endpoint}", auth.describe())
        }
        other => other.describe(),
    }
}

/// Notes on variables that disagree or are ignored.
fn notes_on(auth: Option<&Auth>, port: Option<u16>) -> Vec<String> {
    let mut notes = Vec::new();
    let differ = |a: &str, b: &str| match (env(a), env(b)) {
        (Some(x), Some(y)) => x.trim() != y.trim(),
        _ => false,
    };
    for (sc, sdk) in [
        ("AZURE_REDIS_CLIENTID", "AZURE_CLIENT_ID"),
        ("AZURE_REDIS_TENANTID", "AZURE_TENANT_ID"),
        ("AZURE_REDIS_CLIENTSECRET", "AZURE_CLIENT_SECRET"),
    ] {
        if differ(sc, sdk) {
            notes.push(format!(
                "{sc} and {sdk} differ: Service Connector's {sc} takes precedence"
            ));
        }
    }
    let secret = matches!(auth, Some(Auth::ClientSecret { .. }));
    if secret && (env("IDENTITY_ENDPOINT").is_some() || env("MSI_ENDPOINT").is_some()) {
        notes.push(
            "two identities are configured, a client secret and a managed identity endpoint: the service principal (secret) is used".into(),
        );
    }
    for var in ["AZURE_REDIS_CLIENTSECRET", "AZURE_CLIENT_SECRET"] {
        if env(var).is_some_and(|v| is_guid(&v)) {
            notes.push(format!(
                "{var} looks like a GUID: that is the shape of a secret's ID, not of its value (Entra refuses it with AADSTS7000215)"
            ));
        }
    }
    if env("AZURE_FEDERATED_TOKEN_FILE").is_some()
        && !matches!(auth, Some(Auth::WorkloadIdentity { .. }))
    {
        notes.push(
            "AZURE_FEDERATED_TOKEN_FILE (workload identity) is set but not used: the credential above comes first".into(),
        );
    }
    for var in ["AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_USERNAME"] {
        if env(var).is_some() {
            notes.push(format!(
                "{var} is set but not used: the credential above comes first"
            ));
        }
    }
    if port == Some(6379) {
        notes.push("port 6379 is the non-TLS port (disabled by default on Azure); Entra ID needs TLS: 6380, or 10000 on Azure Managed Redis".into());
    }
    notes
}

/// The configuration check.
pub fn check(args: &ConnectionArgs) -> Config {
    const NAME: &str = "configuration";
    let mut notes = vec![match variables_set() {
        v if v.is_empty() => "no AZURE_* variable is set".to_string(),
        v => format!("variables set: {}", v.join(", ")),
    }];
    let config = args.config();
    // The credential, even when the cache's variables are wrong (the token check needs no
    // cache): the configuration's, else the one the identity variables alone describe.
    let auth = match &config {
        Ok(c) => Ok(c.auth.clone()),
        Err(_) => Auth::entra_from_env(),
    };
    let credential = match &config {
        Ok(c) => c.credential().map_err(anyhow::Error::new),
        Err(_) => match (&auth, args.tls()) {
            (Ok(a), Ok(tls)) => a
                .credential(env("AZURE_AUTHORITY_HOST"), &tls)
                .map_err(anyhow::Error::new),
            (Err(e), _) => Err(anyhow::anyhow!("{e}")),
            (_, Err(e)) => Err(e),
        },
    };
    let managed_identity = matches!(auth, Ok(Auth::ManagedIdentity { .. }));
    notes.extend(notes_on(
        auth.as_ref().ok(),
        config.as_ref().ok().map(|c| c.port),
    ));

    match (config, credential) {
        (Err(e), credential) => Config {
            check: Check::fail(
                NAME,
                exit::USAGE,
                format!("{e:#}"),
                "fix the variable named above: AZURE_REDIS_HOST is the cache's host name (NAME.redis.cache.windows.net, or NAME.REGION.redis.azure.net for Managed Redis), AZURE_REDIS_PORT its TLS port (6380, or 10000); -h and -p override them",
            )
            .with_notes(notes),
            options: None,
            credential: credential.ok().flatten(),
            managed_identity,
            access_key: None,
        },
        (Ok(config), Ok(Some(credential))) => {
            let from = |flag: bool, flag_name: &str, var: &str| {
                if flag {
                    flag_name.to_string()
                } else if env(var).is_some() {
                    var.to_string()
                } else {
                    "default".to_string()
                }
            };
            let line = format!(
                "{}:{} db {} (host from {}, port from {}); credential: {}",
                config.host,
                config.port,
                config.db,
                from(args.host.is_some(), "-h", "AZURE_REDIS_HOST"),
                from(args.port.is_some(), "-p", "AZURE_REDIS_PORT"),
                describe(&config.auth)
            );
            Config {
                check: Check::ok(NAME, line).with_notes(notes),
                options: Some(config.connect_options()),
                credential: Some(credential),
                managed_identity,
                access_key: None,
            }
        }
        (Ok(config), Ok(None)) => {
            let key = match &config.auth {
                Auth::AccessKey { key } => Some(RedisCredentials::new(
                    "default",
                    key.clone(),
                    std::time::SystemTime::now() + std::time::Duration::from_secs(86_400),
                    TokenClaims::default(),
                )),
                _ => None,
            };
            notes.push("Microsoft recommends Microsoft Entra ID over access keys, which can be disabled or regenerated on the cache: set an identity (Service Connector's AZURE_REDIS_CLIENTID/AZURE_REDIS_CLIENTSECRET/AZURE_REDIS_TENANTID, or a managed identity) to sign in with Entra ID".into());
            Config {
                check: Check::ok(
                    NAME,
                    format!(
                        "{}:{} db {}; credential: an access key (AZURE_REDIS_PASSWORD or AZURE_REDIS_CONNECTIONSTRING), sent as AUTH default <key>",
                        config.host, config.port, config.db
                    ),
                )
                .with_notes(notes),
                options: Some(config.connect_options()),
                credential: None,
                managed_identity,
                access_key: key,
            }
        }
        (Ok(config), Err(e)) => Config {
            check: Check::fail(
                NAME,
                exit::USAGE,
                format!("the credential cannot be set up: {e:#}"),
                "set a complete identity: AZURE_REDIS_CLIENTID + AZURE_REDIS_CLIENTSECRET + AZURE_REDIS_TENANTID (or AZURE_CLIENT_ID + AZURE_CLIENT_SECRET + AZURE_TENANT_ID) for a service principal; no secret for a managed identity",
            )
            .with_notes(notes),
            options: Some(config.connect_options()),
            credential: None,
            managed_identity,
            access_key: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_guids() {
        assert!(is_guid("10359720-21b8-457e-8d45-0f527e33876c"));
        assert!(!is_guid("Abc8Q~xyz.secret-value"));
        assert!(!is_guid(""));
    }
}
