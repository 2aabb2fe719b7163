//! Verifying client assertions (`private_key_jwt`), the two ways Entra accepts them:
//!
//! - **Certificate credentials**: a JWT the application signs with the private key of a
//!   certificate uploaded to it. The header names the certificate by thumbprint (`x5t#S256`,
//!   SHA-256, or `x5t`, SHA-1; base64url or padded standard base64 both accepted, as clients
//!   disagree); `alg` is `PS256` or `RS256`; `aud` is the token endpoint
//!   (`{authority}/{tenant}/oauth2/v2.0/token`, or the legacy `/oauth2/token` and
//!   `/{tenant}/v2.0` forms); `iss` = `sub` = the client id; `exp` in the future; `jti` present.
//! - **Federated credentials** (AKS workload identity): a token from an external OIDC issuer
//!   (the cluster), whose `iss`, `sub` and `aud` must match one of the application's federated
//!   credential records exactly (else AADSTS70021, naming all three), signed by a key of that
//!   issuer's JWKS, and not expired (AADSTS700024).
//!
//! Which applies: an assertion whose `iss` is the client id is a certificate assertion; any
//! other is a federated one. Errors carry Entra's codes and wording; nothing here logs an
//! assertion.

use axum::http::StatusCode;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::errors::EntraError;
use crate::directory::{Directory, Principal};
use crate::signing::now_secs;

/// How far `nbf` may be in the future (clock skew Entra tolerates).
const NBF_SKEW_SECS: u64 = 300;

/// 401 `invalid_client` AADSTS50027: not a JWT.
fn malformed() -> EntraError {
    EntraError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        50027,
        "JWT token is invalid or malformed.",
    )
}

/// 401 `invalid_client` AADSTS700027 with Entra's wording and a reason.
fn invalid_signature(reason: &str) -> EntraError {
    EntraError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        700027,
        format!("Client assertion contains an invalid signature. [Reason - {reason}]"),
    )
}

/// 401 `invalid_client` AADSTS700024: outside the assertion's validity window.
fn not_in_time_range(now: u64, nbf: Option<u64>, exp: Option<u64>) -> EntraError {
    let show = |t: Option<u64>| {
        t.and_then(|t| i64::try_from(t).ok())
            .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
            .map(|t| {
                format!(
                    "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
                    t.year(),
                    u8::from(t.month()),
                    t.day(),
                    t.hour(),
                    t.minute(),
                    t.second()
                )
            })
            .unwrap_or_else(|| "(none)".to_string())
    };
    EntraError::new(
        StatusCode::BAD_REQUEST,
        "invalid_client",
        700024,
        format!(
            "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
            show(Some(now)),
            show(nbf),
            show(exp)
        ),
    )
}

/// Reads the payload without verifying it (to choose how to verify it).
fn peek_claims(assertion: &str) -> Result<Value, EntraError> {
    let payload = assertion.split('.').nth(1).ok_or_else(malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| malformed())?;
    serde_json::from_slice(&bytes).map_err(|_| malformed())
}

/// Decodes a thumbprint header in any of the encodings clients use.
fn decode_thumbprint(value: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [&URL_SAFE_NO_PAD, &URL_SAFE, &STANDARD, &STANDARD_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(value).ok())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// A string claim.
fn claim<'a>(claims: &'a Value, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str)
}

/// A numeric date claim.
fn date(claims: &Value, name: &str) -> Option<u64> {
    match claims.get(name) {
        Some(Value::Number(n)) => n.as_u64().or_else(|| n.as_f64().map(|f| f as u64)),
        _ => None,
    }
}

/// Verifies the signature with `key` (RS256 or PS256, as the header says); claims are
/// checked by the caller.
fn verify_signature(
    assertion: &str,
    alg: Algorithm,
    key: &DecodingKey,
) -> Result<Value, jsonwebtoken::errors::Error> {
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(assertion, key, &validation).map(|data| data.claims)
}

/// Checks `assertion` for `principal` at the token endpoint of `authority`.
pub(crate) fn verify(
    directory: &Directory,
    authority: &str,
    principal: &Principal,
    assertion: &str,
) -> Result<(), EntraError> {
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| malformed())?;
    let claims = peek_claims(assertion)?;
    let iss = claim(&claims, "iss").unwrap_or_default();
    if iss.eq_ignore_ascii_case(&principal.client_id) {
        verify_certificate(directory, authority, principal, assertion, &header)
    } else {
        verify_federated(directory, principal, assertion, &header, &claims)
    }
}

