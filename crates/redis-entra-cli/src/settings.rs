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
use crate::identity::{Choice, CredentialKind};

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
    /// Print each reply as a CSV row, as redis-cli does.
    #[arg(long, global = true)]
    pub csv: bool,
    /// Read the last argument from standard input (all of it, as it is).
    #[arg(short = 'x')]
    pub stdin_last_arg: bool,
    /// Read each argument as a quoted string ("a\x00b"), for arguments that are not plain
    /// text.
    #[arg(long = "quoted-input")]
    pub quoted_input: bool,
    /// Read the argument equal to TAG from standard input (all of it, as it is).
    #[arg(short = 'X', value_name = "TAG", conflicts_with = "stdin_last_arg")]
    pub stdin_tag: Option<String>,
    /// Between the elements of a raw reply (default: a newline).
    #[arg(short = 'd', value_name = "DELIMITER", allow_hyphen_values = true)]
    pub element_delimiter: Option<String>,
    /// After each raw reply (default: a newline).
    #[arg(short = 'D', value_name = "DELIMITER", allow_hyphen_values = true)]
    pub reply_delimiter: Option<String>,
    /// Run the command N times (-1: until interrupted).
    #[arg(short = 'r', value_name = "N", allow_negative_numbers = true)]
    pub repeat: Option<i64>,
    /// With -r, wait SECS seconds (decimals allowed, e.g. 0.1) after each run; also the pause
    /// between --scan and --stat cycles, and every 100 SCAN calls of --bigkeys and --memkeys.
    #[arg(short = 'i', id = "repeat_interval", value_name = "SECS")]
    pub interval: Option<f64>,
    /// The server as a URI, rediss://:KEY@HOST:PORT/DB (key, port and database optional), as
    /// Service Connector's AZURE_REDIS_CONNECTIONSTRING; a key in it is an access key (never
    /// printed). -h, -p and -n, when given, win over its parts.
    #[arg(short = 'u', value_name = "URI", global = true)]
    pub uri: Option<crate::uri::UriArg>,
    /// Don't warn when -u carries an access key.
    #[arg(long = "no-auth-warning", global = true)]
    pub no_auth_warning: bool,
    /// How long connecting may take, in seconds (decimals allowed), as redis-cli 7.2's -t;
    /// the default waits as long as the system does.
    #[arg(short = 't', value_name = "SECS", value_parser = crate::uri::parse_timeout, global = true)]
    pub connect_timeout: Option<std::time::Duration>,
    /// How to sign in: default, azure-cli, azure-developer-cli, managed-identity,
    /// workload-identity, service-principal, device-code, browser. Without it the AZURE_*
    /// variables decide (Service Connector's first, then the Azure SDK's; the
    /// DefaultAzureCredential chain when they name no identity), as AZURE_TOKEN_CREDENTIALS
    /// narrows the chain.
    #[arg(long, global = true, value_name = "KIND", value_enum)]
    pub credential: Option<CredentialKind>,
    /// The application's or user-assigned managed identity's client id; overrides
    /// AZURE_REDIS_CLIENTID and AZURE_CLIENT_ID.
    #[arg(long = "client-id", global = true, value_name = "ID")]
    pub client_id: Option<String>,
    /// The tenant (directory) id or domain; overrides AZURE_REDIS_TENANTID and
    /// AZURE_TENANT_ID.
    #[arg(long = "tenant", global = true, value_name = "TENANT")]
    pub tenant: Option<String>,
    /// Don't keep tokens between runs (REDIS_ENTRA_NO_TOKEN_CACHE=1 does the same). By default
    /// a token is kept, owner-only (0600 in a 0700 folder), in $XDG_RUNTIME_DIR/redis-entra
    /// (else $XDG_CACHE_HOME or ~/.cache), and used by the next runs while it has its refresh
    /// margin left; anyone able to read that file as you (or root) can use the cache until the
    /// token expires.
    #[arg(long = "no-token-cache", global = true)]
    pub no_token_cache: bool,
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

