//! The token request both of our assertion credentials make (certificate and workload
//! identity): the client-credentials grant with a signed JWT instead of a secret,
//!
//! ```text
//! POST {authority}/{tenant}/oauth2/v2.0/token
//! grant_type=client_credentials&client_id=…&scope=…
//! &client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer&client_assertion=<JWT>
//! ```
//!
//! and the reading of Entra's reply. Errors are parsed here rather than by azure_identity,
//! whose parser fails on `error_description` strings with escapes (`\r\n` in every real Entra
//! error): the AADSTS line reaches the caller verbatim, with a hint of what to change, and a
//! 429/503 keeps its `Retry-After` in the error's raw response so that the token manager
//! honours it.

use std::time::Duration;

use azure_core::credentials::AccessToken;
use azure_core::error::ErrorKind;
use azure_core::http::headers::{HeaderName, Headers};
use azure_core::http::{RawResponse, StatusCode};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::tls::TlsOptions;

/// The one `client_assertion_type` Entra accepts.
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The public cloud's authority host.
pub(crate) const PUBLIC_AUTHORITY: &str = "https://login.microsoftonline.com";

/// Where an assertion credential sends its token requests.
#[derive(Clone)]
pub(crate) struct TokenEndpoint {
    /// `{authority}/{tenant}/oauth2/v2.0/token`: also the `aud` of a certificate assertion.
    pub url: String,
    /// The client id sent as `client_id`.
    pub client_id: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for TokenEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEndpoint")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// The authority host to use: the option, else `AZURE_AUTHORITY_HOST`, else the public cloud;
/// checked to be an https URL.
pub(crate) fn resolve_authority(option: Option<&str>) -> Result<String> {
    let from_env = std::env::var("AZURE_AUTHORITY_HOST")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let host = option
        .map(str::to_string)
        .or(from_env)
        .unwrap_or_else(|| PUBLIC_AUTHORITY.to_string());
    let url = url::Url::parse(host.trim())
        .map_err(|e| Error::Config(format!("the authority host {host:?} is not a URL: {e}")))?;
    if url.scheme() != "https" {
        return Err(Error::Config(format!(
            "the authority host {host:?} must use https (e.g. https://login.microsoftonline.com)"
        )));
    }
    Ok(host.trim().trim_end_matches('/').to_string())
}

impl TokenEndpoint {
    /// The token endpoint of `tenant_id` at `authority` (already resolved), trusting `tls`.
    pub fn new(
        authority: &str,
        tenant_id: &str,
        client_id: &str,
        tls: &TlsOptions,
    ) -> Result<Self> {
        let what = "an assertion credential";
        if tenant_id.trim().is_empty() {
            return Err(Error::Config(format!(
                "{what} needs a tenant id: set AZURE_TENANT_ID (or AZURE_REDIS_TENANTID)"
            )));
        }
        if client_id.trim().is_empty() {
            return Err(Error::Config(format!(
                "{what} needs a client id: set AZURE_CLIENT_ID (or AZURE_REDIS_CLIENTID)"
            )));
        }
        let valid_tenant = tenant_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !valid_tenant {
            return Err(Error::Config(format!(
                "the tenant id {tenant_id:?} is not a GUID or a domain name"
            )));
        }
        let config = tls.client_config()?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::Tls(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            url: format!("{authority}/{tenant_id}/oauth2/v2.0/token"),
            client_id: client_id.to_string(),
            http,
        })
    }

    /// Exchanges `assertion` for an access token for `scopes`. `hint` is appended to Entra's
    /// refusals: what the caller should check for this kind of credential.
    pub async fn exchange(
        &self,
        scopes: &[&str],
        assertion: &str,
        hint: fn(u32) -> Option<&'static str>,
    ) -> azure_core::Result<AccessToken> {
        if scopes.is_empty() {
            return Err(azure_core::Error::with_message(
                ErrorKind::Credential,
                "no scope was requested: ask for https://redis.azure.com/.default",
            ));
        }
        let scope = scopes.join(" ");
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("scope", scope.as_str()),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
        ];
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let reply = self
            .http
            .post(&self.url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                azure_core::Error::with_message(
                    ErrorKind::Connection,
                    format!(
                        "could not reach the token endpoint {}: {e} (check AZURE_AUTHORITY_HOST, the network, and the CA trust)",
                        self.url
                    ),
                )
            })?;
        let status = reply.status().as_u16();
        let mut headers = Headers::new();
        for name in ["retry-after", "x-ms-request-id", "client-request-id"] {
            if let Some(v) = reply.headers().get(name).and_then(|v| v.to_str().ok()) {
                headers.insert(HeaderName::from_static(name), v.to_string());
            }
        }
        let bytes = reply.bytes().await.map_err(|e| {
            azure_core::Error::with_message(
                ErrorKind::Io,
                format!("reading the token endpoint's reply: {e}"),
            )
        })?;
        if status == 200 {
            return parse_success(&bytes);
        }
        Err(refusal(status, headers, &bytes, hint))
    }
}

