//! Where to connect, how to sign in and how to print: redis-cli's flags first, then Service
//! Connector's and the Azure SDK's environment variables.
//!
//! redis-cli flags kept with their meaning: `-h -p -n -c --tls --cacert --insecure --raw
//! --no-raw --json -2 -3 -e`. Refused with an explanation: `-a/--pass`, `--user`, `--askpass`
//! (the password is an Entra ID token the credential provides).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use clap::Args;
use redis_entra::config::RedisConfig;
use redis_entra::{ConnectOptions, Protocol, TlsOptions};

use crate::exit::UsageError;

/// A flag whose value is never kept (a password given with `-a`), only the fact it was given.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Refused;

impl std::fmt::Debug for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<refused>")
    }
}

fn refuse(_: &str) -> Result<Refused, String> {
    Ok(Refused)
}

/// redis-cli's connection and output flags.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Server host name (default: AZURE_REDIS_HOST).
    #[arg(short = 'h', long = "host", global = true)]
    pub host: Option<String>,
    /// Server port (default: AZURE_REDIS_PORT, else 6380, or 10000 for *.redis.azure.net).
    #[arg(short = 'p', long = "port", global = true)]
    pub port: Option<u16>,
    /// Database number (default: AZURE_REDIS_DATABASE, else 0).
    #[arg(short = 'n', global = true)]
    pub db: Option<i64>,
    /// Cluster mode: follow -MOVED/-ASK redirections (every node signs in with the token).
    #[arg(short = 'c', global = true)]
    pub cluster: bool,
    /// Use TLS (always on: Azure accepts Entra tokens over TLS only).
    #[arg(long, global = true)]
    pub tls: bool,
    /// A PEM file with a CA to trust besides the system's roots (SSL_CERT_FILE works too).
    #[arg(long, global = true)]
    pub cacert: Option<PathBuf>,
    /// Accept any server certificate. INSECURE: for debugging only.
    #[arg(long = "insecure-skip-tls-verify", alias = "insecure", global = true)]
    pub insecure: bool,
    /// Use RESP2 (the default, except with --json and on Azure Managed Redis).
    #[arg(short = '2', global = true, conflicts_with = "resp3")]
    pub resp2: bool,
    /// Use RESP3.
    #[arg(short = '3', global = true)]
    pub resp3: bool,
    /// Print raw replies (no types, no quotes); the default when stdout is not a terminal.
    #[arg(long, global = true)]
    pub raw: bool,
    /// Print formatted replies even when stdout is not a terminal.
    #[arg(long = "no-raw", global = true, conflicts_with = "raw")]
    pub no_raw: bool,
    /// Print each reply as JSON (RESP3 unless -2, as redis-cli does).
    #[arg(long, global = true)]
    pub json: bool,
    /// Exit 1 when the command returns an error reply, printing it to stderr (without -e an
    /// error reply is printed and exits 0, as redis-cli does).
    #[arg(short = 'e', global = true)]
    pub exit_on_error: bool,
    /// Not supported: the password is an Entra ID token.
    #[arg(short = 'a', long = "pass", global = true, hide = true, value_name = "PASSWORD", value_parser = refuse)]
    pub password: Option<Refused>,
    /// Not supported: the username is the token's oid.
    #[arg(long = "user", global = true, hide = true, value_name = "USERNAME", value_parser = refuse)]
    pub user: Option<Refused>,
    /// Not supported: the password is an Entra ID token.
    #[arg(long = "askpass", global = true, hide = true)]
    pub askpass: bool,
}

/// How replies are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// redis-cli's terminal format: `(integer) 1`, `"quoted"`, `1) …`.
    Typed,
    /// One line per string, no types, no quotes.
    Raw,
    /// One JSON document per reply.
    Json,
}

/// A variable of the environment, if set and not blank.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn usage(message: String) -> anyhow::Error {
    anyhow::Error::new(UsageError(message))
}