/// The variables that describe an identity (hidden from the configuration when --credential
/// names one).
macro_rules! identity_vars {
    () => {
        "AZURE_REDIS_CLIENTID"
            | "AZURE_REDIS_CLIENTSECRET"
            | "AZURE_REDIS_TENANTID"
            | "AZURE_REDIS_PASSWORD"
            | "AZURE_CLIENT_ID"
            | "AZURE_CLIENT_SECRET"
            | "AZURE_TENANT_ID"
            | "AZURE_FEDERATED_TOKEN_FILE"
            | "AZURE_CLIENT_CERTIFICATE_PATH"
            | "AZURE_USERNAME"
            | "AZURE_PASSWORD"
    };
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
    /// One CSV row per reply (`--csv`).
    Csv,
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
        if let Some(Ok(uri)) = self.uri.as_ref().map(|u| u.parse()) {
            if uri.key().is_some() {
                if let Some(kind) = self.credential {
                    return Err(usage(format!(
                        "-u carries an access key and --credential {kind:?} names an Entra identity: keep one (drop the key from the URI to sign in with Entra ID)"
                    )));
                }
                if !self.no_auth_warning {
                    eprintln!("Warning: Using a password with '-a' or '-u' option on the command line interface may not be safe.");
                }
            }
        }
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
        } else if self.csv {
            Output::Csv
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
        let client_id = self.client_id.clone();
        let tenant = self.tenant.clone();
        // With --credential, the identity variables are that credential's business (see
        // crate::identity), not the configuration's: hidden here, so that they don't pick a
        // credential or contradict each other.
        let chosen = self.credential.is_some();
        let uri = match &self.uri {
            Some(arg) => Some(arg.parse().map_err(usage)?),
            None => None,
        };
        let uri_host = uri.as_ref().and_then(|u| u.host.clone());
        let uri_port = uri.as_ref().and_then(|u| u.port.map(|p| p.to_string()));
        let uri_db = uri.as_ref().and_then(|u| u.db.map(|n| n.to_string()));
        // A key in -u is an access key: the identity variables are not this connection's.
        let uri_key = uri.as_ref().and_then(|u| u.key().map(str::to_string));
        let keyed = uri_key.is_some();
        let has_uri = uri.is_some();
        if uri.as_ref().is_some_and(|u| !u.tls) {
            return Err(usage(
                "-u: redis:// is a connection without TLS, which Azure refuses for Entra ID (and by default for keys): use rediss://".into(),
            ));
        }
        let mut config = RedisConfig::from_vars(|name| match name {
            "AZURE_REDIS_HOST" if host.is_some() => host.clone(),
            "AZURE_REDIS_PORT" if port.is_some() => port.clone(),
            "AZURE_REDIS_DATABASE" if db.is_some() => db.clone(),
            "AZURE_REDIS_HOST" if uri_host.is_some() => uri_host.clone(),
            "AZURE_REDIS_PORT" if uri_port.is_some() => uri_port.clone(),
            "AZURE_REDIS_DATABASE" if uri_db.is_some() => uri_db.clone(),
            "AZURE_REDIS_PASSWORD" if keyed => uri_key.clone(),
            "AZURE_REDIS_CONNECTIONSTRING" if has_uri => None,
            identity_vars!() if chosen || keyed => None,
            "AZURE_REDIS_CLIENTID" | "AZURE_CLIENT_ID" if client_id.is_some() => client_id.clone(),
            "AZURE_REDIS_TENANTID" | "AZURE_TENANT_ID" if tenant.is_some() => tenant.clone(),
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

    /// `--credential`, `--client-id` and `--tenant`.
    pub fn choice(&self) -> Choice {
        Choice {
            kind: self.credential,
            client_id: self.client_id.clone(),
            tenant: self.tenant.clone(),
        }
    }

    /// Where to connect.
    pub fn connect_options(&self) -> anyhow::Result<ConnectOptions> {
        Ok(self.connect_options_for(&self.config()?))
    }

    /// Where `config` says to connect, within `-t`'s timeout.
    pub fn connect_options_for(&self, config: &RedisConfig) -> ConnectOptions {
        let mut options = config.connect_options();
        if let Some(timeout) = self.connect_timeout {
            options.connect_timeout = timeout;
        }
        options
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
