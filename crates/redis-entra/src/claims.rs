//! Reading the claims of an Entra access token: `oid` (the Redis username), `exp`, and the
//! claims people check when something is wrong (`tid`, `aud`, `iss`, `appid`…).
//!
//! The payload is decoded as base64url JSON with serde. The signature is not checked: the
//! client only reads its own token, and the server is the one that validates it.

use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

/// Why a token's claims could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimsError {
    /// The token is not three dot-separated parts.
    #[error("the access token is not a JWT: expected 3 dot-separated parts, found {parts}; an Entra access token looks like `eyJ….eyJ….sig` (an access key or a secret id is not a token)")]
    NotAJwt {
        /// How many parts there were.
        parts: usize,
    },
    /// The payload is not base64url.
    #[error("the access token's payload is not base64url: {0}")]
    Base64(String),
    /// The payload is not a JSON object.
    #[error("the access token's payload is not a JSON object: {0}")]
    Json(String),
    /// A claim has the wrong type.
    #[error("the access token's `{claim}` claim should be {expected}")]
    ClaimType {
        /// The claim's name.
        claim: &'static str,
        /// What it should have been.
        expected: &'static str,
    },
    /// The token has no `oid` claim, so there is no Redis username.
    #[error("the access token has no `oid` claim, so there is no Redis username; tokens for users, service principals and managed identities all carry one: check that the credential asks for the Redis scope (https://redis.azure.com/.default), or set the username explicitly")]
    MissingOid,
}

/// The claims of an access token that matter to Redis and to troubleshooting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TokenClaims {
    /// `oid`: the object id of the identity, which is the Redis username.
    pub oid: Option<String>,
    /// `tid`: the tenant.
    pub tid: Option<String>,
    /// `aud`: who the token is for (`https://redis.azure.com` or its app id).
    pub aud: Vec<String>,
    /// `iss`: who issued it.
    pub iss: Option<String>,
    /// `exp`, in seconds since the Unix epoch.
    pub exp: Option<u64>,
    /// `nbf`, in seconds since the Unix epoch.
    pub nbf: Option<u64>,
    /// `iat`, in seconds since the Unix epoch.
    pub iat: Option<u64>,
    /// `appid` (v1 tokens) or `azp` (v2 tokens): the application that asked for the token.
    pub app_id: Option<String>,
    /// `upn` or `preferred_username`, for tokens of users.
    pub user_name: Option<String>,
    /// `xms_mirid`: a managed identity's resource id.
    pub managed_identity_resource_id: Option<String>,
    /// `ver`: `1.0` or `2.0`.
    pub version: Option<String>,
}

#[derive(Deserialize)]
struct Raw {
    oid: Option<Value>,
    tid: Option<Value>,
    aud: Option<Value>,
    iss: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
    iat: Option<Value>,
    appid: Option<Value>,
    azp: Option<Value>,
    upn: Option<Value>,
    preferred_username: Option<Value>,
    xms_mirid: Option<Value>,
    ver: Option<Value>,
}

fn string(v: Option<Value>, claim: &'static str) -> Result<Option<String>, ClaimsError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ClaimsError::ClaimType {
            claim,
            expected: "a string",
        }),
    }
}

fn seconds(v: Option<Value>, claim: &'static str) -> Result<Option<u64>, ClaimsError> {
    let bad = ClaimsError::ClaimType {
        claim,
        expected: "a number of seconds since 1970",
    };
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => Ok(Some(u)),
            (None, Some(f)) if f.is_finite() && f >= 0.0 => Ok(Some(f as u64)),
            _ => Err(bad),
        },
        Some(_) => Err(bad),
    }
}

