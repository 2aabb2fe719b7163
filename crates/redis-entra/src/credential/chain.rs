//! A chain of credentials tried in order: the machinery behind
//! [`default_azure_credential`](super::default_azure_credential), usable on its own.
//!
//! Each link is tried in turn. A link that is *unavailable* (not configured here: no variables,
//! no CLI installed, not signed in) answers with an error made by [`unavailable`], and the chain
//! moves on. A link that is configured but *fails* (a wrong secret, a refused request) stops
//! the chain when [`ChainOptions::stop_on_failure`] is set (the default), so that a broken
//! configuration is reported rather than silently replaced by another identity. When no link
//! gives a token, the chain answers with ONE error that lists every link, what it tried and why
//! it failed.
//!
//! Once a link succeeds, later calls go straight to it, as the other Azure SDKs'
//! `DefaultAzureCredential` do.

use std::sync::{Arc, OnceLock};

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;

/// The error a link returns when it is not configured in this environment: the chain passes
/// to the next link. Its text says what the link looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialUnavailable {
    /// What the link looked for and did not find, and how to make it available.
    pub message: String,
}

impl std::fmt::Display for CredentialUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CredentialUnavailable {}

/// An `azure_core` error saying a credential is not configured here (see
/// [`CredentialUnavailable`]).
pub fn unavailable(message: impl Into<String>) -> azure_core::Error {
    let message = message.into();
    azure_core::Error::new(ErrorKind::Credential, CredentialUnavailable { message })
}

/// Whether an error means "not configured here" rather than "configured, and failed".
pub fn is_unavailable(error: &azure_core::Error) -> bool {
    error.downcast_ref::<CredentialUnavailable>().is_some()
}

/// How a [`ChainedCredential`] behaves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ChainOptions {
    /// A name for the chain in its error message (e.g. `DefaultAzureCredential`).
    pub name: String,
    /// Stop at the first link that is configured but fails (default `true`); when `false`,
    /// every link is tried whatever its error.
    pub stop_on_failure: bool,
}

impl Default for ChainOptions {
    fn default() -> Self {
        Self {
            name: "ChainedCredential".into(),
            stop_on_failure: true,
        }
    }
}

/// Credentials tried in order (see the module documentation).
pub struct ChainedCredential {
    links: Vec<(String, Arc<dyn TokenCredential>)>,
    options: ChainOptions,
    selected: OnceLock<usize>,
}

impl std::fmt::Debug for ChainedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainedCredential")
            .field("name", &self.options.name)
            .field(
                "links",
                &self
                    .links
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("selected", &self.selected_name())
            .finish()
    }
}

impl ChainedCredential {
    /// A chain of named links, tried in the order given.
    pub fn new(links: Vec<(String, Arc<dyn TokenCredential>)>, options: ChainOptions) -> Self {
        Self {
            links,
            options,
            selected: OnceLock::new(),
        }
    }

    /// The names of the links, in order.
    pub fn link_names(&self) -> Vec<&str> {
        self.links.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The link every call now goes to, once one has succeeded.
    pub fn selected_name(&self) -> Option<&str> {
        self.selected
            .get()
            .and_then(|i| self.links.get(*i))
            .map(|(n, _)| n.as_str())
    }
}

/// One line of the combined error, for each link tried.
fn attempt_line(name: &str, error: &azure_core::Error) -> String {
    let text = error_text(error);
    if is_unavailable(error) {
        format!("- {name}: unavailable: {text}")
    } else {
        format!("- {name}: failed: {text}")
    }
}

/// An error's text with its sources, on one line.
fn error_text(error: &azure_core::Error) -> String {
    if let Some(u) = error.downcast_ref::<CredentialUnavailable>() {
        return u.message.clone();
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text.replace(['\r', '\n'], " ")
}

#[async_trait::async_trait]
impl TokenCredential for ChainedCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        if let Some((_, credential)) = self.selected.get().and_then(|i| self.links.get(*i)) {
            return credential.get_token(scopes, options).await;
        }
        if self.links.is_empty() {
            return Err(azure_core::Error::with_message(
                ErrorKind::Credential,
                format!("{} has no credentials to try", self.options.name),
            ));
        }
        let mut lines = Vec::new();
        let mut stopped = false;
        for (index, (name, credential)) in self.links.iter().enumerate() {
            match credential.get_token(scopes, options.clone()).await {
                Ok(token) => {
                    let _ = self.selected.set(index);
                    tracing::debug!(chain = %self.options.name, credential = %name, "credential selected");
                    return Ok(token);
                }
                Err(error) => {
                    tracing::debug!(
                        chain = %self.options.name,
                        credential = %name,
                        unavailable = is_unavailable(&error),
                        "credential gave no token"
                    );
                    lines.push(attempt_line(name, &error));
                    if self.options.stop_on_failure && !is_unavailable(&error) {
                        stopped = index + 1 < self.links.len();
                        break;
                    }
                }
            }
        }
        let mut message = format!(
            "{} found no credential that could sign in; it tried:\n{}",
            self.options.name,
            lines.join("\n")
        );
        if stopped {
            message.push_str(
                "\nThe chain stopped at the first credential that was configured but failed, so \
                 that it never signs in as another identity by accident: fix that credential's \
                 configuration, or remove it.",
            );
        } else {
            message.push_str(
                "\nConfigure one of them (see each line), or choose one with \
                 AZURE_TOKEN_CREDENTIALS.",
            );
        }
        Err(azure_core::Error::with_message(
            ErrorKind::Credential,
            message,
        ))
    }
}
