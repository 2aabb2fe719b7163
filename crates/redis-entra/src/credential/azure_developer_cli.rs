//! The developer signed in to the Azure Developer CLI: runs
//! `azd auth token -o json --no-prompt --scope <scope> [--tenant-id <tid>]`.
//!
//! The program is spawned directly (found on `PATH`, never through a shell), with a timeout.
//! Its output is `{"token":"…","expiresOn":"2038-01-18T00:00:00Z"}` (RFC 3339). On error azd
//! writes JSON lines to stderr whose `data.message` says what went wrong.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use serde::Deserialize;

use super::azure_cli::{
    check_argument, run_tool, single_scope, stderr_summary, DEFAULT_CLI_TIMEOUT,
};
use super::chain::unavailable;
use crate::error::Result;

/// Options for [`azure_developer_cli`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AzureDeveloperCliOptions {
    /// Ask for a token of this tenant (`--tenant-id`); `None` uses azd's current one.
    pub tenant_id: Option<String>,
    /// How long `azd` may run (default 30 s).
    pub timeout: Duration,
    /// The program to run; `None` finds `azd` on `PATH`.
    pub program: Option<PathBuf>,
}

impl Default for AzureDeveloperCliOptions {
    fn default() -> Self {
        Self {
            tenant_id: None,
            timeout: DEFAULT_CLI_TIMEOUT,
            program: None,
        }
    }
}

/// Tokens from the Azure Developer CLI (see the module documentation).
#[derive(Debug)]
pub struct AzureDeveloperCliCredential {
    options: AzureDeveloperCliOptions,
}

/// An Azure Developer CLI credential.
pub fn azure_developer_cli(
    options: AzureDeveloperCliOptions,
) -> Result<Arc<AzureDeveloperCliCredential>> {
    if let Some(tenant) = &options.tenant_id {
        check_argument("tenant id", tenant)?;
    }
    Ok(Arc::new(AzureDeveloperCliCredential { options }))
}

#[derive(Deserialize)]
struct AzdToken {
    token: String,
    #[serde(rename = "expiresOn")]
    expires_on: String,
}

/// The messages in azd's JSON stderr lines, or the raw text when it is not JSON.
fn azd_error_text(stderr: &str) -> String {
    let messages: Vec<String> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
        .filter_map(|v| v["data"]["message"].as_str().map(str::to_string))
        .collect();
    if messages.is_empty() {
        stderr_summary(stderr)
    } else {
        stderr_summary(&messages.join(" "))
    }
}

/// Reads `azd auth token -o json`.
pub(crate) fn parse_azd_output(stdout: &[u8]) -> azure_core::Result<AccessToken> {
    let token: AzdToken = serde_json::from_slice(stdout).map_err(|e| {
        azure_core::Error::with_message(
            ErrorKind::DataConversion,
            format!("the Azure Developer CLI printed something that is not its token JSON: {e}"),
        )
    })?;
    let expires_on = azure_core::time::parse_rfc3339(&token.expires_on).map_err(|e| {
        azure_core::Error::with_message(
            ErrorKind::DataConversion,
            format!(
                "the Azure Developer CLI's expiresOn {:?} is not an RFC 3339 time: {e}",
                token.expires_on
            ),
        )
    })?;
    Ok(AccessToken::new(token.token, expires_on))
}

#[async_trait::async_trait]
impl TokenCredential for AzureDeveloperCliCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let scope = single_scope(scopes)?;
        let mut args: Vec<String> = ["auth", "token", "-o", "json", "--no-prompt", "--scope"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(scope);
        if let Some(tenant) = &self.options.tenant_id {
            args.push("--tenant-id".into());
            args.push(tenant.clone());
        }
        let default_program = if cfg!(windows) { "azd.exe" } else { "azd" };
        let program = self
            .options
            .program
            .clone()
            .unwrap_or_else(|| PathBuf::from(default_program));
        tracing::debug!(program = %program.display(), "asking the Azure Developer CLI for a token");
        let output = run_tool(
            program.as_os_str(),
            &args,
            self.options.timeout,
            "the Azure Developer CLI (azd) was not found on PATH: install the Azure Developer CLI or sign in another way",
        )
        .await?;
        if !output.success {
            let text = azd_error_text(&output.stderr);
            let lower = text.to_ascii_lowercase();
            if lower.contains("azd auth login") || lower.contains("not logged in") {
                return Err(unavailable(
                    "the Azure Developer CLI is not signed in: run `azd auth login`",
                ));
            }
            return Err(azure_core::Error::with_message(
                ErrorKind::Credential,
                format!("the Azure Developer CLI could not get a token: {text}"),
            ));
        }
        parse_azd_output(&output.stdout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339() {
        let t = parse_azd_output(br#"{"token":"x","expiresOn":"2038-01-18T00:00:00Z"}"#).unwrap();
        assert_eq!(t.expires_on.unix_timestamp(), 2147385600);
    }

    #[test]
    fn reads_json_stderr() {
        let text = azd_error_text(
            r#"{"type":"consoleMessage","timestamp":"t","data":{"message":"ERROR: not logged in, run `azd auth login` to login"}}"#,
        );
        assert!(text.contains("azd auth login"), "{text}");
    }
}
