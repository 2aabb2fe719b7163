//! Access-token validation, as Azure Cache for Redis does it for `AUTH <oid> <token>`.
//!
//! A token is accepted when it is a JWT signed with RS256 by a trusted key (looked up by the
//! header's `kid`), its `aud` is the Redis resource (any of the three spellings Entra uses, as a
//! string: an array is refused, though `jsonwebtoken` alone would take one holding it), its
//! `iss` is the tenant's issuer for the token's `ver` (v1: `https://sts.windows.net/{tid}/`;
//! v2: `https://login.microsoftonline.com/{tid}/v2.0` or the emulator's own authority host
//! `{authority}/{tid}/v2.0`; a string, never an array), its `tid` is the tenant's id, it is
//! within `nbf`/`exp` give or take the clock skew, it lives no longer than the maximum lifetime
//! ([`DEFAULT_MAX_LIFETIME`], about what Entra gives a managed identity: `exp - iat`,
//! `exp - nbf` and `exp - now` each at most that plus the skew), its `oid` equals the username
//! (compared case-insensitively, as GUIDs) or the username is the `objectIdAlias` of that
//! object id's assignment (exactly; whether Azure accepts aliases is unconfirmed, the emulator
//! does), and that object id has an access policy assigned in the [`Directory`]. Anything else
//! is a [`Rejection`], whose reason is for debug logs only: the client always sees Redis'
//! `WRONGPASS` text.
//!
//! A token whose signature and claims verified is remembered (up to
//! [`VERIFIED_CAPACITY`] tokens, until they expire), so the same token presented again — a fleet of connections
//! re-authenticating with the token their client just refreshed — costs a lookup instead of an
//! RSA verification. An entry remembers the generation of the key that verified it and counts
//! only while that very key is trusted: a key replaced under the same `kid`, even during the
//! verification, or removed, voids it. Its time window, username and access policy are checked
//! on every hit.
//!
//! RSA verification is the one costly step. [`TokenValidator::check`], which the gateway's
//! sessions call, runs it on Tokio's blocking pool, never on the runtime threads that serve
//! connections, with at most [`verification_slots`](TokenValidator::verification_slots)
//! verifications at a time (the number of CPUs, at least 2); an `AUTH` that waits more than
//! [`VERIFICATION_QUEUE_TIMEOUT`] for a slot is refused ([`Rejection::Busy`]) without being
//! verified. Cheap checks (the header, the `kid`, the verified-token memory) run first, inline,
//! so garbage costs no RSA. The gateway bounds the failures each connection may cause (see
//! [`MAX_FAILED_AUTH_PER_CONNECTION`](super::MAX_FAILED_AUTH_PER_CONNECTION)).
//!
//! Neither this module's types nor its errors ever hold or print the token.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::DecodingKey;
use redis_entra_jwt::{check_issuer, check_tenant, signing_kid, Claims, Rules};
use tokio::sync::{watch, Semaphore};

use super::trusted_keys::{TrustedKey, TrustedKeys};
pub use super::verified::VERIFIED_CAPACITY;
use super::verified::{Proof, VerifiedTokens};
use crate::directory::{AccessPolicy, Directory};
use crate::signing::TokenIssuer;
use crate::Error;
pub use redis_entra_jwt::{
    v1_issuer, v2_issuer, Rejection as TokenRejection, DEFAULT_MAX_LIFETIME, DEFAULT_SKEW,
};

/// How long an `AUTH` waits for a verification slot before it is refused as
/// [`Rejection::Busy`].
pub const VERIFICATION_QUEUE_TIMEOUT: Duration = Duration::from_secs(2);

/// A token that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ValidToken {
    /// The identity's object id (`oid`), as the token spells it.
    pub oid: String,
    /// When the token expires, in seconds since the Unix epoch (`exp`).
    pub exp: u64,
    /// The access policy assigned to the identity.
    pub policy: AccessPolicy,
    /// The generation of the signing key that verified it: the session holding the token is
    /// closed once that key is no longer trusted (see [`TokenValidator::revoked`]).
    pub key_generation: u64,
}

