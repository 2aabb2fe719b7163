//! The developer signed in to the Azure CLI: runs
//! `az account get-access-token -o json --scope <scope> [--tenant <tid>]`.
//!
//! The program is spawned directly (found on `PATH`, never through a shell), with a timeout.
//! Its output is `{"accessToken","expiresOn","expires_on","subscription","tenant","tokenType"}`:
//! `expires_on` (integer epoch, Azure CLI 2.54.0 and newer) is used when present; otherwise
//! the token's own `exp` claim, since `expiresOn` is a local time without a zone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use serde::Deserialize;
use time::OffsetDateTime;

use super::chain::unavailable;
use crate::error::Result;

/// How long a developer CLI may take by default.
pub(crate) const DEFAULT_CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// Options for [`azure_cli`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AzureCliOptions {
    /// Ask for a token of this tenant (`--tenant`); `None` uses the CLI's current one.
    pub tenant_id: Option<String>,
    /// How long `az` may run (default 30 s).
    pub timeout: Duration,
    /// The program to run; `None` finds `az` on `PATH`.
    pub program: Option<PathBuf>,
}

impl Default for AzureCliOptions {
    fn default() -> Self {
        Self {
            tenant_id: None,
            timeout: DEFAULT_CLI_TIMEOUT,
            program: None,
        }
    }
}

/// Tokens from the Azure CLI (see the module documentation).
#[derive(Debug)]
pub struct AzureCliCredential {
    options: AzureCliOptions,
}

/// An Azure CLI credential.
pub fn azure_cli(options: AzureCliOptions) -> Result<Arc<AzureCliCredential>> {
    if let Some(tenant) = &options.tenant_id {
        check_argument("tenant id", tenant)?;
    }
    Ok(Arc::new(AzureCliCredential { options }))
}

/// Refuses arguments that could be read as options or are not plain identifiers.
pub(crate) fn check_argument(what: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && !value.starts_with('-')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:/".contains(c));
    if ok {
        Ok(())
    } else {
        Err(crate::Error::Config(format!(
            "the {what} {value:?} is not valid: use letters, digits and - . _ : / only"
        )))
    }
}

/// The one scope a CLI is asked for, checked.
pub(crate) fn single_scope(scopes: &[&str]) -> azure_core::Result<String> {
    match scopes {
        [scope] => {
            check_argument("scope", scope).map_err(|e| {
                azure_core::Error::with_message(ErrorKind::Credential, e.to_string())
            })?;
            Ok((*scope).to_string())
        }
        _ => Err(azure_core::Error::with_message(
            ErrorKind::Credential,
            format!(
                "a developer CLI credential needs exactly one scope, got {}",
                scopes.len()
            ),
        )),
    }
}

/// What a CLI run produced.
pub(crate) struct ToolOutput {
    pub success: bool,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// Runs `program args` without a shell, with a timeout; `NotFound` becomes `not_installed`.
pub(crate) async fn run_tool(
    program: &std::ffi::OsStr,
    args: &[String],
    timeout: Duration,
    not_installed: &str,
) -> azure_core::Result<ToolOutput> {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(unavailable(not_installed));
        }
        Err(e) => {
            return Err(azure_core::Error::with_message(
                ErrorKind::Credential,
                format!("could not run {}: {e}", program.to_string_lossy()),
            ))
        }
    };
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => Ok(ToolOutput {
            success: output.status.success(),
            stdout: output.stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }),
        Ok(Err(e)) => Err(azure_core::Error::with_message(
            ErrorKind::Credential,
            format!("running {}: {e}", program.to_string_lossy()),
        )),
        Err(_) => Err(azure_core::Error::with_message(
            ErrorKind::Credential,
            format!(
                "{} did not answer within {:?}: check that it is not waiting for input, or raise the timeout",
                program.to_string_lossy(),
                timeout
            ),
        )),
    }
}

