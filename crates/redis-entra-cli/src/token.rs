//! `redis-entra token`: acquire a token with the configured credential and show what Redis
//! will see (never the token itself unless `--raw`).

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use redis_entra::credential::{from_env, FromEnvOptions};
use redis_entra::{TokenManager, TokenManagerOptions};

use crate::settings::ConnectionArgs;
use crate::Outcome;

/// `token`'s flags.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Print the token itself (it is a secret: it grants access to the cache until it expires).
    #[arg(long = "raw-token", alias = "print-token")]
    pub raw_token: bool,
}

/// Formats seconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_time(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
}

/// Runs `redis-entra token`.
pub async fn run(connection: &ConnectionArgs, args: TokenArgs) -> Outcome {
    // With a cache configured, the credential the command itself would sign in with (Service
    // Connector's variables included; an access key is refused with the reason). With none, the
    // Azure SDK's variables or the DefaultAzureCredential chain: `token` needs no cache.
    let cache_configured = connection.host.is_some()
        || ["AZURE_REDIS_HOST", "AZURE_REDIS_CONNECTIONSTRING"]
            .iter()
            .any(|name| crate::settings::env(name).is_some());
    // As `az account get-access-token`, a token is served from the token cache while it has
    // its refresh margin left (not with --no-token-cache).
    let options = TokenManagerOptions::default();
    let disabled = connection.no_token_cache || crate::token_cache::disabled_by_env();
    let credential = if let Some(kind) = connection.credential {
        let authority = crate::settings::env("AZURE_AUTHORITY_HOST").unwrap_or_else(|| {
            redis_entra::config::AzureCloud::Public
                .authority_host()
                .into()
        });
        let identity =
            crate::identity::chosen(kind, &connection.choice(), authority, connection.tls()?)?;
        crate::token_cache::wrap(identity, disabled, &options.refresh)
    } else if cache_configured {
        let config = connection.config()?;
        if let redis_entra::config::Auth::AccessKey { .. } = config.auth {
            // Refused with the reason.
            crate::settings::entra_credential(&config)?
        } else {
            let identity = crate::identity::resolve(&connection.choice(), &config)?;
            crate::token_cache::wrap(identity, disabled, &options.refresh)
        }
    } else {
        from_env(&{
            let mut o = FromEnvOptions::default();
            o.tls = connection.tls()?;
            o
        })?
    };
    let manager = TokenManager::new(credential, options);
    let creds = manager.credentials().await?;
    if args.raw_token || connection.raw {
        println!("{}", creds.token());
        return Ok(ExitCode::SUCCESS);
    }
    let c = creds.claims();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(absent)".into());
    println!("username (oid): {}", creds.username());
    println!("oid:            {}", show(&c.oid));
    println!("tid:            {}", show(&c.tid));
    println!("aud:            {}", c.aud.join(", "));
    println!("iss:            {}", show(&c.iss));
    println!("appid:          {}", show(&c.app_id));
    if let Some(mirid) = &c.managed_identity_resource_id {
        println!("xms_mirid:      {mirid}");
    }
    match c.exp {
        Some(exp) => println!(
            "exp:            {} ({} s left)",
            format_time(exp),
            exp.saturating_sub(now)
        ),
        None => println!("exp:            (absent)"),
    }
    println!("token:          <hidden; pass --raw-token to print it>");
    Ok(ExitCode::SUCCESS)
}
