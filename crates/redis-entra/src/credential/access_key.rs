//! An access key presented as a credential, so that a key-authenticated connection goes through
//! the same machinery as an Entra one (with `Username::Fixed("default")`: `AUTH default <key>`).
//! It never expires, so it is never refreshed.

use std::time::Duration;

use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::time::OffsetDateTime;

/// A cache's access key as a [`TokenCredential`]. `Debug` never shows the key.
///
/// ```
/// use std::sync::Arc;
/// use redis_entra::credential::AccessKeyCredential;
/// use redis_entra::{TokenManager, TokenManagerOptions, Username};
/// let mut options = TokenManagerOptions::default();
/// options.username = Username::Fixed("default".into());
/// let manager = TokenManager::new(Arc::new(AccessKeyCredential::new("k3y")), options);
/// assert!(!format!("{:?}", AccessKeyCredential::new("k3y")).contains("k3y"));
/// ```
pub struct AccessKeyCredential {
    key: String,
}

impl AccessKeyCredential {
    /// The credential for `key`.
    pub fn new(key: impl Into<String>) -> Self {
        Self { key: key.into() }
    }
}

impl std::fmt::Debug for AccessKeyCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKeyCredential")
            .field("key", &"<redacted>")
            .finish()
    }
}

#[async_trait::async_trait]
impl TokenCredential for AccessKeyCredential {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        // Keys don't expire; a year keeps the refresh schedule finite.
        let expires_on = OffsetDateTime::now_utc() + Duration::from_secs(365 * 24 * 3600);
        Ok(AccessToken::new(Secret::new(self.key.clone()), expires_on))
    }
}
