//! Issuers and tenants: `iss` must be the tenant's issuer for the token's `ver`.

use crate::{Claims, Rejection};

/// The v1 issuer Entra puts in `iss` for tenant `tid` (tokens with `ver: 1.0`).
pub fn v1_issuer(tid: &str) -> String {
    format!("https://sts.windows.net/{tid}/")
}

/// The v2 issuer Entra puts in `iss` for tenant `tid` (tokens with `ver: 2.0`).
pub fn v2_issuer(tid: &str) -> String {
    format!("https://login.microsoftonline.com/{tid}/v2.0")
}

/// `iss` must be one of `v1` for a `ver: 1.0` token, one of `v2` for a `ver: 2.0` token;
/// any other `ver` is refused ([`Rejection::Issuer`]).
pub fn check_issuer(claims: &Claims, v1: &[String], v2: &[String]) -> Result<(), Rejection> {
    let accepted = match claims.ver.as_deref() {
        Some("1.0") => v1,
        Some("2.0") => v2,
        _ => return Err(Rejection::Issuer),
    };
    if accepted.contains(&claims.iss) {
        Ok(())
    } else {
        Err(Rejection::Issuer)
    }
}

/// `tid` must be present and equal `tenant` (compared case-insensitively, as GUIDs).
pub fn check_tenant(claims: &Claims, tenant: &str) -> Result<(), Rejection> {
    if claims
        .tid
        .as_ref()
        .is_some_and(|tid| tid.eq_ignore_ascii_case(tenant))
    {
        Ok(())
    } else {
        Err(Rejection::Tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(ver: Option<&str>, iss: &str) -> Claims {
        Claims {
            oid: None,
            exp: 0.0,
            nbf: None,
            iat: None,
            iss: iss.into(),
            aud: String::new(),
            ver: ver.map(Into::into),
            tid: Some("T".into()),
            appid: None,
            azp: None,
        }
    }

    #[test]
    fn the_issuer_must_match_the_version() {
        let v1 = [v1_issuer("T")];
        let v2 = [v2_issuer("T")];
        assert!(check_issuer(&claims(Some("1.0"), &v1_issuer("T")), &v1, &v2).is_ok());
        assert!(check_issuer(&claims(Some("2.0"), &v2_issuer("T")), &v1, &v2).is_ok());
        for bad in [
            claims(Some("2.0"), &v1_issuer("T")),
            claims(Some("1.0"), &v2_issuer("T")),
            claims(None, &v1_issuer("T")),
            claims(Some("3.0"), &v2_issuer("T")),
        ] {
            assert_eq!(check_issuer(&bad, &v1, &v2), Err(Rejection::Issuer));
        }
    }

    #[test]
    fn the_tenant_is_compared_as_a_guid() {
        let c = claims(Some("1.0"), "x");
        assert!(check_tenant(&c, "t").is_ok());
        assert_eq!(check_tenant(&c, "other"), Err(Rejection::Tenant));
    }
}
