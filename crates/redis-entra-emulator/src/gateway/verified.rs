//! The memory of verified tokens: a token whose signature and claims verified costs a lookup,
//! not an RSA verification, the next time it is presented (a fleet of connections
//! re-authenticating with the token their client just refreshed).
//!
//! An entry holds the `kid` and the generation of the key that verified it, and counts only
//! while that very key is trusted under that `kid` (see [`TrustedKeys`]): a key replaced under
//! the same `kid`, even during the verification, or removed, voids it. At most
//! [`VERIFIED_CAPACITY`] entries; a full memory drops the expired entries, then everything.
//! Keys are the token bytes: nothing here prints them.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use redis_entra_jwt::{now_f64, Rejection as TokenRejection, Rules};

use super::trusted_keys::TrustedKeys;
use super::validate::Rejection;

/// How many verified tokens are remembered at most.
pub const VERIFIED_CAPACITY: usize = 4096;

/// A verified token: the key that verified it, its time window, and what the validator keeps
/// of its claims.
struct Entry<C> {
    kid: String,
    generation: u64,
    exp: f64,
    nbf: Option<f64>,
    claims: C,
}

/// What a verification proved, to remember.
pub(crate) struct Proof<C> {
    pub(crate) kid: String,
    pub(crate) generation: u64,
    pub(crate) exp: f64,
    pub(crate) nbf: Option<f64>,
    pub(crate) claims: C,
}

/// Verified tokens, by their bytes.
pub(crate) struct VerifiedTokens<C> {
    entries: Mutex<HashMap<Box<[u8]>, Entry<C>>>,
}

impl<C: Clone> VerifiedTokens<C> {
    pub(crate) fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The claims of `token` and the generation of the key that verified it, if it was
    /// verified and still counts: that key is still the one trusted under its `kid`, and the
    /// token is inside its `nbf`/`exp` window give or take the rules' skew. A token whose key was
    /// removed is refused ([`Rejection::UnknownKey`]); one whose key was replaced is forgotten
    /// (`None`: verify it again, with the key trusted now).
    pub(crate) fn lookup(
        &self,
        token: &[u8],
        keys: &TrustedKeys,
        rules: &Rules,
    ) -> Result<Option<(u64, C)>, Rejection> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = entries.get(token) else {
            return Ok(None);
        };
        match keys.generation_of(&entry.kid) {
            None => return Err(TokenRejection::UnknownKey.into()),
            Some(now) if now != entry.generation => {
                entries.remove(token);
                return Ok(None);
            }
            Some(_) => {}
        }
        rules.check_window(entry.exp, entry.nbf, now_f64())?;
        Ok(Some((entry.generation, entry.claims.clone())))
    }

    /// Remembers a verified token, unless the key that verified it (by generation) is no
    /// longer the one trusted under its `kid`: replaced or removed during the verification.
    pub(crate) fn remember(
        &self,
        token: &[u8],
        proof: Proof<C>,
        keys: &TrustedKeys,
        rules: &Rules,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked under the memory's lock: a key replaced after this check forgets the entry
        // when it takes the lock (`forget_signed_by`), and one replaced before is seen here.
        if keys.generation_of(&proof.kid) != Some(proof.generation) {
            return;
        }
        if entries.len() >= VERIFIED_CAPACITY {
            let now = now_f64();
            entries.retain(|_, e| rules.check_window(e.exp, None, now).is_ok());
            if entries.len() >= VERIFIED_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            token.into(),
            Entry {
                kid: proof.kid,
                generation: proof.generation,
                exp: proof.exp,
                nbf: proof.nbf,
                claims: proof.claims,
            },
        );
    }

    /// Forgets every token the key under `kid` verified.
    pub(crate) fn forget_signed_by(&self, kid: &str) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, e| e.kid != kid);
    }

    /// How many tokens are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Makes every remembered token look expired long ago (tests).
    #[cfg(test)]
    pub(crate) fn expire_all(&self) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values_mut()
            .for_each(|e| e.exp = 1.0);
    }
}
