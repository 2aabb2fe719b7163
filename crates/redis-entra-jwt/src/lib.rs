//! The checks an Entra access token must pass to be a Redis password, as Azure Cache for Redis
//! applies them to `AUTH <oid> <token>`: pure and synchronous, with no server, no I/O and no
//! async runtime, so the emulator's gateway and the server module (`redis-entra-module`) run
//! the very same code.
//!
//! A token is accepted when:
//!
//! - it is a JWT whose header names `alg: RS256` and a `kid` ([`signing_kid`]);
//! - its signature verifies with the key trusted under that `kid`, its `aud` is one of the
//!   accepted audiences (a single string: an array is refused), it is within `nbf`/`exp` give
//!   or take the clock skew, and it lives no longer than the maximum lifetime
//!   ([`Rules::verify`]);
//! - its `iss` is the issuer of its tenant for its `ver` ([`check_issuer`], [`v1_issuer`],
//!   [`v2_issuer`]) and its `tid` is an accepted tenant ([`check_tenant`]);
//! - its `oid` is the username ([`Claims::oid_matches`]).
//!
//! What the caller decides itself: which keys it trusts and how it gets them, which tenants and
//! issuers it accepts, and who the `oid` becomes (an access policy in the emulator, an ACL user
//! in the module). Every refusal is a [`Rejection`], whose text is for logs; a client only ever
//! sees Redis' `WRONGPASS`.
//!
//! Nothing here holds or prints a token: errors and `Debug` output name reasons, never bytes.

mod claims;
mod header;
mod issuers;
mod rejection;
mod rules;

pub use claims::Claims;
pub use header::signing_kid;
pub use issuers::{check_issuer, check_tenant, v1_issuer, v2_issuer};
pub use jsonwebtoken::DecodingKey;
pub use rejection::Rejection;
pub use rules::{now_f64, Rules, DEFAULT_MAX_LIFETIME, DEFAULT_SKEW};

/// Redis' resource (the `aud` of tokens requested for `https://redis.azure.com/.default`).
pub const REDIS_RESOURCE: &str = "https://redis.azure.com";

/// The application id of Azure Cache for Redis (the `aud` of v2 tokens for the app-id scope).
pub const REDIS_APP_ID: &str = "acca5fbb-b7e4-4009-81f1-37e38fd66d78";

/// The audiences Entra writes in tokens for Redis: the resource, with and without its trailing
/// slash, and the app id.
pub fn redis_audiences() -> Vec<String> {
    vec![
        REDIS_RESOURCE.to_string(),
        format!("{REDIS_RESOURCE}/"),
        REDIS_APP_ID.to_string(),
    ]
}
