//! [`CachedCredential`]: a credential in front of another, serving its tokens from a
//! [`TokenCache`] while they have their refresh margin left.

use std::sync::{Arc, Mutex};

use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::time::OffsetDateTime;
use redis_entra::RefreshPolicy;

use super::{default_dir, now_unix, CacheKey, Entry, TokenCache};

/// A credential that serves tokens from a [`TokenCache`] while they have their refresh margin
/// left, and otherwise asks the credential it wraps and stores what it gets. `Debug` shows no
/// token.
pub struct CachedCredential {
    inner: Arc<dyn TokenCredential>,
    cache: TokenCache,
    key: CacheKey,
    policy: RefreshPolicy,
    /// The expiry of the last token this process handed out, and whether it came from the file:
    /// the file is used again only for a token that expires later (another process refreshed
    /// it), so a refresh in a long-running prompt asks the credential.
    served: Mutex<Option<(i64, bool)>>,
    /// The scopes of the last request, to forget a refused token.
    last_scopes: Mutex<Vec<String>>,
}

impl std::fmt::Debug for CachedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedCredential")
            .field("dir", &self.cache.dir())
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl CachedCredential {
    /// Wraps `inner`, caching its tokens in `cache` under `key`; `policy` decides how long a
    /// cached token is used.
    pub fn new(
        inner: Arc<dyn TokenCredential>,
        cache: TokenCache,
        key: CacheKey,
        policy: RefreshPolicy,
    ) -> Self {
        Self {
            inner,
            cache,
            key,
            policy,
            served: Mutex::new(None),
            last_scopes: Mutex::new(Vec::new()),
        }
    }

    /// Removes the cached token if the last one served came from the file (the server refused
    /// it: revoked, or signed with a key the server no longer trusts), so that the next run
    /// asks for a new one.
    pub fn forget_if_served_from_cache(&self) {
        let from_file = self
            .served
            .lock()
            .map(|s| s.is_some_and(|(_, from_file)| from_file))
            .unwrap_or(false);
        if from_file {
            let scopes = self
                .last_scopes
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default();
            let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
            self.cache.remove(&self.key, &scopes);
        }
    }
}

#[async_trait::async_trait]
impl TokenCredential for CachedCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        if let Ok(mut last) = self.last_scopes.lock() {
            *last = scopes.iter().map(|s| s.to_string()).collect();
        }
        let served = self.served.lock().ok().and_then(|s| *s);
        let now = now_unix();
        if let Some(entry) = self.cache.load(&self.key, scopes) {
            let fresher = served.is_none_or(|(expires_on, _)| entry.expires_on > expires_on);
            if fresher && entry.usable(now, &self.policy) {
                if let Ok(expires_on) = OffsetDateTime::from_unix_timestamp(entry.expires_on) {
                    tracing::debug!(
                        file = %self.cache.path(&self.key, scopes).display(),
                        expires_in_s = entry.expires_on - now,
                        "token from the cache"
                    );
                    if let Ok(mut s) = self.served.lock() {
                        *s = Some((entry.expires_on, true));
                    }
                    return Ok(AccessToken::new(Secret::new(entry.token), expires_on));
                }
            }
        }
        let token = self.inner.get_token(scopes, options).await?;
        let entry = Entry {
            token: token.token.secret().to_string(),
            expires_on: token.expires_on.unix_timestamp(),
            received_at: now_unix(),
        };
        if let Ok(mut s) = self.served.lock() {
            *s = Some((entry.expires_on, false));
        }
        match self.cache.store(&self.key, scopes, &entry) {
            Ok(()) => tracing::debug!(
                file = %self.cache.path(&self.key, scopes).display(),
                "token stored in the cache"
            ),
            Err(e) => eprintln!(
                "warning: token cache: cannot write to {}: {e}; the token is not cached",
                self.cache.dir().display()
            ),
        }
        Ok(token)
    }
}

/// The cached credential of this process, if any (for [`forget_refused`]).
static ACTIVE: std::sync::OnceLock<Arc<CachedCredential>> = std::sync::OnceLock::new();

/// The credential of `identity`, behind the cache unless `disabled` or the identity has no
/// key, or no private folder can be had (a warning says why).
pub fn wrap(
    identity: crate::identity::Identity,
    disabled: bool,
    policy: &RefreshPolicy,
) -> Arc<dyn TokenCredential> {
    let Some(key) = identity.cache_key.filter(|_| !disabled) else {
        return identity.credential;
    };
    let Some(cache) = default_dir().and_then(TokenCache::open) else {
        return identity.credential;
    };
    let cached = Arc::new(CachedCredential::new(
        identity.credential,
        cache,
        key,
        policy.clone(),
    ));
    let _ = ACTIVE.set(cached.clone());
    cached
}

/// After the server refused the token: removes it from the cache if it came from there, so the
/// next run asks for a new one instead of failing the same way until it expires.
pub fn forget_refused() {
    if let Some(cached) = ACTIVE.get() {
        cached.forget_if_served_from_cache();
    }
}