/// A 200 reply.
#[derive(Deserialize)]
struct Success {
    access_token: String,
    expires_in: Option<serde_json::Value>,
}

fn parse_success(bytes: &[u8]) -> azure_core::Result<AccessToken> {
    let reply: Success = serde_json::from_slice(bytes).map_err(|e| {
        azure_core::Error::with_message(
            ErrorKind::DataConversion,
            format!("the token endpoint's reply is not a token response: {e}"),
        )
    })?;
    let expires_in = match &reply.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| {
        azure_core::Error::with_message(
            ErrorKind::DataConversion,
            "the token endpoint's reply has no usable expires_in",
        )
    })?;
    let expires_on = time::OffsetDateTime::now_utc() + Duration::from_secs(expires_in);
    Ok(AccessToken::new(reply.access_token, expires_on))
}

/// Entra's error body (owned strings: descriptions carry escapes).
#[derive(Deserialize, Default)]
struct EntraErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
    #[serde(default)]
    error_codes: Vec<u32>,
}

/// The AADSTS line of an error description: the first line, without the trace lines.
fn first_line(description: &str) -> &str {
    description
        .split(['\r', '\n'])
        .next()
        .unwrap_or(description)
        .trim()
}

/// An `azure_core::Error` for a refused token request: the AADSTS text, a hint, and (for
/// 429/5xx) a raw response that keeps `Retry-After`.
fn refusal(
    status: u16,
    headers: Headers,
    bytes: &[u8],
    hint: fn(u32) -> Option<&'static str>,
) -> azure_core::Error {
    let body: EntraErrorBody = serde_json::from_slice(bytes).unwrap_or_default();
    let code = body.error_codes.first().copied().or_else(|| {
        body.error_description.as_deref().and_then(|d| {
            let digits: String = d
                .strip_prefix("AADSTS")?
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
    });
    let mut message = match (&body.error, &body.error_description) {
        (_, Some(description)) => first_line(description).to_string(),
        (Some(error), None) => error.clone(),
        (None, None) => {
            let text = String::from_utf8_lossy(bytes);
            let shown: String = text.chars().take(200).collect();
            format!("HTTP {status} from the token endpoint: {shown}")
        }
    };
    let extra = match status {
        429 => {
            Some("the token service is throttling: the request will be retried after Retry-After")
        }
        500..=599 => {
            Some("the token service failed or is unavailable: the request will be retried")
        }
        _ => code.and_then(hint),
    };
    if let Some(extra) = extra {
        message.push_str(" (");
        message.push_str(extra);
        message.push(')');
    }
    let raw = RawResponse::from_bytes(StatusCode::from(status), headers, Vec::<u8>::new());
    azure_core::Error::with_message(
        ErrorKind::HttpResponse {
            status: StatusCode::from(status),
            error_code: body.error.clone().or(code.map(|c| format!("AADSTS{c}"))),
            raw_response: Some(Box::new(raw)),
        },
        message,
    )
}

/// A fresh GUID for `jti`.
pub(crate) fn new_jti() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_keeps_the_aadsts_line_and_retry_after() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS700027: Client assertion failed signature validation.\r\nTrace ID: x\r\nCorrelation ID: y","error_codes":[700027]}"#;
        let e = refusal(401, Headers::new(), body, |_| Some("check the certificate"));
        let text = e.to_string();
        assert!(
            text.starts_with("AADSTS700027: Client assertion failed"),
            "{text}"
        );
        assert!(!text.contains("Trace ID"), "{text}");
        assert!(text.contains("check the certificate"), "{text}");

        let mut headers = Headers::new();
        headers.insert(HeaderName::from_static("retry-after"), "7".to_string());
        let e = refusal(429, headers, b"not json", |_| None);
        let ErrorKind::HttpResponse {
            raw_response: Some(raw),
            ..
        } = e.kind()
        else {
            panic!("no raw response")
        };
        assert_eq!(
            raw.headers()
                .get_optional_str(&HeaderName::from_static("retry-after")),
            Some("7")
        );
    }
}
