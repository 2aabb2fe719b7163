//! Where to connect and how to sign in: redis-cli's flags first, then Service Connector's and
//! the Azure SDK's environment variables.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use redis_entra::{ConnectOptions, Protocol, TlsOptions};

/// redis-cli's connection flags.
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
    /// Use TLS (always on: Azure accepts Entra tokens over TLS only).
    #[arg(long, global = true)]
    pub tls: bool,
    /// A PEM file with a CA to trust besides the system's roots.
    #[arg(long, global = true)]
    pub cacert: Option<PathBuf>,
    /// Accept any server certificate. INSECURE: for debugging only.
    #[arg(long = "insecure-skip-tls-verify", global = true)]
    pub insecure: bool,
    /// Use RESP2.
    #[arg(short = '2', global = true, conflicts_with = "resp3")]
    pub resp2: bool,
    /// Use RESP3.
    #[arg(short = '3', global = true)]
    pub resp3: bool,
    /// Print raw replies (no types, no quotes).
    #[arg(long, global = true)]
    pub raw: bool,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl ConnectionArgs {
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

    /// Where to connect.
    pub fn connect_options(&self) -> anyhow::Result<ConnectOptions> {
        let host = match self.host.clone().or_else(|| env("AZURE_REDIS_HOST")) {
            Some(h) => h,
            None => bail!(
                "no Redis host: pass -h HOST or set AZURE_REDIS_HOST (e.g. mycache.redis.cache.windows.net)"
            ),
        };
        let port = match self.port {
            Some(p) => p,
            None => match env("AZURE_REDIS_PORT") {
                Some(p) => p.trim().parse().with_context(|| {
                    format!("AZURE_REDIS_PORT={p:?} is not a port number (1-65535)")
                })?,
                None if host.ends_with(".redis.azure.net") => 10000,
                None => 6380,
            },
        };
        let db = match self.db {
            Some(n) => n,
            None => match env("AZURE_REDIS_DATABASE") {
                Some(n) => n.trim().parse().with_context(|| {
                    format!("AZURE_REDIS_DATABASE={n:?} is not a database number")
                })?,
                None => 0,
            },
        };
        let mut options = ConnectOptions::new(host, port);
        options.db = db;
        options.protocol = if self.resp3 {
            Protocol::Resp3
        } else {
            Protocol::Resp2
        };
        options.tls = self.tls()?;
        Ok(options)
    }
}
