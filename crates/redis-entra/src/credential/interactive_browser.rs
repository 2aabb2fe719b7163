//! A person signing in in a web browser: the authorization code flow with PKCE (S256) and a
//! loopback redirect, as MSAL's public clients do it.
//!
//! The credential listens on `127.0.0.1` (a random port unless told otherwise), opens the
//! authorization URL in the system browser (`xdg-open`, `open`, or `rundll32
//! url.dll,FileProtocolHandler`, spawned directly, never through a shell), or hands it to the
//! application's [`InteractiveBrowserOptions::open_url`] callback, waits for the browser to be
//! redirected back with `code` and `state`, checks the state, and redeems the code with the
//! PKCE verifier.
//!
//! The token is kept and returned while it has more than five minutes left; then the refresh
//! token (the credential asks for `offline_access`) gets a new one, so a token manager's
//! refreshes open the browser again only when the refresh token is refused. The code, the
//! verifier and the tokens are never logged.

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use base64::Engine;
use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::oauth::{Authority, PostError, UserTokenCache, DEVELOPER_SIGN_IN_CLIENT_ID};
use crate::error::{Error, Result};
use crate::tls::TlsOptions;

/// Opens a URL for the user; returns `false` when it could not.
pub type OpenUrl = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Options for [`interactive_browser`].
#[derive(Clone)]
#[non_exhaustive]
pub struct InteractiveBrowserOptions {
    /// The tenant id or domain (`organizations` for any work account).
    pub tenant_id: String,
    /// The public client application's id; empty uses the Azure CLI's well-known client id.
    pub client_id: String,
    /// The authority host; `None` reads `AZURE_AUTHORITY_HOST`, then uses the public cloud.
    pub authority_host: Option<String>,
    /// Whom to trust for the token endpoint.
    pub tls: TlsOptions,
    /// Pre-fills the sign-in name (`login_hint`).
    pub login_hint: Option<String>,
    /// Opens the authorization URL; `None` opens the system browser.
    pub open_url: Option<OpenUrl>,
    /// The loopback port to listen on (0: a free one).
    pub redirect_port: u16,
    /// How long to wait for the browser to come back (default 5 minutes).
    pub timeout: Duration,
}

impl InteractiveBrowserOptions {
    /// Browser sign-in through app `client_id` in tenant `tenant_id`.
    pub fn new(tenant_id: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            ..Self::default()
        }
    }
}

authority_and_tls!(InteractiveBrowserOptions);

impl Default for InteractiveBrowserOptions {
    fn default() -> Self {
        Self {
            tenant_id: String::new(),
            client_id: String::new(),
            authority_host: None,
            tls: TlsOptions::default(),
            login_hint: None,
            open_url: None,
            redirect_port: 0,
            timeout: Duration::from_secs(300),
        }
    }
}

impl std::fmt::Debug for InteractiveBrowserOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InteractiveBrowserOptions")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("authority_host", &self.authority_host)
            .field("login_hint", &self.login_hint)
            .field("open_url", &self.open_url.as_ref().map(|_| "<callback>"))
            .field("redirect_port", &self.redirect_port)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Tokens for a person signing in in a browser (see the module documentation).
pub struct InteractiveBrowserCredential {
    authority: Authority,
    options: InteractiveBrowserOptions,
    client_id: String,
    cache: UserTokenCache,
}

impl std::fmt::Debug for InteractiveBrowserCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InteractiveBrowserCredential")
            .field("authority", &self.authority)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// An interactive browser credential.
pub fn interactive_browser(
    options: InteractiveBrowserOptions,
) -> Result<Arc<InteractiveBrowserCredential>> {
    if options.tenant_id.is_empty() {
        return Err(Error::Config(
            "a browser sign-in needs a tenant: set tenant_id (or AZURE_TENANT_ID), or use \"organizations\""
                .into(),
        ));
    }
    let client_id = if options.client_id.is_empty() {
        DEVELOPER_SIGN_IN_CLIENT_ID.to_string()
    } else {
        options.client_id.clone()
    };
    Ok(Arc::new(InteractiveBrowserCredential {
        authority: Authority::new(
            options.authority_host.as_deref(),
            &options.tenant_id,
            &options.tls,
        )?,
        options,
        client_id,
        cache: UserTokenCache::default(),
    }))
}

fn credential_error(message: impl Into<String>) -> azure_core::Error {
    azure_core::Error::with_message(ErrorKind::Credential, message.into())
}

