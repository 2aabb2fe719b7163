//! The resources the emulator's tenant issues tokens for, and how requests name them.
//!
//! Only Azure Cache for Redis exists here. A client-credentials `scope` names it as
//! `https://redis.azure.com/.default` (the token's `aud` is then `https://redis.azure.com`) or
//! `acca5fbb-b7e4-4009-81f1-37e38fd66d78/.default` (`aud` is the GUID). A managed-identity
//! `resource` is the v1 form: `https://redis.azure.com`, with or without a trailing slash, or
//! the GUID; the `aud` is the requested resource without the trailing slash.

use crate::directory::{REDIS_APP_ID, REDIS_RESOURCE};

/// Why a client-credentials scope was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScopeError {
    /// Empty, or more than one resource.
    Invalid,
    /// A resource without the `/.default` suffix (AADSTS1002012).
    NotDefault,
    /// A `/.default` scope of a resource the tenant does not have (AADSTS500011); carries the
    /// resource as Entra names it in the message.
    UnknownResource(String),
}

/// Scope values MSAL and friends may add to any request; they name no resource.
const RESERVED_SCOPES: [&str; 3] = ["openid", "profile", "offline_access"];

/// The audience of a token for a client-credentials `scope`.
pub(crate) fn audience_for_scope(scope: &str) -> Result<String, ScopeError> {
    let mut resources = scope
        .split_whitespace()
        .filter(|s| !RESERVED_SCOPES.iter().any(|r| s.eq_ignore_ascii_case(r)));
    let (Some(single), None) = (resources.next(), resources.next()) else {
        return Err(ScopeError::Invalid);
    };
    let Some(resource) = single.strip_suffix("/.default") else {
        return Err(ScopeError::NotDefault);
    };
    if resource.eq_ignore_ascii_case(REDIS_RESOURCE) {
        Ok(REDIS_RESOURCE.to_string())
    } else if resource.eq_ignore_ascii_case(REDIS_APP_ID) {
        Ok(REDIS_APP_ID.to_string())
    } else {
        Err(ScopeError::UnknownResource(resource.to_string()))
    }
}

/// The audience of a token for a managed-identity `resource`, or `None` for a resource the
/// tenant does not have.
pub(crate) fn audience_for_resource(resource: &str) -> Option<String> {
    let trimmed = resource.trim_end_matches('/');
    if trimmed.eq_ignore_ascii_case(REDIS_RESOURCE) {
        Some(REDIS_RESOURCE.to_string())
    } else if resource.eq_ignore_ascii_case(REDIS_APP_ID) {
        Some(REDIS_APP_ID.to_string())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        assert_eq!(
            audience_for_scope("https://redis.azure.com/.default").as_deref(),
            Ok(REDIS_RESOURCE)
        );
        assert_eq!(
            audience_for_scope("acca5fbb-b7e4-4009-81f1-37e38fd66d78/.default openid").as_deref(),
            Ok(REDIS_APP_ID)
        );
        assert_eq!(
            audience_for_scope("https://redis.azure.com"),
            Err(ScopeError::NotDefault)
        );
        assert_eq!(
            audience_for_scope("https://vault.azure.net/.default"),
            Err(ScopeError::UnknownResource(
                "https://vault.azure.net".into()
            ))
        );
        assert_eq!(audience_for_scope("  "), Err(ScopeError::Invalid));
        assert_eq!(
            audience_for_scope("https://redis.azure.com/.default https://vault.azure.net/.default"),
            Err(ScopeError::Invalid)
        );
    }

    #[test]
    fn resources() {
        for r in ["https://redis.azure.com", "https://redis.azure.com/"] {
            assert_eq!(audience_for_resource(r).as_deref(), Some(REDIS_RESOURCE));
        }
        assert_eq!(
            audience_for_resource(REDIS_APP_ID).as_deref(),
            Some(REDIS_APP_ID)
        );
        assert_eq!(audience_for_resource("https://vault.azure.net"), None);
    }
}
