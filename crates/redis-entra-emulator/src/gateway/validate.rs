//! Access-token validation, as Azure Cache for Redis does it for `AUTH <oid> <token>`.
//!
//! A token is accepted when it is a JWT signed with RS256 by a trusted key (looked up by the
//! header's `kid`), its `aud` is the Redis resource (any of the three spellings Entra uses), its
//! `iss` is the tenant's v1 or v2 issuer (a string: an array holding it is refused, though
//! `jsonwebtoken` alone would take it), its `tid` is the tenant's id, it is within `nbf`/`exp` give or take the clock skew,
//! its `oid` equals the username (compared case-insensitively, as GUIDs) or the username is the
//! `objectIdAlias` of that object id's assignment (exactly; whether Azure accepts aliases is
//! unconfirmed, the emulator does), and that object id has an access policy assigned in the
//! [`Directory`]. Anything else is a [`Rejection`], whose reason
//! is for debug logs only: the client always sees Redis' `WRONGPASS` text.
//!
//! A token whose signature and claims verified is remembered (up to [`VERIFIED_CAPACITY`]
//! tokens, until they expire), so the same token presented again — a fleet of connections
//! re-authenticating with the token their client just refreshed — costs a lookup instead of an
//! RSA verification; its time window, key, username and access policy are still checked every
//! time.
//!
//! Neither this module's types nor its errors ever hold or print the token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::directory::{AccessPolicy, Directory, REDIS_APP_ID, REDIS_RESOURCE};
use crate::signing::TokenIssuer;
use crate::Error;

/// The clock skew allowed by default on `exp` and `nbf`.
pub const DEFAULT_SKEW: Duration = Duration::from_secs(2);

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
}

/// Why a token was refused. For logs: clients only ever see `WRONGPASS`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// `AUTH <key>` or `AUTH default <key>` while access-key authentication is disabled.
    #[error("access-key authentication is disabled")]
    AccessKey,
    /// `AUTH <key>` or `AUTH default <key>` with neither the primary nor the secondary key.
    #[error("the password is not one of the cache's access keys")]
    WrongAccessKey,
    /// Not three base64url parts with JSON inside.
    #[error("the password is not a well-formed JWT")]
    Malformed,
    /// The header's `alg` is not RS256 (`none`, HS256, ES256, …).
    #[error("the token's algorithm is not RS256")]
    Algorithm,
    /// The header has no `kid`, or no trusted key has it.
    #[error("the token's signing key (kid) is not trusted")]
    UnknownKey,
    /// The signature does not verify with the key its `kid` names.
    #[error("the token's signature does not verify")]
    Signature,
    /// `exp` is in the past, beyond the clock skew.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future, beyond the clock skew.
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    /// `aud` is not Azure Cache for Redis.
    #[error("the token's audience is not Azure Cache for Redis")]
    Audience,
    /// `iss` is not this tenant's v1 or v2 issuer.
    #[error("the token's issuer is not the tenant's")]
    Issuer,
    /// `tid` is missing or is not this tenant's id.
    #[error("the token's tenant (tid) is not the cache's tenant")]
    Tenant,
    /// A claim the check needs (`exp`, `aud`, `iss`, `oid`, `tid`, `nbf` when present) is
    /// missing or has the wrong type.
    #[error("the token lacks a required claim or has one of the wrong type")]
    Claims,
    /// No `oid` claim.
    #[error("the token has no oid claim")]
    MissingOid,
    /// The username is neither the token's `oid` nor the alias of its assignment.
    #[error("the username is neither the token's oid nor its assignment's alias")]
    UsernameMismatch,
    /// The identity has no access policy assignment on the cache.
    #[error("the identity has no access policy assigned")]
    NoAccessPolicy,
}

/// The claims the gateway reads itself, after `jsonwebtoken` checked `exp`, `nbf`, `aud` and
/// `iss`. Typed strictly: a claim of another type fails the whole token.
#[derive(Deserialize, Clone)]
struct Claims {
    oid: Option<String>,
    exp: f64,
    nbf: Option<f64>,
    /// Only a string: `jsonwebtoken` accepts an array that contains an accepted issuer.
    #[serde(rename = "iss")]
    _issuer: String,
    tid: Option<String>,
}

/// How many verified tokens are remembered at most.
pub const VERIFIED_CAPACITY: usize = 4096;

/// A token whose signature, algorithm, audience, issuer and tenant verified, with the key that
/// signed it (the entry counts only while that key is still trusted).
struct Verified {
    kid: String,
    claims: Claims,
}

