//! The signature and the time window: the one costly step (an RSA verification), then
//! `exp`/`nbf` with the skew, `aud`, and the maximum lifetime.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::{Claims, Rejection};

/// The clock skew allowed by default on `exp` and `nbf`.
pub const DEFAULT_SKEW: Duration = Duration::from_secs(2);

/// The longest token lifetime accepted by default: 24 hours, the lifetime Entra gives
/// managed-identity tokens (its other tokens live 60–90 minutes). A token whose `exp` is
/// farther than this (plus the skew) from its `iat`, its `nbf` or now is refused.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Seconds since the Unix epoch, with a fraction.
pub fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The audiences, skew and maximum lifetime a token is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// The accepted `aud` values.
    pub audiences: Vec<String>,
    /// The clock skew allowed on `exp` and `nbf` (whole seconds count).
    pub skew: Duration,
    /// The longest lifetime accepted (whole seconds count).
    pub max_lifetime: Duration,
}

impl Default for Rules {
    /// Redis' audiences ([`crate::redis_audiences`]), [`DEFAULT_SKEW`],
    /// [`DEFAULT_MAX_LIFETIME`].
    fn default() -> Self {
        Self {
            audiences: crate::redis_audiences(),
            skew: DEFAULT_SKEW,
            max_lifetime: DEFAULT_MAX_LIFETIME,
        }
    }
}

impl Rules {
    /// Verifies the token's RS256 signature with `key` and its claims: `exp`/`nbf` give or take
    /// the skew, `aud` one of the audiences (a string), `iss` present (a string), and the
    /// maximum lifetime. The issuer, tenant and username are the caller's to check
    /// ([`crate::check_issuer`], [`crate::check_tenant`], [`Claims::oid_matches`]).
    pub fn verify(&self, token: &[u8], key: &DecodingKey) -> Result<Claims, Rejection> {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.algorithms = vec![Algorithm::RS256];
        validation.leeway = self.skew.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        validation.set_audience(&self.audiences);
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|e| match e.kind() {
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
            })?
            .claims;
        self.check_lifetime(&claims, now_f64())?;
        Ok(claims)
    }

    /// `exp` no farther than the maximum lifetime (plus the skew) from `iat`, `nbf` and `now`.
    pub fn check_lifetime(&self, claims: &Claims, now: f64) -> Result<(), Rejection> {
        let limit = self.max_lifetime.as_secs() as f64 + self.skew.as_secs() as f64;
        for start in [claims.iat, claims.nbf, Some(now)].into_iter().flatten() {
            let lifetime = claims.exp - start;
            if !lifetime.is_finite() || lifetime > limit {
                return Err(Rejection::Lifetime);
            }
        }
        Ok(())
    }

    /// Whether a token verified earlier is still inside its window at `now` (its `exp` and
    /// `nbf`, give or take the skew): for caches of verified tokens.
    pub fn check_window(&self, exp: f64, nbf: Option<f64>, now: f64) -> Result<(), Rejection> {
        let skew = self.skew.as_secs() as f64;
        if exp < now - skew {
            return Err(Rejection::Expired);
        }
        if nbf.is_some_and(|nbf| nbf > now + skew) {
            return Err(Rejection::NotYetValid);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: f64, iat: Option<f64>, nbf: Option<f64>) -> Claims {
        Claims {
            oid: Some("o".into()),
            exp,
            nbf,
            iat,
            iss: String::new(),
            aud: String::new(),
            ver: None,
            tid: None,
            appid: None,
            azp: None,
        }
    }

    #[test]
    fn the_lifetime_is_bounded_from_iat_nbf_and_now() {
        let rules = Rules {
            max_lifetime: Duration::from_secs(100),
            skew: Duration::from_secs(2),
            ..Rules::default()
        };
        let now = 1000.0;
        assert!(rules
            .check_lifetime(&claims(1100.0, Some(1000.0), None), now)
            .is_ok());
        assert!(rules
            .check_lifetime(&claims(1102.0, Some(1000.0), None), now)
            .is_ok());
        for bad in [
            claims(1103.0, None, None),
            claims(1050.0, Some(900.0), None),
            claims(1050.0, None, Some(900.0)),
            claims(f64::INFINITY, None, None),
            claims(f64::NAN, None, None),
        ] {
            assert_eq!(rules.check_lifetime(&bad, now), Err(Rejection::Lifetime));
        }
    }

    #[test]
    fn the_window_allows_the_skew() {
        let rules = Rules::default();
        assert!(rules.check_window(999.0, None, 1000.0).is_ok());
        assert_eq!(
            rules.check_window(997.0, None, 1000.0),
            Err(Rejection::Expired)
        );
        assert_eq!(
            rules.check_window(2000.0, Some(1003.0), 1000.0),
            Err(Rejection::NotYetValid)
        );
    }
}
