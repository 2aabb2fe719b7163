//! Which tenant a request's `{tenant}` path segment names.
//!
//! The emulator has one tenant, named by its GUID (in any letter case). `common` and
//! `organizations` are the multi-tenant aliases: the metadata documents and the JWKS answer
//! for them, the token endpoint does not (Entra replies AADSTS50059 to a client-credentials
//! request that names no tenant).

use crate::directory::Directory;

/// What a `{tenant}` path segment names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TenantRef {
    /// The emulator's own tenant.
    Own,
    /// `common` or `organizations`.
    MultiTenant,
    /// Anything else.
    Unknown,
}

impl TenantRef {
    /// Resolves a path segment against the directory.
    pub fn resolve(directory: &Directory, segment: &str) -> Self {
        if segment.eq_ignore_ascii_case(directory.tenant_id()) {
            Self::Own
        } else if segment.eq_ignore_ascii_case("common")
            || segment.eq_ignore_ascii_case("organizations")
        {
            Self::MultiTenant
        } else {
            Self::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_guid_aliases_and_strangers() {
        let dir = Directory::new();
        let upper = dir.tenant_id().to_ascii_uppercase();
        assert_eq!(TenantRef::resolve(&dir, &upper), TenantRef::Own);
        assert_eq!(TenantRef::resolve(&dir, "common"), TenantRef::MultiTenant);
        assert_eq!(
            TenantRef::resolve(&dir, "organizations"),
            TenantRef::MultiTenant
        );
        assert_eq!(TenantRef::resolve(&dir, "contoso.com"), TenantRef::Unknown);
    }
}