/// Why a password was refused. For logs: clients only ever see `WRONGPASS`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// `AUTH <key>` or `AUTH default <key>` refused: access keys are disabled, or the password
    /// is neither key.
    #[error(transparent)]
    AccessKey(#[from] crate::access_keys::KeyRejection),
    /// The token itself failed a check (shared with the server module: `redis-entra-jwt`).
    #[error(transparent)]
    Token(#[from] TokenRejection),
    /// The identity has no access policy assignment on the cache.
    #[error("the identity has no access policy assigned")]
    NoAccessPolicy,
    /// Too many verifications were waiting for too long: refused without verifying.
    #[error("too many token verifications are in progress")]
    Busy,
}

/// The default number of verification slots: the CPUs, at least 2.
fn default_slots() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2)
}

/// Validates Entra access tokens presented to the gateway.
///
/// Signing keys are held by `kid` and can be added and removed while the gateway runs (key
/// rotation).
pub struct TokenValidator {
    directory: Arc<Directory>,
    keys: TrustedKeys,
    verified: VerifiedTokens<Claims>,
    v1_issuers: Vec<String>,
    v2_issuers: Vec<String>,
    /// Audiences, skew and maximum lifetime (the checks shared with the server module).
    rules: Rules,
    /// Bounds the RSA verifications running at once.
    slots: Arc<Semaphore>,
    slot_count: usize,
    /// RSA verifications run so far.
    verifications: AtomicU64,
    /// RSA verifications running now through [`check`](Self::check), and the most ever.
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
}