/// Validates Entra access tokens presented to the gateway.
///
/// Signing keys are held by `kid` and can be added and removed while the gateway runs (key
/// rotation).
pub struct TokenValidator {
    directory: Arc<Directory>,
    keys: RwLock<HashMap<String, DecodingKey>>,
    verified: Mutex<HashMap<Box<[u8]>, Verified>>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    skew: Duration,
}

impl std::fmt::Debug for TokenValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<String> = self
            .keys
            .read()
            .map(|k| k.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("TokenValidator")
            .field("kids", &kids)
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .field("skew", &self.skew)
            .finish_non_exhaustive()
    }
}

impl TokenValidator {
    /// A validator for the directory's tenant: it accepts the v1 issuer
    /// `https://sts.windows.net/{tid}/`, the three Redis audiences and a skew of
    /// [`DEFAULT_SKEW`]. It trusts no key until [`trust`](Self::trust) or
    /// [`add_key`](Self::add_key) is called.
    pub fn new(directory: Arc<Directory>) -> Self {
        let issuers = vec![format!(
            "https://sts.windows.net/{}/",
            directory.tenant_id()
        )];
        Self {
            directory,
            keys: RwLock::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
            issuers,
            audiences: vec![
                REDIS_RESOURCE.to_string(),
                format!("{REDIS_RESOURCE}/"),
                REDIS_APP_ID.to_string(),
            ],
            skew: DEFAULT_SKEW,
        }
    }

    /// Also accepts the v2 issuer `{authority}/{tid}/v2.0` of the fake Entra ID at `authority`
    /// (for example `https://localhost:8443`).
    pub fn with_authority(mut self, authority: &str) -> Self {
        let issuer = format!(
            "{}/{}/v2.0",
            authority.trim_end_matches('/'),
            self.directory.tenant_id()
        );
        if !self.issuers.contains(&issuer) {
            self.issuers.push(issuer);
        }
        self
    }

    /// Sets the clock skew allowed on `exp` and `nbf` (whole seconds; a connection is closed at
    /// `exp` plus this skew).
    pub fn with_skew(mut self, skew: Duration) -> Self {
        self.skew = skew;
        self
    }

    /// Trusts the signing key of `issuer` (under its `kid`).
    pub fn trust(&self, issuer: &TokenIssuer) -> Result<(), Error> {
        self.add_key(issuer.kid(), issuer.decoding_key()?);
        Ok(())
    }

    /// Trusts `key` for tokens whose header carries `kid` (replacing any key with that `kid`).
    pub fn add_key(&self, kid: impl Into<String>, key: DecodingKey) {
        let kid = kid.into();
        if let Ok(mut keys) = self.keys.write() {
            keys.insert(kid.clone(), key);
        }
        // A replaced key must not vouch for what the old one signed.
        self.forget_signed_by(&kid);
    }

    fn forget_signed_by(&self, kid: &str) {
        if let Ok(mut verified) = self.verified.lock() {
            verified.retain(|_, v| v.kid != kid);
        }
    }

    /// Stops trusting the key `kid`; returns whether it was trusted.
    pub fn remove_key(&self, kid: &str) -> bool {
        let removed = self
            .keys
            .write()
            .map(|mut keys| keys.remove(kid).is_some())
            .unwrap_or(false);
        self.forget_signed_by(kid);
        removed
    }

    /// The clock skew allowed on `exp` and `nbf`.
    pub fn skew(&self) -> Duration {
        self.skew
    }

    /// The issuers (`iss`) accepted.
    pub fn issuers(&self) -> &[String] {
        &self.issuers
    }

    /// The audiences (`aud`) accepted.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// Checks `AUTH <username> <token>` (the username being the object id or the alias).
    pub fn validate(&self, username: &[u8], token: &[u8]) -> Result<ValidToken, Rejection> {
        let claims = match self.remembered(token)? {
            Some(claims) => claims,
            None => self.verify(token)?,
        };
        self.authorise(username, claims)
    }

    /// The claims of a token verified before, if it still counts: its key is still trusted and
    /// it is inside its `nbf`/`exp` window, give or take the skew (as `jsonwebtoken` checks).
    fn remembered(&self, token: &[u8]) -> Result<Option<Claims>, Rejection> {
        let Ok(verified) = self.verified.lock() else {
            return Ok(None);
        };
        let Some(entry) = verified.get(token) else {
            return Ok(None);
        };
        let trusted = self
            .keys
            .read()
            .map(|keys| keys.contains_key(&entry.kid))
            .unwrap_or(false);
        if !trusted {
            return Err(Rejection::UnknownKey);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0) as f64;
        let skew = self.skew.as_secs() as f64;
        if entry.claims.exp < now - skew {
            return Err(Rejection::Expired);
        }
        if entry.claims.nbf.is_some_and(|nbf| nbf > now + skew) {
            return Err(Rejection::NotYetValid);
        }
        Ok(Some(entry.claims.clone()))
    }

