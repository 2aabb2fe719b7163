//! The token checks: acquisition (with Entra's error codes explained) and the claims Redis
//! relies on (`oid`, `aud`, `exp`/`nbf` against the local clock).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use azure_core::credentials::{AccessToken, TokenCredential};
use redis_entra::{RedisCredentials, TokenClaims, REDIS_SCOPE};

use super::config::secret_var;
use super::Check;
use crate::exit;
use crate::settings::env;

/// How long a token request may take.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);
/// The audiences Azure Cache for Redis accepts: its resource URI and its application id.
const REDIS_AUDIENCES: &[&str] = &[
    "https://redis.azure.com",
    "https://redis.azure.com/",
    "acca5fbb-b7e4-4009-81f1-37e38fd66d78",
];
/// How far the token's times may be off before the clock is suspect.
const SKEW_TOLERANCE: u64 = 5 * 60;

/// The third troubleshooting case of Microsoft's Azure Cache for Redis documentation.
const NO_MANAGED_IDENTITY: &str = "managed identity works only on Azure: your code must run on an Azure VM, App Service, Functions, Container Apps, AKS or another Azure resource with the identity assigned; on a development machine use a service principal (set AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET, or Service Connector's AZURE_REDIS_CLIENTID, AZURE_REDIS_TENANTID and AZURE_REDIS_CLIENTSECRET) or sign in as a user; for local tests `redis-entra emulator --identity managed-identity` provides an identity endpoint";

/// The whole chain of an error, as text.
fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// The `AADSTSnnn: message` of an Entra error, without the trace lines.
fn aadsts(text: &str) -> Option<(String, String)> {
    let start = text.find("AADSTS")?;
    let rest = &text[start..];
    let digits: String = rest[6..].chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return None;
    }
    let end = ["\\r\\n", "\r\n", "\n", "\""]
        .iter()
        .filter_map(|sep| rest.find(sep))
        .min()
        .unwrap_or(rest.len());
    Some((digits, rest[..end].trim().to_string()))
}