impl std::fmt::Debug for TokenValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenValidator")
            .field("kids", &self.keys.kids())
            .field("v1_issuers", &self.v1_issuers)
            .field("v2_issuers", &self.v2_issuers)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl TokenValidator {
    /// A validator for the directory's tenant: it accepts the v1 issuer
    /// `https://sts.windows.net/{tid}/` for `ver: 1.0` tokens and the v2 issuer
    /// `https://login.microsoftonline.com/{tid}/v2.0` for `ver: 2.0` tokens, the three Redis
    /// audiences, a skew of [`DEFAULT_SKEW`] and lifetimes up to [`DEFAULT_MAX_LIFETIME`]. It
    /// trusts no key until [`trust`](Self::trust) or [`add_key`](Self::add_key) is called.
    pub fn new(directory: Arc<Directory>) -> Self {
        let tid = directory.tenant_id().to_string();
        Self {
            directory,
            keys: TrustedKeys::new(),
            verified: VerifiedTokens::new(),
            v1_issuers: vec![v1_issuer(&tid)],
            v2_issuers: vec![v2_issuer(&tid)],
            rules: Rules::default(),
            slots: Arc::new(Semaphore::new(default_slots())),
            slot_count: default_slots(),
            verifications: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
        }
    }

    /// Sets how many RSA verifications [`check`](Self::check) runs at once (at least 1;
    /// default: the number of CPUs, at least 2).
    pub fn with_verification_slots(mut self, slots: usize) -> Self {
        let slots = slots.max(1);
        self.slots = Arc::new(Semaphore::new(slots));
        self.slot_count = slots;
        self
    }

    /// How many RSA verifications [`check`](Self::check) runs at once.
    pub fn verification_slots(&self) -> usize {
        self.slot_count
    }

    /// The most RSA verifications [`check`](Self::check) ever ran at once (at most
    /// [`verification_slots`](Self::verification_slots)).
    pub fn peak_concurrent_verifications(&self) -> usize {
        self.peak_in_flight.load(Ordering::Relaxed)
    }

    /// How many RSA signature verifications have run (remembered tokens and tokens refused
    /// before the signature, for their header or `kid`, cost none).
    pub fn verifications_run(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Also accepts, for `ver: 2.0` tokens, the v2 issuer `{authority}/{tid}/v2.0` of the fake
    /// Entra ID at `authority` (for example `https://localhost:8443`).
    pub fn with_authority(mut self, authority: &str) -> Self {
        let issuer = format!(
            "{}/{}/v2.0",
            authority.trim_end_matches('/'),
            self.directory.tenant_id()
        );
        if !self.v2_issuers.contains(&issuer) {
            self.v2_issuers.push(issuer);
        }
        self
    }

    /// Sets the clock skew allowed on `exp` and `nbf` (whole seconds; a connection is closed at
    /// `exp` plus this skew).
    pub fn with_skew(mut self, skew: Duration) -> Self {
        self.rules.skew = skew;
        self
    }

    /// Sets the longest token lifetime accepted (whole seconds; default
    /// [`DEFAULT_MAX_LIFETIME`]).
    pub fn with_max_lifetime(mut self, max_lifetime: Duration) -> Self {
        self.rules.max_lifetime = max_lifetime;
        self
    }

    /// Trusts the signing key of `issuer` (under its `kid`).
    pub fn trust(&self, issuer: &TokenIssuer) -> Result<(), Error> {
        self.add_key(issuer.kid(), issuer.decoding_key()?);
        Ok(())
    }

    /// Trusts `key` for tokens whose header carries `kid` (replacing any key with that `kid`:
    /// sessions authenticated with a token the replaced key verified are then
    /// [revoked](Self::revoked)).
    pub fn add_key(&self, kid: impl Into<String>, key: DecodingKey) {
        let kid = kid.into();
        self.keys.insert(kid.clone(), key);
        // A replaced key must not vouch for what the old one signed.
        self.verified.forget_signed_by(&kid);
    }

    /// Stops trusting the key `kid`; returns whether it was trusted. Sessions authenticated
    /// with a token it verified are [revoked](Self::revoked).
    pub fn remove_key(&self, kid: &str) -> bool {
        let removed = self.keys.remove(kid);
        self.verified.forget_signed_by(kid);
        removed
    }

    /// Resolves once the signing key of generation `key_generation` (a
    /// [`ValidToken::key_generation`]) is no longer trusted — removed, or replaced under its
    /// `kid` — or at once if it is not trusted now. A session awaits it beside its deadline
    /// and closes when it resolves.
    pub async fn revoked(&self, key_generation: u64) {
        let mut revocations = self.keys.revocations();
        loop {
            if !self.keys.is_trusted(key_generation) {
                return;
            }
            if revocations.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// A receiver of the key-revocation counter, which moves whenever a signing key is removed
    /// or replaced (then check [`is_trusted`](Self::is_trusted)).
    pub fn revocations(&self) -> watch::Receiver<u64> {
        self.keys.revocations()
    }

    /// Whether the signing key of generation `key_generation` is still trusted.
    pub fn is_trusted(&self, key_generation: u64) -> bool {
        self.keys.is_trusted(key_generation)
    }

    /// The clock skew allowed on `exp` and `nbf`.
    pub fn skew(&self) -> Duration {
        self.rules.skew
    }

    /// The longest token lifetime accepted.
    pub fn max_lifetime(&self) -> Duration {
        self.rules.max_lifetime
    }

    /// The issuers (`iss`) accepted: the v1 ones (for `ver: 1.0`), then the v2 ones (for
    /// `ver: 2.0`).
    pub fn issuers(&self) -> Vec<String> {
        self.v1_issuers
            .iter()
            .chain(&self.v2_issuers)
            .cloned()
            .collect()
    }

    /// The audiences (`aud`) accepted.
    pub fn audiences(&self) -> &[String] {
        &self.rules.audiences
    }

    /// Checks `AUTH <username> <token>` (the username being the object id or the alias), on
    /// the calling thread.
    pub fn validate(&self, username: &[u8], token: &[u8]) -> Result<ValidToken, Rejection> {
        let (generation, claims) = match self.verified.lookup(token, &self.keys, &self.rules)? {
            Some(hit) => hit,
            None => {
                let (kid, key) = self.key_for(token)?;
                let generation = key.generation;
                (generation, self.verify(token, kid, &key)?)
            }
        };
        self.authorise(username, generation, claims)
    }

    /// Checks `AUTH <username> <token>` as [`validate`](Self::validate) does, with the RSA
    /// verification (when the token is not remembered) on Tokio's blocking pool, at most
    /// [`verification_slots`](Self::verification_slots) at a time; refused as
    /// [`Rejection::Busy`] after waiting [`VERIFICATION_QUEUE_TIMEOUT`] for a slot.
    pub async fn check(
        self: &Arc<Self>,
        username: &[u8],
        token: &[u8],
    ) -> Result<ValidToken, Rejection> {
        if let Some((generation, claims)) = self.verified.lookup(token, &self.keys, &self.rules)? {
            return self.authorise(username, generation, claims);
        }
        // Cheap refusals before queueing: a malformed header, another algorithm, an unknown kid.
        let (kid, _) = self.key_for(token)?;
        let permit = tokio::time::timeout(
            VERIFICATION_QUEUE_TIMEOUT,
            self.slots.clone().acquire_owned(),
        )
        .await
        .map_err(|_| Rejection::Busy)?
        .map_err(|_| Rejection::Busy)?;
        // The key trusted now, not when the AUTH was queued (it may have been replaced since).
        let key = self.keys.get(&kid).ok_or(TokenRejection::UnknownKey)?;
        let this = Arc::clone(self);
        let owned: Box<[u8]> = token.into();
        let generation = key.generation;
        let claims = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let now = this.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
            this.peak_in_flight.fetch_max(now, Ordering::Relaxed);
            let verified = this.verify(&owned, kid, &key);
            this.in_flight.fetch_sub(1, Ordering::Relaxed);
            verified
        })
        .await
        .map_err(|_| Rejection::Busy)??;
        self.authorise(username, generation, claims)
    }

    /// The header's `kid` and the key trusted under it (cheap: no signature is checked).
    fn key_for(&self, token: &[u8]) -> Result<(String, TrustedKey), Rejection> {
        let kid = signing_kid(token)?;
        let key = self.keys.get(&kid).ok_or(TokenRejection::UnknownKey)?;
        Ok((kid, key))
    }

    /// Verifies a token's signature with `key` (trusted under `kid` when it was looked up) and
    /// its claims (everything but the directory), and remembers it when it passes and `key` is
    /// still the one trusted under `kid`.
    fn verify(&self, token: &[u8], kid: String, key: &TrustedKey) -> Result<Claims, Rejection> {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let claims = self.rules.verify(token, &key.key)?;
        check_issuer(&claims, &self.v1_issuers, &self.v2_issuers)?;
        check_tenant(&claims, self.directory.tenant_id())?;
        self.verified.remember(
            token,
            Proof {
                kid,
                generation: key.generation,
                exp: claims.exp,
                nbf: claims.nbf,
                claims: claims.clone(),
            },
            &self.keys,
            &self.rules,
        );
        Ok(claims)
    }

    /// Who the verified token lets in: its `oid` (or the assignment's alias) must be the
    /// username, and that object id must have an access policy now.
    fn authorise(
        &self,
        username: &[u8],
        key_generation: u64,
        claims: Claims,
    ) -> Result<ValidToken, Rejection> {
        let exp = claims.exp_secs();
        let oid = claims.oid.ok_or(TokenRejection::MissingOid)?;
        let assignment = self.directory.assignment_of(&oid);
        let by_oid = oid.as_bytes().eq_ignore_ascii_case(username);
        let by_alias = assignment
            .as_ref()
            .and_then(|a| a.alias.as_deref())
            .is_some_and(|alias| alias.as_bytes() == username);
        if !(by_oid || by_alias) {
            return Err(TokenRejection::UsernameMismatch.into());
        }
        let policy = assignment
            .map(|a| a.policy)
            .ok_or(Rejection::NoAccessPolicy)?;
        Ok(ValidToken {
            oid,
            exp,
            policy,
            key_generation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::REDIS_RESOURCE;
    use crate::signing::TokenIssuer;

    fn setup() -> (Arc<Directory>, TokenIssuer, TokenValidator, String, String) {
        let directory = Arc::new(Directory::new());
        let sp = directory.create_service_principal("app");
        directory.assign(&sp.object_id, AccessPolicy::DataOwner);
        let issuer = TokenIssuer::new(directory.tenant_id(), Duration::from_secs(3600)).unwrap();
        let validator = TokenValidator::new(directory.clone());
        validator.trust(&issuer).unwrap();
        let token = issuer.issue(&sp, REDIS_RESOURCE).unwrap().token;
        (directory, issuer, validator, sp.object_id, token)
    }

    #[test]
    fn a_remembered_token_is_still_checked_against_keys_directory_and_username() {
        let (directory, issuer, validator, oid, token) = setup();
        let first = validator
            .validate(oid.as_bytes(), token.as_bytes())
            .unwrap();
        // Remembered: the same answer, again and again.
        assert_eq!(validator.verified.len(), 1);
        let again = validator
            .validate(oid.as_bytes(), token.as_bytes())
            .unwrap();
        assert_eq!(first, again);
        // Another username with the same token: refused, even though the token is remembered.
        assert_eq!(
            validator.validate(b"someone-else", token.as_bytes()),
            Err(Rejection::Token(TokenRejection::UsernameMismatch))
        );
        // The identity loses its policy: refused.
        directory.remove_assignment(&oid);
        assert_eq!(
            validator.validate(oid.as_bytes(), token.as_bytes()),
            Err(Rejection::NoAccessPolicy)
        );
        directory.assign(&oid, AccessPolicy::DataOwner);
        assert!(validator.validate(oid.as_bytes(), token.as_bytes()).is_ok());
        // The signing key is no longer trusted: refused, and forgotten.
        assert!(validator.remove_key(issuer.kid()));
        assert_eq!(
            validator.validate(oid.as_bytes(), token.as_bytes()),
            Err(Rejection::Token(TokenRejection::UnknownKey))
        );
        assert!(validator.verified.len() == 0);
    }

    #[test]
    fn a_key_replaced_during_a_verification_cannot_vouch_for_its_tokens() {
        let (directory, issuer, validator, oid, token) = setup();
        // A verification looks the key up…
        let (kid, old) = validator.key_for(token.as_bytes()).unwrap();
        // …the key is replaced under the same kid meanwhile…
        let other = TokenIssuer::new(directory.tenant_id(), Duration::from_secs(3600)).unwrap();
        validator.add_key(issuer.kid(), other.decoding_key().unwrap());
        // …and the verification, with the old key, finishes: it succeeds for that one AUTH…
        assert!(validator.verify(token.as_bytes(), kid, &old).is_ok());
        // …but the old key's token is not remembered: the next AUTH checks it with the key
        // trusted now, and fails.
        assert!(validator.verified.len() == 0);
        assert_eq!(
            validator.validate(oid.as_bytes(), token.as_bytes()),
            Err(Rejection::Token(TokenRejection::Signature))
        );
    }

    #[tokio::test]
    async fn revoked_resolves_once_the_key_that_verified_the_token_goes() {
        let (_directory, issuer, validator, oid, token) = setup();
        let valid = validator
            .validate(oid.as_bytes(), token.as_bytes())
            .unwrap();
        let validator = Arc::new(validator);
        let watcher = validator.clone();
        let generation = valid.key_generation;
        let waiting = tokio::spawn(async move { watcher.revoked(generation).await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the key is still trusted");
        assert!(validator.remove_key(issuer.kid()));
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("revoked() resolves when the key is removed")
            .unwrap();
        // A key no longer trusted: at once.
        validator.revoked(generation).await;
        assert!(!validator.is_trusted(generation));
    }

    #[test]
    fn a_remembered_token_expires_and_a_failed_one_is_not_remembered() {
        let (directory, issuer, validator, oid, _) = setup();
        let sp = directory.by_object_id(&oid).unwrap();
        // A token that expired long ago (beyond the skew) is refused and never remembered.
        let expired = issuer
            .sign(&issuer.claims_for(&sp, REDIS_RESOURCE, -60))
            .unwrap();
        assert_eq!(
            validator.validate(oid.as_bytes(), expired.as_bytes()),
            Err(Rejection::Token(TokenRejection::Expired))
        );
        assert!(validator.verified.len() == 0);
        // A token remembered while valid is refused once its exp (plus skew) has passed.
        let token = issuer
            .sign(&issuer.claims_for(&sp, REDIS_RESOURCE, 3600))
            .unwrap();
        assert!(validator.validate(oid.as_bytes(), token.as_bytes()).is_ok());
        validator.verified.expire_all();
        assert_eq!(
            validator.validate(oid.as_bytes(), token.as_bytes()),
            Err(Rejection::Token(TokenRejection::Expired))
        );
    }
}