impl TokenClaims {
    /// Reads the claims of a JWT without checking its signature.
    ///
    /// ```
    /// use redis_entra::TokenClaims;
    /// // header {"alg":"none"}, payload {"oid":"3f2c…","exp":2000000000}
    /// let token = "eyJhbGciOiJub25lIn0.eyJvaWQiOiIzZjJjIiwiZXhwIjoyMDAwMDAwMDAwfQ.";
    /// let claims = TokenClaims::from_jwt(token).unwrap();
    /// assert_eq!(claims.oid.as_deref(), Some("3f2c"));
    /// assert_eq!(claims.exp, Some(2_000_000_000));
    /// assert!(TokenClaims::from_jwt("not-a-token").is_err());
    /// ```
    pub fn from_jwt(token: &str) -> Result<Self, ClaimsError> {
        let parts: Vec<&str> = token.trim().split('.').collect();
        if parts.len() != 3 {
            return Err(ClaimsError::NotAJwt { parts: parts.len() });
        }
        // base64url without padding is the JWT form; tolerate padding, which some issuers add.
        let payload = parts[1].trim_end_matches('=');
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|e| ClaimsError::Base64(e.to_string()))?;
        let raw: Raw = match serde_json::from_slice::<Value>(&bytes) {
            Ok(v @ Value::Object(_)) => {
                serde_json::from_value(v).map_err(|e| ClaimsError::Json(e.to_string()))?
            }
            Ok(_) => return Err(ClaimsError::Json("expected an object".into())),
            Err(e) => return Err(ClaimsError::Json(e.to_string())),
        };
        let aud = match raw.aud {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s],
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(ClaimsError::ClaimType {
                        claim: "aud",
                        expected: "a string or an array of strings",
                    }),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(ClaimsError::ClaimType {
                    claim: "aud",
                    expected: "a string or an array of strings",
                })
            }
        };
        Ok(Self {
            oid: string(raw.oid, "oid")?,
            tid: string(raw.tid, "tid")?,
            aud,
            iss: string(raw.iss, "iss")?,
            exp: seconds(raw.exp, "exp")?,
            nbf: seconds(raw.nbf, "nbf")?,
            iat: seconds(raw.iat, "iat")?,
            app_id: match string(raw.appid, "appid")? {
                Some(a) => Some(a),
                None => string(raw.azp, "azp")?,
            },
            user_name: match string(raw.upn, "upn")? {
                Some(u) => Some(u),
                None => string(raw.preferred_username, "preferred_username")?,
            },
            managed_identity_resource_id: string(raw.xms_mirid, "xms_mirid")?,
            version: string(raw.ver, "ver")?,
        })
    }

    /// The Redis username: the `oid` claim. A token without one is an error, never a fallback.
    pub fn username(&self) -> Result<&str, ClaimsError> {
        match self.oid.as_deref() {
            Some(oid) if !oid.is_empty() => Ok(oid),
            _ => Err(ClaimsError::MissingOid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            enc.encode(br#"{"alg":"RS256"}"#),
            enc.encode(payload.as_bytes())
        )
    }

    #[test]
    fn reads_claims_with_base64url_characters() {
        // A payload whose base64 form has '-' and '_' (the Python samples' plain base64 breaks here).
        let t = jwt(
            r#"{"oid":"a~b?c>>>","exp":1700000000.5,"aud":"https://redis.azure.com","ver":"1.0"}"#,
        );
        assert!(t.contains('-') || t.contains('_'), "{t}");
        let c = TokenClaims::from_jwt(&t).unwrap();
        assert_eq!(c.username().unwrap(), "a~b?c>>>");
        assert_eq!(c.exp, Some(1_700_000_000));
        assert_eq!(c.aud, vec!["https://redis.azure.com".to_string()]);
    }

    #[test]
    fn missing_oid_is_an_error_not_a_default() {
        let c = TokenClaims::from_jwt(&jwt(r#"{"exp":1}"#)).unwrap();
        assert_eq!(c.username(), Err(ClaimsError::MissingOid));
        let c = TokenClaims::from_jwt(&jwt(r#"{"oid":""}"#)).unwrap();
        assert_eq!(c.username(), Err(ClaimsError::MissingOid));
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        assert_eq!(
            TokenClaims::from_jwt("abc"),
            Err(ClaimsError::NotAJwt { parts: 1 })
        );
        assert!(matches!(
            TokenClaims::from_jwt("a.!!!.c"),
            Err(ClaimsError::Base64(_))
        ));
        assert!(matches!(
            TokenClaims::from_jwt(&jwt("[1,2]")),
            Err(ClaimsError::Json(_))
        ));
        assert!(matches!(
            TokenClaims::from_jwt(&jwt(r#"{"oid":5}"#)),
            Err(ClaimsError::ClaimType { claim: "oid", .. })
        ));
        assert!(matches!(
            TokenClaims::from_jwt(&jwt(r#"{"exp":"soon"}"#)),
            Err(ClaimsError::ClaimType { claim: "exp", .. })
        ));
    }

    #[test]
    fn padded_payload_is_accepted() {
        let enc = base64::engine::general_purpose::URL_SAFE;
        let t = format!("e30.{}.x", enc.encode(br#"{"oid":"x1"}"#));
        assert_eq!(
            TokenClaims::from_jwt(&t).unwrap().oid.as_deref(),
            Some("x1")
        );
    }
}