fn verify_certificate(
    directory: &Directory,
    authority: &str,
    principal: &Principal,
    assertion: &str,
    header: &jsonwebtoken::Header,
) -> Result<(), EntraError> {
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::PS256) {
        return Err(invalid_signature(&format!(
            "The algorithm {:?} is not supported; sign with PS256 or RS256.",
            header.alg
        )));
    }
    let (thumbprint, sha256) = match (&header.x5t_s256, &header.x5t) {
        (Some(t), _) => (decode_thumbprint(t), true),
        (None, Some(t)) => (decode_thumbprint(t), false),
        (None, None) => {
            return Err(invalid_signature(
                "The assertion's header names no certificate: send x5t#S256 (or x5t).",
            ))
        }
    };
    let thumbprint = thumbprint.ok_or_else(|| {
        invalid_signature("The certificate thumbprint in the header is not base64.")
    })?;
    let certificates = directory.certificates_of(&principal.client_id);
    let certificate = certificates.iter().find(|c| {
        if sha256 {
            c.sha256 == thumbprint
        } else {
            c.sha1 == thumbprint
        }
    });
    let Some(certificate) = certificate else {
        return Err(invalid_signature(&format!(
            "The key was not found., Thumbprint of key used by client: '{}', Configured keys: {}. Upload the certificate to app '{}' or sign with one of its certificates.",
            hex(&thumbprint),
            certificates.len(),
            principal.client_id
        )));
    };
    let key = DecodingKey::from_rsa_der(&certificate.rsa_public_key);
    let claims = verify_signature(assertion, header.alg, &key).map_err(|_| {
        invalid_signature(&format!(
            "The signature does not verify with the key of certificate '{}'.",
            hex(&thumbprint)
        ))
    })?;
    let tenant = directory.tenant_id();
    let aud = claim(&claims, "aud").unwrap_or_default();
    let base = format!("{}/{tenant}", authority.trim_end_matches('/'));
    let accepted = [
        format!("{base}/oauth2/v2.0/token"),
        format!("{base}/oauth2/token"),
        format!("{base}/v2.0"),
    ];
    if !accepted
        .iter()
        .any(|a| a.eq_ignore_ascii_case(aud.trim_end_matches('/')))
    {
        return Err(EntraError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700023,
            format!(
                "Client assertion audience claim does not match Realm issuer. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials . The audience must be '{}', not '{aud}'.",
                accepted[0]
            ),
        ));
    }
    let sub = claim(&claims, "sub").unwrap_or_default();
    if !sub.eq_ignore_ascii_case(&principal.client_id) {
        return Err(EntraError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter. The iss and sub claims must both be the client id.",
        ));
    }
    check_times(&claims)?;
    if claim(&claims, "jti").is_none_or(str::is_empty) {
        return Err(EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90014,
            "The required field 'jti' is missing from the credential. Ensure that you have all the necessary parameters for the login request.",
        ));
    }
    Ok(())
}

/// `exp` must be present and in the future, `nbf` (if any) not far in the future.
fn check_times(claims: &Value) -> Result<(), EntraError> {
    let now = now_secs();
    let exp = date(claims, "exp");
    let nbf = date(claims, "nbf");
    let expired = exp.is_none_or(|exp| exp <= now);
    let early = nbf.is_some_and(|nbf| nbf > now + NBF_SKEW_SECS);
    if expired || early {
        return Err(not_in_time_range(now, nbf, exp));
    }
    Ok(())
}

fn verify_federated(
    directory: &Directory,
    principal: &Principal,
    assertion: &str,
    header: &jsonwebtoken::Header,
    claims: &Value,
) -> Result<(), EntraError> {
    let iss = claim(claims, "iss").unwrap_or_default();
    let sub = claim(claims, "sub").unwrap_or_default();
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let records = directory.federated_credentials_of(&principal.client_id);
    let matched = records
        .iter()
        .any(|r| r.issuer == iss && r.subject == sub && audiences.iter().any(|a| *a == r.audience));
    if !matched {
        return Err(EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            70021,
            format!(
                "No matching federated identity record found for presented assertion. Assertion Issuer: '{iss}'. Assertion Subject: '{sub}'. Assertion Audience: '{}'. https://learn.microsoft.com/entra/workload-id/workload-identity-federation",
                audiences.join(",")
            ),
        ));
    }
    let keys = directory.oidc_issuer_keys(iss).unwrap_or_default();
    let candidates: Vec<_> = keys
        .iter()
        .filter(|k| header.kid.is_none() || k.common.key_id == header.kid)
        .collect();
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::PS256) {
        return Err(invalid_signature(&format!(
            "The algorithm {:?} is not supported for federated assertions.",
            header.alg
        )));
    }
    let verified = candidates.iter().find_map(|jwk| {
        let key = DecodingKey::from_jwk(jwk).ok()?;
        verify_signature(assertion, header.alg, &key).ok()
    });
    let Some(claims) = verified else {
        return Err(invalid_signature(&format!(
            "The assertion's signature does not verify with the signing keys of issuer '{iss}' (its JWKS)."
        )));
    };
    check_times(&claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_in_every_encoding() {
        let bytes: Vec<u8> = (0u8..32).map(|b| b.wrapping_mul(37)).collect();
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        assert_eq!(
            decode_thumbprint(&URL_SAFE_NO_PAD.encode(&bytes)),
            Some(bytes.clone())
        );
        assert_eq!(
            decode_thumbprint(&STANDARD.encode(&bytes)),
            Some(bytes.clone())
        );
    }
}