impl ConnectionArgs {
    /// Refuses the redis-cli flags that make no sense with Entra ID.
    pub fn check_supported(&self) -> anyhow::Result<()> {
        let given: Vec<&str> = [
            (self.password.is_some(), "-a/--pass"),
            (self.user.is_some(), "--user"),
            (self.askpass, "--askpass"),
        ]
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, name)| *name)
        .collect();
        if !given.is_empty() {
            return Err(usage(format!(
                "{} not supported: redis-entra signs in with Microsoft Entra ID, so the password is an access token and the username its oid claim, both from the credential the AZURE_* variables describe (AZURE_REDIS_CLIENTID/AZURE_REDIS_CLIENTSECRET/AZURE_REDIS_TENANTID, a managed identity, ...) and renewed automatically; drop the flag, and run `redis-entra token` to see the identity in use",
                given.join(", ")
            )));
        }
        Ok(())
    }

    /// How to print replies: `--json`, `--raw`, `--no-raw`, else raw unless stdout is a
    /// terminal (as redis-cli does).
    pub fn output(&self) -> Output {
        if self.json {
            Output::Json
        } else if self.raw {
            Output::Raw
        } else if self.no_raw || std::io::stdout().is_terminal() {
            Output::Typed
        } else {
            Output::Raw
        }
    }

    /// The protocol the flags ask for: `-3`, or `--json` without `-2`, mean RESP3 (redis-cli's
    /// --json asks for RESP3 so that maps print as objects); `-2` RESP2; none: the cache's
    /// default (RESP2, RESP3 on Azure Managed Redis).
    pub fn protocol(&self) -> Option<Protocol> {
        if self.resp3 || (self.json && !self.resp2) {
            Some(Protocol::Resp3)
        } else if self.resp2 {
            Some(Protocol::Resp2)
        } else {
            None
        }
    }

    /// TLS trust from --cacert and --insecure-skip-tls-verify.
    pub fn tls(&self) -> anyhow::Result<TlsOptions> {
        let mut tls = match &self.cacert {
            Some(path) => TlsOptions::with_ca_file(path)?,
            None => TlsOptions::default(),
        };
        if self.insecure {
            eprintln!("warning: TLS certificate verification is OFF (--insecure-skip-tls-verify)");
            tls.danger_accept_invalid_certs = true;
        }
        Ok(tls)
    }

    /// The configuration: Service Connector's and the Azure SDK's variables (read by
    /// [`RedisConfig::from_vars`], which names the variable at fault and refuses combinations
    /// that cannot be right), with `-h`, `-p` and `-n` taking the place of AZURE_REDIS_HOST,
    /// AZURE_REDIS_PORT and AZURE_REDIS_DATABASE, and the trust of `--cacert`.
    pub fn config(&self) -> anyhow::Result<RedisConfig> {
        let host = self.host.clone();
        let port = self.port.map(|p| p.to_string());
        let db = self.db.map(|n| n.to_string());
        let mut config = RedisConfig::from_vars(|name| match name {
            "AZURE_REDIS_HOST" if host.is_some() => host.clone(),
            "AZURE_REDIS_PORT" if port.is_some() => port.clone(),
            "AZURE_REDIS_DATABASE" if db.is_some() => db.clone(),
            _ => std::env::var(name).ok(),
        })
        .map_err(|e| {
            let text = e.to_string();
            let text = if self.host.is_some() {
                text
            } else {
                text.replace(
                    "no Redis host: set AZURE_REDIS_HOST",
                    "no Redis host: pass -h HOST or set AZURE_REDIS_HOST",
                )
            };
            usage(text)
        })?;
        config.tls = self.tls()?;
        if let Some(protocol) = self.protocol() {
            config.protocol = protocol;
        }
        Ok(config)
    }

    /// Where to connect.
    pub fn connect_options(&self) -> anyhow::Result<ConnectOptions> {
        Ok(self.config()?.connect_options())
    }
}

/// The Entra credential of a configuration; an access key is a usage error (callers that accept
/// a key, such as the session, handle it before asking).
///
/// The library's one rule applies: when the variables name no identity at all (a
/// system-assigned managed identity by Service Connector's rules) and no managed-identity
/// endpoint is set, or when `AZURE_TOKEN_CREDENTIALS` is set, it is the `DefaultAzureCredential`
/// chain (environment, workload identity, managed identity, Azure CLI, Azure Developer CLI), so
/// `az login` on a laptop works.
pub fn entra_credential(config: &RedisConfig) -> anyhow::Result<Arc<dyn TokenCredential>> {
    match config.credential().map_err(|e| usage(e.to_string()))? {
        Some(credential) => Ok(credential),
        None => Err(usage(
            "the environment describes an access key (AZURE_REDIS_PASSWORD or AZURE_REDIS_CONNECTIONSTRING), which is no Microsoft Entra ID token: to get a token, configure an identity instead (AZURE_REDIS_CLIENTID/AZURE_REDIS_CLIENTSECRET/AZURE_REDIS_TENANTID, or a managed identity)".into(),
        )),
    }
}
