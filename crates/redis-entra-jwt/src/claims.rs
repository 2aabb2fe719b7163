//! The claims the checks read, typed strictly: a claim of another type fails the whole token.

use serde::Deserialize;

/// The claims of a verified token that the checks read. Its `Debug` shows claims only (no
/// token, no signature).
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[non_exhaustive]
pub struct Claims {
    /// The identity's object id.
    pub oid: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: f64,
    /// Not before, seconds since the Unix epoch.
    pub nbf: Option<f64>,
    /// Issued at, seconds since the Unix epoch.
    pub iat: Option<f64>,
    /// The issuer. Only a string: `jsonwebtoken` alone accepts an array holding an accepted one.
    pub iss: String,
    /// The audience. Only a string, for the same reason.
    pub aud: String,
    /// The token version, `1.0` or `2.0`.
    pub ver: Option<String>,
    /// The tenant id.
    pub tid: Option<String>,
    /// The client application's id in v1 tokens.
    #[serde(default)]
    pub appid: Option<String>,
    /// The client application's id in v2 tokens.
    #[serde(default)]
    pub azp: Option<String>,
}

impl Claims {
    /// Whether `username` is the token's `oid` (compared case-insensitively, as GUIDs).
    pub fn oid_matches(&self, username: &[u8]) -> bool {
        self.oid
            .as_ref()
            .is_some_and(|oid| oid.as_bytes().eq_ignore_ascii_case(username))
    }

    /// The id of the application the token was issued to: `appid` (v1) or `azp` (v2).
    pub fn app_id(&self) -> Option<&str> {
        self.appid.as_deref().or(self.azp.as_deref())
    }

    /// `exp` as whole seconds since the Unix epoch (0 when it is not a positive finite number).
    pub fn exp_secs(&self) -> u64 {
        if self.exp.is_finite() && self.exp > 0.0 {
            self.exp as u64
        } else {
            0
        }
    }
}
