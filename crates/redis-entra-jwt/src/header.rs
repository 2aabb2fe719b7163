//! The header: the cheap checks that cost no RSA.

use jsonwebtoken::Algorithm;

use crate::Rejection;

/// The `kid` of a token whose header is well formed and names RS256; otherwise
/// [`Rejection::Malformed`] (including an `alg` no JOSE library knows, such as `none`),
/// [`Rejection::Algorithm`] (HS256, ES256, …) or [`Rejection::UnknownKey`] (no `kid`). No
/// signature is checked.
pub fn signing_kid(token: &[u8]) -> Result<String, Rejection> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
    if header.alg != Algorithm::RS256 {
        return Err(Rejection::Algorithm);
    }
    header.kid.ok_or(Rejection::UnknownKey)
}