/// The first lines of a tool's stderr, trimmed, with anything shaped like a JWT removed.
pub(crate) fn stderr_summary(stderr: &str) -> String {
    let text: String = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    text.split_whitespace()
        .map(|w| {
            if w.starts_with("eyJ") {
                "<redacted>"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(400)
        .collect()
}

#[derive(Deserialize)]
struct CliToken {
    #[serde(rename = "accessToken")]
    access_token: String,
    expires_on: Option<i64>,
    #[serde(rename = "expiresOn")]
    expires_on_local: Option<String>,
}

/// When a token expires, from `expires_on`, else the token's `exp` claim.
fn expiry(token: &CliToken) -> azure_core::Result<OffsetDateTime> {
    let epoch = match token.expires_on {
        Some(epoch) => Some(epoch),
        None => crate::claims::TokenClaims::from_jwt(&token.access_token)
            .ok()
            .and_then(|c| c.exp)
            .and_then(|e| i64::try_from(e).ok()),
    };
    let Some(epoch) = epoch else {
        let shown = token.expires_on_local.as_deref().unwrap_or("nothing");
        return Err(azure_core::Error::with_message(
            ErrorKind::DataConversion,
            format!(
                "the Azure CLI's token has no expires_on and no exp claim (expiresOn was {shown}, a local time without a zone): update the Azure CLI to 2.54.0 or newer"
            ),
        ));
    };
    OffsetDateTime::from_unix_timestamp(epoch).map_err(|e| {
        azure_core::Error::with_message(
            ErrorKind::DataConversion,
            format!("the Azure CLI's expires_on {epoch} is not a time: {e}"),
        )
    })
}

/// Reads `az account get-access-token -o json`.
pub(crate) fn parse_cli_output(stdout: &[u8]) -> azure_core::Result<AccessToken> {
    let token: CliToken = serde_json::from_slice(stdout).map_err(|e| {
        azure_core::Error::with_message(
            ErrorKind::DataConversion,
            format!("the Azure CLI printed something that is not its token JSON: {e}"),
        )
    })?;
    let expires_on = expiry(&token)?;
    Ok(AccessToken::new(token.access_token, expires_on))
}

#[async_trait::async_trait]
impl TokenCredential for AzureCliCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let scope = single_scope(scopes)?;
        let mut args: Vec<String> = ["account", "get-access-token", "-o", "json", "--scope"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(scope);
        if let Some(tenant) = &self.options.tenant_id {
            args.push("--tenant".into());
            args.push(tenant.clone());
        }
        let default_program = if cfg!(windows) { "az.cmd" } else { "az" };
        let program = self
            .options
            .program
            .clone()
            .unwrap_or_else(|| PathBuf::from(default_program));
        tracing::debug!(program = %program.display(), "asking the Azure CLI for a token");
        let output = run_tool(
            program.as_os_str(),
            &args,
            self.options.timeout,
            "the Azure CLI (az) was not found on PATH: install the Azure CLI or sign in another way",
        )
        .await?;
        if !output.success {
            let lower = output.stderr.to_ascii_lowercase();
            if lower.contains("az login") || lower.contains("not logged in") {
                return Err(unavailable(
                    "the Azure CLI is not signed in: run `az login`",
                ));
            }
            return Err(azure_core::Error::with_message(
                ErrorKind::Credential,
                format!(
                    "the Azure CLI could not get a token: {}",
                    stderr_summary(&output.stderr)
                ),
            ));
        }
        parse_cli_output(&output.stdout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_the_epoch() {
        let t = parse_cli_output(
            br#"{"accessToken":"x","expiresOn":"2030-01-02 03:04:05.000000","expires_on":2147483647,"tokenType":"Bearer"}"#,
        )
        .unwrap();
        assert_eq!(t.expires_on.unix_timestamp(), 2147483647);
    }

    #[test]
    fn refuses_a_local_time_alone_without_exp() {
        let e = parse_cli_output(br#"{"accessToken":"x","expiresOn":"2030-01-02 03:04:05"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("2.54.0"), "{e}");
    }

    #[test]
    fn checks_arguments() {
        assert!(check_argument("scope", "https://redis.azure.com/.default").is_ok());
        assert!(check_argument("scope", "--x").is_err());
        assert!(check_argument("scope", "a b").is_err());
    }
}
