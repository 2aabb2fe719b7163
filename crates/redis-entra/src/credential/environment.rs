//! The credential the Azure SDK's environment variables describe, as every Azure SDK's
//! `EnvironmentCredential` reads them:
//!
//! 1. a service principal with a secret: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
//!    `AZURE_CLIENT_SECRET`;
//! 2. a service principal with a certificate: `AZURE_CLIENT_CERTIFICATE_PATH` (with the tenant
//!    and client id);
//! 3. a user: `AZURE_USERNAME`, `AZURE_PASSWORD` (with `AZURE_TENANT_ID`, and `AZURE_CLIENT_ID`
//!    or the Azure CLI's public client id).
//!
//! With none of these set it is *unavailable* (see [`super::chain`]), naming what it looked for.
//! (Service Connector's `AZURE_REDIS_*` names are read by [`crate::config`], not here.)

use std::sync::Arc;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;

use super::chain::unavailable;
use super::client_certificate::{client_certificate, CertificateSource, ClientCertificateOptions};
use super::client_secret::{client_secret, ClientSecretOptions};
use super::username_password::{username_password, UsernamePasswordOptions};
use crate::error::Result;
use crate::tls::TlsOptions;

/// Reads a variable: the process environment by default, or anything else (for tests and
/// embedding).
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The process environment, with empty values treated as unset.
pub fn process_env() -> EnvLookup {
    Arc::new(|name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

/// Options for [`environment`].
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct EnvironmentOptions {
    /// The authority host; `None` reads `AZURE_AUTHORITY_HOST`, then uses the public cloud.
    pub authority_host: Option<String>,
    /// Whom to trust for the token endpoint.
    pub tls: TlsOptions,
    /// Where variables come from; `None` is the process environment.
    pub env: Option<EnvLookup>,
}

authority_and_tls!(EnvironmentOptions);

impl std::fmt::Debug for EnvironmentOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvironmentOptions")
            .field("authority_host", &self.authority_host)
            .field("env", &self.env.as_ref().map(|_| "<custom>"))
            .finish_non_exhaustive()
    }
}

enum Inner {
    Ready(&'static str, Arc<dyn TokenCredential>),
    Unavailable(String),
    Misconfigured(String),
}

/// The credential `AZURE_*` variables describe (see the module documentation).
pub struct EnvironmentCredential {
    inner: Inner,
}

impl std::fmt::Debug for EnvironmentCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.inner {
            Inner::Ready(kind, _) => kind,
            Inner::Unavailable(_) => "unavailable",
            Inner::Misconfigured(_) => "misconfigured",
        };
        f.debug_struct("EnvironmentCredential")
            .field("kind", &kind)
            .finish()
    }
}

/// An environment credential. It never fails to build: a missing or wrong configuration is
/// reported by `get_token`, so that a chain can move on.
pub fn environment(options: EnvironmentOptions) -> Arc<EnvironmentCredential> {
    let env = options.env.clone().unwrap_or_else(process_env);
    let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let tenant = get("AZURE_TENANT_ID");
    let client = get("AZURE_CLIENT_ID");
    let authority_host = options
        .authority_host
        .clone()
        .or_else(|| get("AZURE_AUTHORITY_HOST"));
    let inner = if let Some(secret) = get("AZURE_CLIENT_SECRET") {
        match (tenant, client) {
            (Some(tenant_id), Some(client_id)) => match client_secret(ClientSecretOptions {
                tenant_id,
                client_id,
                secret,
                authority_host,
                tls: options.tls.clone(),
            }) {
                Ok(c) => Inner::Ready("client secret", c),
                Err(e) => Inner::Misconfigured(e.to_string()),
            },
            (tenant, client) => Inner::Unavailable(missing(
                "AZURE_CLIENT_SECRET is set",
                &[
                    ("AZURE_TENANT_ID", tenant.is_some()),
                    ("AZURE_CLIENT_ID", client.is_some()),
                ],
            )),
        }
    } else if let Some(path) = get("AZURE_CLIENT_CERTIFICATE_PATH") {
        match (tenant.clone(), client.clone()) {
            (Some(tenant_id), Some(client_id)) => {
                let send_chain = get("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN")
                    .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
                match client_certificate(ClientCertificateOptions {
                    tenant_id,
                    client_id,
                    certificate: CertificateSource::Path(path.into()),
                    password: get("AZURE_CLIENT_CERTIFICATE_PASSWORD"),
                    send_certificate_chain: send_chain,
                    authority_host,
                    tls: options.tls.clone(),
                    ..Default::default()
                }) {
                    Ok(c) => Inner::Ready("client certificate", c),
                    Err(e) => Inner::Misconfigured(e.to_string()),
                }
            }
            (tenant, client) => Inner::Unavailable(missing(
                "AZURE_CLIENT_CERTIFICATE_PATH is set",
                &[
                    ("AZURE_TENANT_ID", tenant.is_some()),
                    ("AZURE_CLIENT_ID", client.is_some()),
                ],
            )),
        }
    } else if let Some(username) = get("AZURE_USERNAME") {
        match (get("AZURE_PASSWORD"), tenant) {
            (Some(password), Some(tenant_id)) => match username_password(UsernamePasswordOptions {
                tenant_id,
                client_id: client.unwrap_or_default(),
                username,
                password,
                authority_host,
                tls: options.tls.clone(),
            }) {
                Ok(c) => Inner::Ready("username and password", c),
                Err(e) => Inner::Misconfigured(e.to_string()),
            },
            (password, tenant) => Inner::Unavailable(missing(
                "AZURE_USERNAME is set",
                &[
                    ("AZURE_PASSWORD", password.is_some()),
                    ("AZURE_TENANT_ID", tenant.is_some()),
                ],
            )),
        }
    } else {
        Inner::Unavailable(
            "no AZURE_CLIENT_SECRET, AZURE_CLIENT_CERTIFICATE_PATH or AZURE_USERNAME is set: set \
             AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET for a service principal"
                .into(),
        )
    };
    Arc::new(EnvironmentCredential { inner })
}

/// "X is set but A and B are not: set them".
fn missing(what: &str, vars: &[(&str, bool)]) -> String {
    let absent: Vec<&str> = vars
        .iter()
        .filter(|(_, set)| !set)
        .map(|(n, _)| *n)
        .collect();
    let (verb, pronoun) = if absent.len() > 1 {
        ("are", "them")
    } else {
        ("is", "it")
    };
    format!(
        "{what} but {} {verb} not: set {pronoun}",
        absent.join(" and ")
    )
}

impl EnvironmentCredential {
    /// What the variables describe: `client secret`, `username and password`, or why nothing.
    pub fn describe(&self) -> String {
        match &self.inner {
            Inner::Ready(kind, _) => (*kind).to_string(),
            Inner::Unavailable(why) | Inner::Misconfigured(why) => why.clone(),
        }
    }
}

#[async_trait::async_trait]
impl TokenCredential for EnvironmentCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        match &self.inner {
            Inner::Ready(_, credential) => credential.get_token(scopes, options).await,
            Inner::Unavailable(why) => Err(unavailable(why.clone())),
            Inner::Misconfigured(why) => Err(azure_core::Error::with_message(
                ErrorKind::Credential,
                why.clone(),
            )),
        }
    }
}

/// Helper for [`super::default`]: builds from a lookup without the `Option` dance.
pub(crate) fn from_lookup(
    env: EnvLookup,
    authority_host: Option<String>,
    tls: &TlsOptions,
) -> Result<Arc<EnvironmentCredential>> {
    Ok(environment(EnvironmentOptions {
        authority_host,
        tls: tls.clone(),
        env: Some(env),
    }))
}