fn random_b64(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// PKCE's S256 challenge of a verifier.
pub(crate) fn pkce_challenge(verifier: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// Opens `url` in the system browser, spawning the opener directly.
fn open_system_browser(url: &str) -> bool {
    let mut command = if cfg!(target_os = "macos") {
        std::process::Command::new("open")
    } else if cfg!(windows) {
        let mut c = std::process::Command::new("rundll32");
        c.arg("url.dll,FileProtocolHandler");
        c
    } else {
        std::process::Command::new("xdg-open")
    };
    command
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    match command.spawn() {
        Ok(mut child) => {
            // Reap it whenever it exits.
            std::thread::spawn(move || {
                let _ = child.wait();
            });
            true
        }
        Err(_) => false,
    }
}

/// What the browser brought back to the loopback listener.
struct Redirect {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

const DONE_PAGE: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>Signed in</title></head><body><p>Authentication complete. You can close this window and return to the application.</p></body></html>";

/// Serves the loopback listener until a request to `/` with `code` or `error` arrives.
async fn wait_for_redirect(listener: TcpListener) -> std::io::Result<Redirect> {
    loop {
        let (mut stream, _) = listener.accept().await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 2048];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let head = String::from_utf8_lossy(&buf);
        let target = head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("")
            .to_string();
        let parsed = url::Url::parse(&format!("http://127.0.0.1{target}")).ok();
        let redirect = parsed.filter(|u| u.path() == "/").map(|u| {
            let get = |name: &str| {
                u.query_pairs()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.into_owned())
            };
            Redirect {
                code: get("code"),
                state: get("state"),
                error: get("error"),
                error_description: get("error_description"),
            }
        });
        match redirect {
            Some(r) if r.code.is_some() || r.error.is_some() => {
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n{DONE_PAGE}",
                    DONE_PAGE.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.shutdown().await;
                return Ok(r);
            }
            _ => {
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .await;
            }
        }
    }
}

impl InteractiveBrowserCredential {
    async fn sign_in(&self, scope: String) -> azure_core::Result<serde_json::Value> {
        let listener = TcpListener::bind(("127.0.0.1", self.options.redirect_port))
            .await
            .map_err(|e| {
                credential_error(format!(
                    "could not listen on 127.0.0.1:{} for the browser's redirect: {e}",
                    self.options.redirect_port
                ))
            })?;
        let port = listener
            .local_addr()
            .map_err(|e| credential_error(format!("the loopback listener has no address: {e}")))?
            .port();
        let redirect_uri = format!("http://127.0.0.1:{port}/");
        let verifier = random_b64(32);
        let state = random_b64(16);
        let mut url = url::Url::parse(&self.authority.url("authorize"))
            .map_err(|e| credential_error(format!("the authorization URL is not valid: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("client_id", &self.client_id)
                .append_pair("response_type", "code")
                .append_pair("redirect_uri", &redirect_uri)
                .append_pair("scope", &scope)
                .append_pair("state", &state)
                .append_pair("code_challenge", &pkce_challenge(&verifier))
                .append_pair("code_challenge_method", "S256")
                .append_pair("prompt", "select_account");
            if let Some(hint) = &self.options.login_hint {
                q.append_pair("login_hint", hint);
            }
        }
        let opened = match &self.options.open_url {
            Some(open) => open(url.as_str()),
            None => open_system_browser(url.as_str()),
        };
        if !opened {
            return Err(credential_error(
                "could not open a browser for the sign-in: give InteractiveBrowserOptions::open_url a callback that shows the URL, or use the device code credential",
            ));
        }
        tracing::debug!(
            port,
            "waiting for the browser to come back to the loopback redirect"
        );
        let redirect = tokio::time::timeout(self.options.timeout, wait_for_redirect(listener))
            .await
            .map_err(|_| {
                credential_error(format!(
                    "the browser did not come back within {:?}: finish signing in in the browser, or use the device code credential where no browser can reach 127.0.0.1",
                    self.options.timeout
                ))
            })?
            .map_err(|e| credential_error(format!("the loopback redirect listener failed: {e}")))?;
        if let Some(error) = redirect.error {
            return Err(credential_error(format!(
                "the sign-in failed in the browser: {error}: {}",
                redirect.error_description.unwrap_or_default()
            )));
        }
        if redirect.state.as_deref() != Some(state.as_str()) {
            return Err(credential_error(
                "the browser came back with a state that is not ours (a stale tab, or a forged redirect): sign in again",
            ));
        }
        let code = redirect
            .code
            .ok_or_else(|| credential_error("the browser came back without a code"))?;
        let reply = self
            .authority
            .post(
                "token",
                &[
                    ("grant_type", "authorization_code"),
                    ("client_id", &self.client_id),
                    ("code", &code),
                    ("redirect_uri", &redirect_uri),
                    ("code_verifier", &verifier),
                    ("scope", &scope),
                ],
            )
            .await
            .map_err(|e: PostError| {
                e.into_azure("redeeming the authorization code failed", None)
            })?;
        Ok(reply)
    }
}

#[async_trait::async_trait]
impl TokenCredential for InteractiveBrowserCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let scope = scopes.join(" ");
        self.cache
            .get(&self.authority, &self.client_id, &scope, |asked| {
                self.sign_in(asked)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_challenge_is_base64url_sha256() {
        // base64url(SHA-256("dBjftJeZ4CVP-mJ0z3z7KFsLY5oX-rcaXg2M0D9xZ8I")), without padding,
        // as Python's hashlib computes it.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mJ0z3z7KFsLY5oX-rcaXg2M0D9xZ8I"),
            "RNdMlvbmim3B0nI75q6gOvOMa4RP4jOSqUwpuC4_0Y8"
        );
    }
}
