//! The fake Entra ID's token signing: an RSA key published in the JWKS, and the access tokens it
//! signs, shaped as Entra's v1 access tokens for Azure Cache for Redis.

use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{jwk::Jwk, Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::directory::{Principal, PrincipalKind};
use crate::Error;

/// An access token the emulator issued.
pub struct IssuedToken {
    /// The signed JWT.
    pub token: String,
    /// Seconds since the epoch at which it expires.
    pub expires_on: u64,
    /// Its lifetime in seconds.
    pub expires_in: u64,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"<redacted>")
            .field("expires_on", &self.expires_on)
            .finish()
    }
}

/// A token signing key: an RSA private key and its key id (`kid`). `Debug` never shows the key.
#[derive(Clone)]
pub struct SigningKey {
    /// The RSA private key, PKCS#8 PEM (a secret).
    pub pem: String,
    /// The key id published in the JWKS and in tokens' `kid` and `x5t`.
    pub kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("pem", &"<redacted>")
            .finish()
    }
}

impl SigningKey {
    /// A fresh 2048-bit RSA key and a random key id.
    pub fn generate() -> Result<Self, Error> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
            .map_err(|e| Error::Pki(format!("RSA key generation: {e}")))?;
        Ok(Self {
            pem: key.serialize_pem(),
            kid: base64_url_nopad(&Uuid::new_v4().as_bytes()[..]),
        })
    }
}

/// Signs access tokens for one tenant, with one RSA key.
pub struct TokenIssuer {
    tenant_id: String,
    kid: String,
    encoding: EncodingKey,
    jwk: Jwk,
    lifetime: RwLock<Duration>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("tenant_id", &self.tenant_id)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenIssuer {
    /// A new issuer for `tenant_id` with a freshly generated 2048-bit RSA key.
    pub fn new(tenant_id: &str, lifetime: Duration) -> Result<Self, Error> {
        Self::with_key(tenant_id, &SigningKey::generate()?, lifetime)
    }

    /// An issuer for `tenant_id` signing with `key` (one [`SigningKey::generate`] made, perhaps
    /// in an earlier run: its tokens and JWKS are then the same as that run's).
    pub fn with_key(tenant_id: &str, key: &SigningKey, lifetime: Duration) -> Result<Self, Error> {
        let encoding = EncodingKey::from_rsa_pem(key.pem.as_bytes())
            .map_err(|e| Error::Pki(format!("RSA signing key: {e}")))?;
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256)
            .map_err(|e| Error::Pki(format!("JWK: {e}")))?;
        let kid = key.kid.clone();
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        jwk.common.x509_sha1_fingerprint = Some(kid.clone());
        Ok(Self {
            tenant_id: tenant_id.to_string(),
            kid,
            encoding,
            jwk,
            lifetime: RwLock::new(lifetime),
        })
    }

    /// The key id (`kid`) of the signing key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The tenant whose tokens this issuer signs.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// The lifetime of the tokens it issues.
    pub fn lifetime(&self) -> Duration {
        *self
            .lifetime
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes the lifetime of tokens issued from now on.
    pub fn set_lifetime(&self, lifetime: Duration) {
        *self
            .lifetime
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = lifetime;
    }

    /// The `iss` of the v1 access tokens it issues: `https://sts.windows.net/{tid}/`.
    pub fn v1_issuer(&self) -> String {
        format!("https://sts.windows.net/{}/", self.tenant_id)
    }

    /// The JWK of the signing key (as published in the JWKS).
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// The JWKS document (`{"keys":[…]}`), with `issuer` set to `v2_issuer`.
    pub fn jwks(&self, v2_issuer: &str) -> Value {
        let mut key = serde_json::to_value(&self.jwk).unwrap_or_else(|_| json!({}));
        if let Some(obj) = key.as_object_mut() {
            obj.insert("issuer".into(), Value::String(v2_issuer.to_string()));
        }
        json!({ "keys": [key] })
    }

    /// The key a validator uses to check this issuer's signatures.
    pub fn decoding_key(&self) -> Result<DecodingKey, Error> {
        DecodingKey::from_jwk(&self.jwk).map_err(|e| Error::Pki(format!("decoding key: {e}")))
    }

    /// Issues an access token for `principal`, for the resource `audience`
    /// (`https://redis.azure.com` or the app id form), living the configured lifetime.
    pub fn issue(&self, principal: &Principal, audience: &str) -> Result<IssuedToken, Error> {
        let lifetime = self.lifetime().as_secs().max(1);
        let claims = self.claims_for(principal, audience, lifetime as i64);
        let expires_on = claims["exp"]
            .as_u64()
            .unwrap_or_else(|| now_secs() + lifetime);
        Ok(IssuedToken {
            token: self.sign(&claims)?,
            expires_on,
            expires_in: lifetime,
        })
    }

    /// The claims of a v1 access token for `principal` and `audience`, as [`issue`](Self::issue)
    /// signs them, living `lifetime_secs` from now (negative: expired that long ago). To mint
    /// tokens with chosen claims: change them, then [`sign`](Self::sign).
    pub fn claims_for(&self, principal: &Principal, audience: &str, lifetime_secs: i64) -> Value {
        let now = now_secs();
        let exp = i64::try_from(now)
            .unwrap_or(i64::MAX)
            .saturating_add(lifetime_secs)
            .max(0);
        let mut claims = json!({
            "aud": audience,
            "iss": self.v1_issuer(),
            "iat": now,
            "nbf": now,
            "exp": exp,
            "aio": base64_url_nopad(Uuid::new_v4().as_bytes()),
            "appid": principal.client_id,
            "appidacr": if principal.secret.is_some() { "1" } else { "2" },
            "idp": self.v1_issuer(),
            "idtyp": "app",
            "oid": principal.object_id,
            "rh": "0.AAAA.",
            "sub": principal.object_id,
            "tid": self.tenant_id,
            "uti": base64_url_nopad(Uuid::new_v4().as_bytes()),
            "ver": "1.0",
        });
        if matches!(
            principal.kind,
            PrincipalKind::SystemAssignedIdentity | PrincipalKind::UserAssignedIdentity
        ) {
            if let (Some(obj), Some(rid)) = (claims.as_object_mut(), &principal.resource_id) {
                obj.insert("xms_mirid".into(), Value::String(rid.clone()));
            }
        }
        claims
    }

    /// Signs arbitrary claims with this issuer's key (RS256, with `kid` and `x5t`): for tests of
    /// clients' and the gateway's edge cases.
    pub fn sign(&self, claims: &Value) -> Result<String, Error> {
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("JWT".into());
        header.kid = Some(self.kid.clone());
        header.x5t = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| Error::Pki(format!("signing a token: {e}")))
    }
}

/// base64url without padding.
pub fn base64_url_nopad(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