/// Explains a credential error: the line to print and what to change.
pub fn explain(text: &str, managed_identity: bool) -> (String, String) {
    let (client_var, tenant_var) = if secret_var() == "AZURE_REDIS_CLIENTSECRET" {
        ("AZURE_REDIS_CLIENTID", "AZURE_REDIS_TENANTID")
    } else {
        ("AZURE_CLIENT_ID", "AZURE_TENANT_ID")
    };
    if let Some((code, message)) = aadsts(text) {
        let fix = match code.as_str() {
            "7000215" => format!(
                "the client secret is wrong: {} holds the secret's ID, not its value, or the secret is wrong; in the portal (App registrations > the app > Certificates & secrets) create a new client secret and copy its Value (shown once) into {}",
                secret_var(),
                secret_var()
            ),
            "7000222" => format!(
                "the client secret has expired: create a new one (App registrations > the app > Certificates & secrets) and put its Value into {}",
                secret_var()
            ),
            "700016" => format!(
                "the application (client) id was not found in this tenant: check {client_var} (the app registration's Application (client) ID, not its object id) and {tenant_var} (the Directory (tenant) ID of the tenant the app lives in)"
            ),
            "90002" => format!(
                "the tenant was not found: check {tenant_var} (the Directory (tenant) ID, or a domain such as contoso.onmicrosoft.com) and, in a sovereign cloud, AZURE_AUTHORITY_HOST"
            ),
            "500011" => "the Redis resource is not known in this tenant: the scope must be https://redis.azure.com/.default".to_string(),
            "700024" | "70021" | "700211" | "700212" => "the federated token was refused: check the workload identity's federated credential (issuer, subject, audience) on the app registration or managed identity".to_string(),
            "50034" | "50126" => "the user name or password is wrong".to_string(),
            _ => format!("look up AADSTS{code} in Microsoft Entra's error codes; check {client_var}, {tenant_var} and the secret"),
        };
        return (
            format!("Entra ID refused the token request: {message}"),
            fix,
        );
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("unknownissuer")
        || lower.contains("invalid peer certificate")
        || lower.contains("certificate verify failed")
    {
        return (
            format!("the token endpoint's certificate is not trusted: {text}"),
            format!(
                "pass --cacert FILE with the CA that signs {} or set SSL_CERT_FILE=FILE (for the emulator: its env file's SSL_CERT_FILE)",
                env("AZURE_AUTHORITY_HOST").unwrap_or_else(|| "login.microsoftonline.com".into())
            ),
        );
    }
    if managed_identity {
        return (
            format!("the managed identity gave no token: {text}"),
            NO_MANAGED_IDENTITY.to_string(),
        );
    }
    (
        format!("the credential could not get a token: {text}"),
        format!(
            "check {client_var}, {tenant_var}, {} and AZURE_AUTHORITY_HOST, and that this machine can reach the authority over HTTPS",
            secret_var()
        ),
    )
}

/// Whether the instance metadata service (the managed identity endpoint of Azure VMs) answers.
async fn imds_reachable() -> bool {
    redis_entra::credential::imds::reachable(Duration::from_secs(2)).await
}

/// Asks the credential for a token for Redis.
pub async fn acquire(
    credential: &Arc<dyn TokenCredential>,
    managed_identity: bool,
) -> (Check, Option<AccessToken>) {
    const NAME: &str = "token";
    let platform_endpoint = env("IDENTITY_ENDPOINT").is_some() || env("MSI_ENDPOINT").is_some();
    if managed_identity && !platform_endpoint && !imds_reachable().await {
        return (
            Check::fail(
                NAME,
                exit::AUTH,
                "no client secret is set, so a managed identity was tried, but this machine has no managed identity endpoint (no IDENTITY_ENDPOINT, and the instance metadata service at 169.254.169.254 does not answer)",
                NO_MANAGED_IDENTITY,
            ),
            None,
        );
    }
    let started = Instant::now();
    match tokio::time::timeout(TOKEN_TIMEOUT, credential.get_token(&[REDIS_SCOPE], None)).await {
        Ok(Ok(token)) => {
            let expires: SystemTime = token.expires_on.into();
            let left = expires
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            let from = match env("AZURE_AUTHORITY_HOST") {
                Some(a) if !managed_identity => format!(" from {a}"),
                _ => String::new(),
            };
            (
                Check::ok(
                    NAME,
                    format!(
                        "acquired for {REDIS_SCOPE}{from} in {} ms, expires in {} min",
                        started.elapsed().as_millis(),
                        left.as_secs() / 60
                    ),
                ),
                Some(token),
            )
        }
        Ok(Err(e)) => {
            let (line, fix) = explain(&chain_text(&e), managed_identity);
            (Check::fail(NAME, exit::AUTH, line, fix), None)
        }
        Err(_) => {
            let fix = if managed_identity {
                NO_MANAGED_IDENTITY.to_string()
            } else {
                "check that this machine reaches the authority (AZURE_AUTHORITY_HOST, default login.microsoftonline.com) over HTTPS, directly or through HTTPS_PROXY".to_string()
            };
            (
                Check::fail(
                    NAME,
                    exit::AUTH,
                    format!(
                        "the token request got no answer within {}s",
                        TOKEN_TIMEOUT.as_secs()
                    ),
                    fix,
                ),
                None,
            )
        }
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Checks the claims Redis relies on; on success, the credentials to sign in with.
pub fn claims(token: AccessToken) -> (Check, Option<RedisCredentials>) {
    const NAME: &str = "claims";
    let secret = token.token.secret();
    let claims = match TokenClaims::from_jwt(secret) {
        Ok(c) => c,
        Err(e) => {
            return (
                Check::fail(
                    NAME,
                    exit::AUTH,
                    format!("the token cannot be read: {e}"),
                    "the credential must return an Entra ID access token (a JWT)",
                ),
                None,
            )
        }
    };
    let oid = match claims.username() {
        Ok(oid) => oid.to_string(),
        Err(e) => return (Check::fail(NAME, exit::AUTH, e.to_string(), "Redis uses the token's oid as the username: ask for the scope https://redis.azure.com/.default with an identity (user, service principal or managed identity)"), None),
    };
    if !claims
        .aud
        .iter()
        .any(|a| REDIS_AUDIENCES.contains(&a.as_str()))
    {
        return (
            Check::fail(
                NAME,
                exit::AUTH,
                format!(
                    "scope/audience mismatch: the token is for {:?}, but Azure Cache for Redis accepts only tokens for https://redis.azure.com (acca5fbb-b7e4-4009-81f1-37e38fd66d78)",
                    claims.aud
                ),
                "ask for the scope https://redis.azure.com/.default",
            ),
            None,
        );
    }
    let now = now_unix();
    let clock = |what: String| {
        Check::fail(
            NAME,
            exit::AUTH,
            format!("clock skew: {what} (local clock {})", crate::token::format_time(now)),
            "set this machine's clock right (enable NTP time sync); the server compares the token's times with its own",
        )
    };
    if let Some(exp) = claims.exp {
        if exp <= now {
            return (
                clock(format!(
                    "the new token looks expired already: exp {}",
                    crate::token::format_time(exp)
                )),
                None,
            );
        }
    }
    if let Some(nbf) = claims.nbf {
        if nbf > now + SKEW_TOLERANCE {
            return (
                clock(format!(
                    "the token is not valid yet: nbf {}",
                    crate::token::format_time(nbf)
                )),
                None,
            );
        }
    }
    if let Some(iat) = claims.iat {
        if iat > now + SKEW_TOLERANCE {
            return (
                clock(format!(
                    "the token was issued in the future: iat {}",
                    crate::token::format_time(iat)
                )),
                None,
            );
        }
    }
    let expires_on: SystemTime = token.expires_on.into();
    let exp = claims
        .exp
        .map(crate::token::format_time)
        .unwrap_or_else(|| "(no exp)".into());
    let line = format!(
        "username (oid) {oid}, aud {}, tid {}, exp {exp}",
        claims.aud.join(" "),
        claims.tid.clone().unwrap_or_else(|| "(absent)".into())
    );
    let creds = RedisCredentials::new(oid, secret, expires_on, claims);
    (Check::ok(NAME, line), Some(creds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_aadsts_line() {
        let text = r#"authentication failed. invalid type: string "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x", expected"#;
        let (code, message) = aadsts(text).unwrap();
        assert_eq!(code, "7000215");
        assert_eq!(message, "AADSTS7000215: Invalid client secret provided.");
        let (_, fix) = explain(text, false);
        assert!(fix.contains("ID, not its value"), "{fix}");
        assert!(aadsts("no code here").is_none());
    }

    #[test]
    fn explains_managed_identity_off_azure() {
        let (_, fix) = explain(
            "ManagedIdentityCredential authentication failed: connection refused",
            true,
        );
        assert!(fix.contains("works only on Azure"), "{fix}");
    }
}
