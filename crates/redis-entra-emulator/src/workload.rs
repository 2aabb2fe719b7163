//! The emulator's Kubernetes side of AKS workload identity: a cluster OIDC issuer that signs
//! projected service-account tokens (with its own RSA key, not the Entra token key), and the
//! kubelet's job of keeping the token file fresh.
//!
//! A service-account token's claims are the kubelet's: `iss` the issuer URL, `sub`
//! `system:serviceaccount:<namespace>:<name>`, `aud` `["api://AzureADTokenExchange"]`, `iat`,
//! `nbf`, `exp`, and the `kubernetes.io` claim. [`spawn_rotation`] rewrites the file atomically
//! at 80 % of the token's lifetime, as the kubelet does.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{jwk::Jwk, Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::directory::TOKEN_EXCHANGE_AUDIENCE;
use crate::signing::{base64_url_nopad, now_secs};
use crate::Error;

/// The namespace of the emulator's workload.
pub const NAMESPACE: &str = "default";
/// The service account of the emulator's workload.
pub const SERVICE_ACCOUNT: &str = "redis-entra-workload";

/// The `sub` of a service account's tokens.
pub fn service_account_subject(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// A cluster's OIDC issuer: signs service-account tokens and publishes its key.
pub struct ServiceAccountIssuer {
    issuer: String,
    kid: String,
    encoding: EncodingKey,
    jwk: Jwk,
}

impl std::fmt::Debug for ServiceAccountIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountIssuer")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountIssuer {
    /// An issuer at `issuer` (its URL) with a fresh 2048-bit RSA key.
    pub fn new(issuer: &str) -> Result<Self, Error> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
            .map_err(|e| Error::Pki(format!("RSA key generation: {e}")))?;
        let encoding = EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes())
            .map_err(|e| Error::Pki(format!("RSA signing key: {e}")))?;
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256)
            .map_err(|e| Error::Pki(format!("JWK: {e}")))?;
        let kid = base64_url_nopad(&Uuid::new_v4().as_bytes()[..]);
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        Ok(Self {
            issuer: issuer.to_string(),
            kid,
            encoding,
            jwk,
        })
    }

    /// The issuer URL (`iss`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The public signing key, as the JWKS publishes it.
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// A service-account token for `subject` and `audience`, living `lifetime_secs` from now
    /// (negative: expired that long ago).
    pub fn mint(&self, subject: &str, audience: &str, lifetime_secs: i64) -> Result<String, Error> {
        let now = now_secs();
        let exp = i64::try_from(now)
            .unwrap_or(i64::MAX)
            .saturating_add(lifetime_secs)
            .max(0);
        let (namespace, name) = subject
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
            .unwrap_or(("", ""));
        let claims = json!({
            "aud": [audience],
            "iss": self.issuer,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": exp,
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": name, "uid": Uuid::new_v4().to_string()},
            },
        });
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| Error::Pki(format!("signing a service-account token: {e}")))
    }

    /// The standard token of the emulator's workload service account, living `lifetime`.
    pub fn workload_token(&self, lifetime: Duration) -> Result<String, Error> {
        self.mint(
            &service_account_subject(NAMESPACE, SERVICE_ACCOUNT),
            TOKEN_EXCHANGE_AUDIENCE,
            i64::try_from(lifetime.as_secs().max(1)).unwrap_or(i64::MAX),
        )
    }
}

/// Writes a fresh workload token to `path` atomically.
pub fn write_token(
    issuer: &ServiceAccountIssuer,
    path: &Path,
    lifetime: Duration,
) -> Result<(), Error> {
    let token = issuer.workload_token(lifetime)?;
    crate::env_file::write_atomic(path, &token)
}

/// Keeps `path` fresh: rewrites it at 80 % of `lifetime`, until `stop` turns true. Failures
/// are logged (without the token) and retried a second later.
pub fn spawn_rotation(
    issuer: Arc<ServiceAccountIssuer>,
    path: PathBuf,
    lifetime: Duration,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let period = lifetime.mul_f64(0.8).max(Duration::from_millis(500));
    tokio::spawn(async move {
        let mut wait = period;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            wait = match write_token(&issuer, &path, lifetime) {
                Ok(()) => {
                    tracing::debug!(file = %path.display(), "rotated the federated token file");
                    period
                }
                Err(e) => {
                    tracing::warn!(error = %e, file = %path.display(), "could not rotate the federated token file");
                    Duration::from_secs(1)
                }
            };
        }
    })
}
