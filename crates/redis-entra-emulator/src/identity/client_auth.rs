//! Client authentication at the token endpoint: who the client says it is, and how it proves
//! it.
//!
//! Entra accepts the client secret in the body (`client_secret_post`), in an HTTP Basic
//! `Authorization` header (`client_secret_basic`: `base64(urlencode(client_id) ":"
//! urlencode(secret))`, RFC 6749 §2.3.1), or a signed JWT (`private_key_jwt`:
//! `client_assertion_type` + `client_assertion`). Using two methods at once is refused.
//!
//! Client assertions (certificates and federated credentials) are verified by
//! [`authenticate_at`] (see [`super::assertion`]), which needs the token endpoint's authority
//! for the assertion's `aud`; [`authenticate`], which does not know it, refuses them with
//! AADSTS700027.

use axum::http::{header, HeaderMap, StatusCode};
use base64::Engine;

use super::errors::EntraError;
use super::form::FormParams;
use crate::directory::{Directory, Principal};

/// The one `client_assertion_type` Entra accepts.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How a client proved its identity. `Debug` never shows a secret or an assertion.
pub(crate) enum ClientCredential {
    /// A client secret (body or HTTP Basic).
    Secret(String),
    /// A signed JWT (`client_assertion`) of the given `client_assertion_type`.
    Assertion {
        /// `client_assertion_type`, normally
        /// `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`.
        assertion_type: Option<String>,
        /// The JWT.
        assertion: String,
    },
    /// Nothing.
    Missing,
}

impl std::fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Secret(_) => f.write_str("Secret(<redacted>)"),
            Self::Assertion { assertion_type, .. } => f
                .debug_struct("Assertion")
                .field("assertion_type", assertion_type)
                .field("assertion", &"<redacted>")
                .finish(),
            Self::Missing => f.write_str("Missing"),
        }
    }
}

/// The client a token request claims to be, and its credential.
#[derive(Debug)]
pub(crate) struct ClientAuth {
    /// `client_id` from the body or the Basic header.
    pub client_id: Option<String>,
    /// How it proves it.
    pub credential: ClientCredential,
}

impl ClientAuth {
    /// Reads the client id and credential from the `Authorization` header and the form.
    pub fn from_request(headers: &HeaderMap, form: &FormParams) -> Result<Self, EntraError> {
        let body_client_id = form.get("client_id");
        let body_secret = form.get("client_secret");
        let assertion = form.get("client_assertion");
        let assertion_type = form.get("client_assertion_type");

        if let Some((basic_id, basic_secret)) = basic_credentials(headers)? {
            if body_secret.is_some() || assertion.is_some() {
                return Err(EntraError::malformed_request(
                    "the client authenticated with more than one method (HTTP Basic and a \
                     client_secret or client_assertion in the body); use only one.",
                ));
            }
            if body_client_id.is_some_and(|id| !id.eq_ignore_ascii_case(&basic_id)) {
                return Err(EntraError::malformed_request(
                    "the client_id in the body differs from the one in the HTTP Basic \
                     Authorization header.",
                ));
            }
            return Ok(Self {
                client_id: Some(basic_id),
                credential: ClientCredential::Secret(basic_secret),
            });
        }

        let credential = match (body_secret, assertion) {
            (Some(_), Some(_)) => {
                return Err(EntraError::malformed_request(
                    "the request carries both a client_secret and a client_assertion; send \
                     only one.",
                ))
            }
            (Some(secret), None) => ClientCredential::Secret(secret.to_string()),
            (None, Some(assertion)) => ClientCredential::Assertion {
                assertion_type: assertion_type.map(str::to_string),
                assertion: assertion.to_string(),
            },
            (None, None) => ClientCredential::Missing,
        };
        Ok(Self {
            client_id: body_client_id.map(str::to_string),
            credential,
        })
    }
}

