//! The signing keys and issuers of each tenant, as its authority's OIDC metadata and JWKS name
//! them: read on the server's main thread for every token, replaced whole by the fetch thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use redis_entra_jwt::DecodingKey;

/// At most this many keys per tenant (Entra publishes a handful).
pub const MAX_KEYS_PER_TENANT: usize = 64;

/// What the authority publishes for one tenant.
#[derive(Clone, Default)]
pub struct TenantKeys {
    /// The `issuer` of the v1 metadata (for `ver: 1.0` tokens), if it was fetched.
    pub v1_issuers: Vec<String>,
    /// The `issuer` of the v2 metadata (for `ver: 2.0` tokens), if it was fetched.
    pub v2_issuers: Vec<String>,
    /// The RSA keys of its JWKS, by `kid`.
    pub keys: HashMap<String, DecodingKey>,
}

/// One tenant that trusts a `kid`: what a token signed with it is checked against.
pub struct Candidate {
    /// The tenant id, as configured.
    pub tenant: String,
    /// The key under the `kid`.
    pub key: DecodingKey,
    /// The tenant's v1 and v2 issuers.
    pub v1_issuers: Vec<String>,
    /// See `v1_issuers`.
    pub v2_issuers: Vec<String>,
}

/// The keys of every configured tenant.
#[derive(Default)]
pub struct KeyStore {
    tenants: RwLock<HashMap<String, TenantKeys>>,
    /// Moves whenever a tenant's keys or issuers are replaced.
    epoch: AtomicU64,
}

impl KeyStore {
    /// Replaces what is known of `tenant`.
    pub fn set(&self, tenant: &str, keys: TenantKeys) {
        self.tenants
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tenant.to_string(), keys);
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// A counter that moves whenever the keys change: what was verified under one value is
    /// verified again under another.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// What is known of `tenant` now.
    pub fn get(&self, tenant: &str) -> Option<TenantKeys> {
        self.tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .cloned()
    }

    /// The tenants whose JWKS holds `kid`.
    pub fn candidates(&self, kid: &str) -> Vec<Candidate> {
        self.tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|(tenant, t)| {
                t.keys.get(kid).map(|key| Candidate {
                    tenant: tenant.clone(),
                    key: key.clone(),
                    v1_issuers: t.v1_issuers.clone(),
                    v2_issuers: t.v2_issuers.clone(),
                })
            })
            .collect()
    }

    /// How many keys are trusted, over all tenants.
    pub fn key_count(&self) -> usize {
        self.tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|t| t.keys.len())
            .sum()
    }
}
