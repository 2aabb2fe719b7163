//! Why a token was refused.

/// Why a token was refused. For logs and counters: clients only ever see `WRONGPASS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
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
    /// `exp` is farther from `iat`, `nbf` or now than the maximum lifetime allows.
    #[error("the token lives longer than the maximum lifetime")]
    Lifetime,
    /// `aud` is not one of the accepted audiences.
    #[error("the token's audience is not Azure Cache for Redis")]
    Audience,
    /// `iss` is not the tenant's issuer for the token's `ver` (or `ver` is neither 1.0 nor
    /// 2.0).
    #[error("the token's issuer is not the tenant's for its version")]
    Issuer,
    /// `tid` is missing or is not an accepted tenant.
    #[error("the token's tenant (tid) is not an accepted tenant")]
    Tenant,
    /// A claim the check needs (`exp`, `aud`, `iss`, `nbf` when present, …) is missing or has
    /// the wrong type.
    #[error("the token lacks a required claim or has one of the wrong type")]
    Claims,
    /// No `oid` claim.
    #[error("the token has no oid claim")]
    MissingOid,
    /// The username is not the token's `oid`.
    #[error("the username is not the token's oid")]
    UsernameMismatch,
    /// The application the token was issued to (`appid`/`azp`) is not an allowed one.
    #[error("the token's application (appid/azp) is not allowed")]
    Application,
}

impl Rejection {
    /// A short name for counters and logs (`expired`, `audience`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm",
            Self::UnknownKey => "unknown_key",
            Self::Signature => "signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Lifetime => "lifetime",
            Self::Audience => "audience",
            Self::Issuer => "issuer",
            Self::Tenant => "tenant",
            Self::Claims => "claims",
            Self::MissingOid => "missing_oid",
            Self::UsernameMismatch => "username",
            Self::Application => "application",
        }
    }

    /// Every reason, in declaration order (for counters).
    pub const ALL: [Rejection; 14] = [
        Self::Malformed,
        Self::Algorithm,
        Self::UnknownKey,
        Self::Signature,
        Self::Expired,
        Self::NotYetValid,
        Self::Lifetime,
        Self::Audience,
        Self::Issuer,
        Self::Tenant,
        Self::Claims,
        Self::MissingOid,
        Self::UsernameMismatch,
        Self::Application,
    ];
}