/// Checks the credential of `client_id` against the directory and returns the principal.
pub(crate) fn authenticate(
    directory: &Directory,
    client_id: &str,
    credential: &ClientCredential,
) -> Result<Principal, EntraError> {
    let Some(principal) = directory.by_client_id(client_id) else {
        return Err(EntraError::application_not_found(
            client_id,
            directory.tenant_id(),
        ));
    };
    match credential {
        ClientCredential::Secret(secret) => {
            let matches = principal
                .secret
                .as_deref()
                .is_some_and(|expected| constant_time_eq(expected.as_bytes(), secret.as_bytes()));
            if matches {
                Ok(principal)
            } else {
                Err(EntraError::invalid_client_secret(client_id))
            }
        }
        ClientCredential::Assertion {
            assertion_type,
            assertion,
        } => {
            check_assertion_shape(assertion_type.as_deref(), assertion)?;
            Err(EntraError::invalid_client_assertion(
                "This emulator does not yet accept client assertions (certificates or \
                 federated credentials); use a client secret.",
            ))
        }
        ClientCredential::Missing => Err(EntraError::missing_client_credential()),
    }
}

/// Checks `client_assertion_type` and that the assertion looks like a JWT.
fn check_assertion_shape(assertion_type: Option<&str>, assertion: &str) -> Result<(), EntraError> {
    match assertion_type {
        None => return Err(EntraError::missing_parameter("client_assertion_type")),
        Some(JWT_BEARER) => {}
        Some(_) => {
            return Err(EntraError::invalid_client_assertion(&format!(
                "client_assertion_type must be '{JWT_BEARER}'."
            )))
        }
    }
    if assertion.split('.').count() != 3 {
        return Err(EntraError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            50027,
            "JWT token is invalid or malformed.",
        ));
    }
    Ok(())
}

/// As [`authenticate`], and verifies client assertions (certificate and federated
/// credentials) for the token endpoint of `authority`.
pub(crate) fn authenticate_at(
    directory: &Directory,
    authority: &str,
    client_id: &str,
    credential: &ClientCredential,
) -> Result<Principal, EntraError> {
    let ClientCredential::Assertion {
        assertion_type,
        assertion,
    } = credential
    else {
        return authenticate(directory, client_id, credential);
    };
    let Some(principal) = directory.by_client_id(client_id) else {
        return Err(EntraError::application_not_found(
            client_id,
            directory.tenant_id(),
        ));
    };
    check_assertion_shape(assertion_type.as_deref(), assertion)?;
    super::assertion::verify(directory, authority, &principal, assertion)?;
    Ok(principal)
}

/// The `(client_id, secret)` of an `Authorization: Basic` header, `None` without one (or with
/// another scheme), an error when it is malformed.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, EntraError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || {
        EntraError::malformed_request(
            "the Authorization header is not valid HTTP Basic credentials \
             (base64 of urlencoded client_id, ':', urlencoded client secret).",
        )
    };
    let value = value.to_str().map_err(|_| malformed())?.trim();
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    let id = form_decode(id).ok_or_else(malformed)?;
    let secret = form_decode(secret).ok_or_else(malformed)?;
    if id.is_empty() {
        return Err(malformed());
    }
    Ok(Some((id, secret)))
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space, `%XX` a byte); `None`
/// when the result is not UTF-8.
fn form_decode(input: &str) -> Option<String> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match bytes.get(i + 1..i + 3).and_then(|p| hex_pair(p[0], p[1])) {
                Some(byte) => {
                    out.push(byte);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The byte two hex digits spell.
fn hex_pair(high: u8, low: u8) -> Option<u8> {
    let digit = |c: u8| (c as char).to_digit(16);
    Some((digit(high)? * 16 + digit(low)?) as u8)
}

/// Compares two secrets in time that depends on their length only.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode("a%3Ab+c%7e").as_deref(), Some("a:b c~"));
        assert_eq!(form_decode("100%").as_deref(), Some("100%"));
        assert_eq!(form_decode("%zz").as_deref(), Some("%zz"));
        assert_eq!(form_decode("%ff"), None);
    }

    #[test]
    fn constant_time() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn credential_debug_redacts() {
        let s = format!("{:?}", ClientCredential::Secret("hunter2".into()));
        assert!(!s.contains("hunter2"));
    }
}
