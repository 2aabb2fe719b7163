//! A token, checked against the keys and issuers fetched for the configured tenants with the
//! checks shared with the emulator's gateway (`redis-entra-jwt`).

use redis_entra_jwt::{check_issuer, check_tenant, signing_kid, Rejection, Rules};

use crate::keys::KeyStore;

/// The longest password taken for a token (Entra's are 1–3 KiB); a longer JWT-shaped password
/// is refused unparsed.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a JWT-shaped password was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A check of the token failed.
    Token(Rejection),
    /// Longer than [`MAX_TOKEN_BYTES`].
    Oversized,
    /// The token is valid but no enabled ACL user is named by its `oid`.
    NoUser,
    /// Too many authentications are waiting for keys, or the client cannot wait.
    Busy,
}

impl Refusal {
    /// A short name for counters and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Token(r) => r.name(),
            Self::Oversized => "oversized",
            Self::NoUser => "no_user",
            Self::Busy => "busy",
        }
    }
}

/// A token that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Valid {
    /// The `oid` claim, which names the ACL user.
    pub oid: String,
    /// `exp`, in seconds since the Unix epoch.
    pub exp: u64,
}

/// Whether `password` is meant as a token: a JWS compact serialisation (`eyJ…` then two dots).
/// Anything else is someone's password and goes to the server's own check.
pub fn looks_like_jwt(password: &[u8]) -> bool {
    password.starts_with(b"eyJ") && password.iter().filter(|&&b| b == b'.').count() == 2
}

/// Checks `AUTH <username> <token>`: RS256 with a key of a configured tenant, the claims as
/// `rules` and that tenant's issuers say, the application among `app_ids` (when not empty),
/// and the username equal to `oid`.
pub fn check(
    store: &KeyStore,
    rules: &Rules,
    app_ids: &[String],
    username: &[u8],
    token: &[u8],
) -> Result<Valid, Rejection> {
    let kid = signing_kid(token)?;
    let candidates = store.candidates(&kid);
    let mut refusal = Rejection::UnknownKey;
    for candidate in candidates {
        let claims = match rules.verify(token, &candidate.key) {
            Ok(claims) => claims,
            Err(r) => {
                refusal = r;
                continue;
            }
        };
        // Entra signs every tenant's tokens with the same keys: the token must be of the
        // tenant whose JWKS vouched for the key.
        if let Err(r) = check_tenant(&claims, &candidate.tenant) {
            refusal = r;
            continue;
        }
        check_issuer(&claims, &candidate.v1_issuers, &candidate.v2_issuers)?;
        if !app_ids.is_empty()
            && !claims
                .app_id()
                .is_some_and(|app| app_ids.iter().any(|a| a.eq_ignore_ascii_case(app)))
        {
            return Err(Rejection::Application);
        }
        let oid = claims.oid.clone().ok_or(Rejection::MissingOid)?;
        if !claims.oid_matches(username) {
            return Err(Rejection::UsernameMismatch);
        }
        return Ok(Valid {
            oid,
            exp: claims.exp_secs(),
        });
    }
    Err(refusal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_jws_shaped_passwords_are_tokens() {
        assert!(looks_like_jwt(b"eyJhbGciOiJub25lIn0.eyJ9.")); // alg none: still ours to refuse
        assert!(looks_like_jwt(b"eyJa.b.c"));
        assert!(!looks_like_jwt(b"hunter2"));
        assert!(!looks_like_jwt(b"eyJa.b"));
        assert!(!looks_like_jwt(b"eyJa.b.c.d.e"));
        assert!(!looks_like_jwt(b""));
    }

    #[test]
    fn no_keys_means_unknown_key_and_garbage_is_malformed() {
        let store = KeyStore::default();
        let rules = Rules::default();
        assert_eq!(
            check(&store, &rules, &[], b"u", b"eyJ.x.y"),
            Err(Rejection::Malformed)
        );
        // {"alg":"RS256","kid":"k"}
        let header = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ";
        let token = format!("{header}.e30.c2ln");
        assert_eq!(
            check(&store, &rules, &[], b"u", token.as_bytes()),
            Err(Rejection::UnknownKey)
        );
        // {"alg":"HS256","kid":"k"}
        let token = "eyJhbGciOiJIUzI1NiIsImtpZCI6ImsifQ.e30.c2ln";
        assert_eq!(
            check(&store, &rules, &[], b"u", token.as_bytes()),
            Err(Rejection::Algorithm)
        );
    }
}