    /// Verifies a token's signature and claims (everything but the directory), and remembers
    /// it when it passes.
    fn verify(&self, token: &[u8]) -> Result<Claims, Rejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
        if header.alg != Algorithm::RS256 {
            return Err(Rejection::Algorithm);
        }
        let kid = header.kid.ok_or(Rejection::UnknownKey)?;
        let key = self
            .keys
            .read()
            .ok()
            .and_then(|keys| keys.get(&kid).cloned())
            .ok_or(Rejection::UnknownKey)?;

        let mut validation = Validation::new(Algorithm::RS256);
        validation.algorithms = vec![Algorithm::RS256];
        validation.leeway = self.skew.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        validation.set_audience(&self.audiences);
        validation.set_issuer(&self.issuers);

        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::InvalidSignature => Rejection::Signature,
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => Rejection::Algorithm,
            ErrorKind::ExpiredSignature => Rejection::Expired,
            ErrorKind::ImmatureSignature => Rejection::NotYetValid,
            ErrorKind::InvalidAudience => Rejection::Audience,
            ErrorKind::InvalidIssuer => Rejection::Issuer,
            ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
                Rejection::Claims
            }
            ErrorKind::Json(_) => Rejection::Claims,
            _ => Rejection::Malformed,
        })?;
        let claims = data.claims;
        let tenant = self.directory.tenant_id().as_bytes();
        if !claims
            .tid
            .as_ref()
            .is_some_and(|tid| tid.as_bytes().eq_ignore_ascii_case(tenant))
        {
            return Err(Rejection::Tenant);
        }
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= VERIFIED_CAPACITY {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0) as f64;
                let skew = self.skew.as_secs() as f64;
                verified.retain(|_, v| v.claims.exp >= now - skew);
                if verified.len() >= VERIFIED_CAPACITY {
                    verified.clear();
                }
            }
            verified.insert(
                token.into(),
                Verified {
                    kid,
                    claims: claims.clone(),
                },
            );
        }
        Ok(claims)
    }

    /// Who the verified token lets in: its `oid` (or the assignment's alias) must be the
    /// username, and that object id must have an access policy now.
    fn authorise(&self, username: &[u8], claims: Claims) -> Result<ValidToken, Rejection> {
        let oid = claims.oid.ok_or(Rejection::MissingOid)?;
        let assignment = self.directory.assignment_of(&oid);
        let by_oid = oid.as_bytes().eq_ignore_ascii_case(username);
        let by_alias = assignment
            .as_ref()
            .and_then(|a| a.alias.as_deref())
            .is_some_and(|alias| alias.as_bytes() == username);
        if !(by_oid || by_alias) {
            return Err(Rejection::UsernameMismatch);
        }
        let policy = assignment
            .map(|a| a.policy)
            .ok_or(Rejection::NoAccessPolicy)?;
        Ok(ValidToken {
            oid,
            exp: if claims.exp.is_finite() && claims.exp > 0.0 {
                claims.exp as u64
            } else {
                0
            },
            policy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(validator.verified.lock().unwrap().len(), 1);
        let again = validator
            .validate(oid.as_bytes(), token.as_bytes())
            .unwrap();
        assert_eq!(first, again);
        // Another username with the same token: refused, even though the token is remembered.
        assert_eq!(
            validator.validate(b"someone-else", token.as_bytes()),
            Err(Rejection::UsernameMismatch)
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
            Err(Rejection::UnknownKey)
        );
        assert!(validator.verified.lock().unwrap().is_empty());
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
            Err(Rejection::Expired)
        );
        assert!(validator.verified.lock().unwrap().is_empty());
        // A token remembered while valid is refused once its exp (plus skew) has passed.
        let token = issuer
            .sign(&issuer.claims_for(&sp, REDIS_RESOURCE, 3600))
            .unwrap();
        assert!(validator.validate(oid.as_bytes(), token.as_bytes()).is_ok());
        validator
            .verified
            .lock()
            .unwrap()
            .values_mut()
            .for_each(|v| v.claims.exp = 1.0);
        assert_eq!(
            validator.validate(oid.as_bytes(), token.as_bytes()),
            Err(Rejection::Expired)
        );
    }
}
