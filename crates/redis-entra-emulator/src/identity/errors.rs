//! Entra ID's error replies, shaped exactly as `login.microsoftonline.com` shapes them:
//!
//! ```json
//! {"error":"invalid_client",
//!  "error_description":"AADSTS7000215: Invalid client secret provided. …\r\nTrace ID: …\r\nCorrelation ID: …\r\nTimestamp: 2023-06-02 21:00:26Z",
//!  "error_codes":[7000215],"timestamp":"2023-06-02 21:00:26Z","trace_id":"…","correlation_id":"…",
//!  "error_uri":"https://login.microsoftonline.com/error?code=7000215"}
//! ```
//!
//! Every endpoint of the authority host builds its errors here, so the shape (and the
//! `Cache-Control: no-store` that goes with it) is the same everywhere.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use uuid::Uuid;

/// One Entra error: HTTP status, OAuth `error`, AADSTS number and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntraError {
    /// The HTTP status (400 for most, 401 for bad client credentials).
    pub status: StatusCode,
    /// The OAuth 2.0 `error` value (`invalid_client`, `invalid_scope`, …).
    pub error: &'static str,
    /// The AADSTS number (`7000215`).
    pub code: u32,
    /// The text after `AADSTSnnn: `.
    pub message: String,
}

/// The text of AADSTS90002 ("tenant not found"), as Entra words it.
fn tenant_not_found_text(tenant: &str) -> String {
    format!(
        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are \
         signing into the correct cloud. Check with your subscription administrator, this may \
         happen if there are no active subscriptions for the tenant."
    )
}

impl EntraError {
    /// An error with this status, OAuth error, AADSTS code and message.
    pub fn new(
        status: StatusCode,
        error: &'static str,
        code: u32,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error,
            code,
            message: message.into(),
        }
    }

    /// 400 `invalid_request` AADSTS90002 (the token endpoint's unknown tenant).
    pub fn tenant_not_found(tenant: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            tenant_not_found_text(tenant),
        )
    }

    /// 400 `invalid_tenant` AADSTS90002 (the metadata documents' unknown tenant).
    pub fn invalid_tenant(tenant: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            90002,
            tenant_not_found_text(tenant),
        )
    }

    /// 400 `invalid_request` AADSTS50059: a client-credentials request to `common` or
    /// `organizations`, which name no tenant.
    pub fn no_tenant_information() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50059,
            "No tenant-identifying information found in either the request or implied by any \
             provided credentials.",
        )
    }

    /// 400 `invalid_request` AADSTS900144: a required body parameter is missing.
    pub fn missing_parameter(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    }

    /// 400 `invalid_request` AADSTS90004: the request is not a well-formed form post.
    pub fn malformed_request(why: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90004,
            format!("The request is not properly formatted: {why}"),
        )
    }

    /// 400 `unsupported_grant_type` AADSTS70003.
    pub fn unsupported_grant_type(grant_type: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        )
    }

    /// 400 `unauthorized_client` AADSTS700016: no application with this client id.
    pub fn application_not_found(client_id: &str, tenant: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory \
                 '{tenant}'. This can happen if the application has not been installed by the \
                 administrator of the tenant or consented to by any user in the tenant. You may \
                 have sent your authentication request to the wrong tenant."
            ),
        )
    }

    /// 401 `invalid_client` AADSTS7000215: the client secret is wrong.
    pub fn invalid_client_secret(client_id: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is \
                 the client secret value, not the client secret ID, for a secret added to app \
                 '{client_id}'."
            ),
        )
    }

    /// 401 `invalid_client` AADSTS7000218: neither a secret nor an assertion was sent.
    pub fn missing_client_credential() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or \
             'client_secret'.",
        )
    }

    /// 401 `invalid_client` AADSTS700027: the client assertion was not accepted.
    pub fn invalid_client_assertion(why: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700027,
            format!("Client assertion failed signature validation. {why}"),
        )
    }

    /// 400 `invalid_scope` AADSTS1002012: a client-credentials scope without `/.default`.
    pub fn scope_without_default(scope: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows must \
                 have a scope value with /.default suffixed to the resource identifier \
                 (application ID URI)."
            ),
        )
    }

    /// 400 `invalid_scope` AADSTS70011: more than one resource, or an empty scope.
    pub fn invalid_scope(scope: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
            format!(
                "The provided request must include a 'scope' input parameter. The provided value \
                 for the input parameter 'scope' is not valid. The scope {scope} is not valid."
            ),
        )
    }

    /// 400 `invalid_resource` AADSTS500011: the scope names a resource the tenant lacks.
    pub fn resource_not_found(resource: &str, tenant: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500011,
            resource_not_found_text(resource, tenant),
        )
    }

    /// The full `AADSTSnnn: message` line, without the trace lines.
    pub fn aadsts_line(&self) -> String {
        format!("AADSTS{}: {}", self.code, self.message)
    }

    /// The reply: JSON in Entra's shape, `Cache-Control: no-store`, on `authority`'s
    /// `error_uri`, with `correlation_id` (the client's `client-request-id` when it sent one).
    pub fn respond(&self, authority: &str, correlation_id: &str) -> Response {
        let trace_id = Uuid::new_v4().to_string();
        let timestamp = entra_timestamp();
        let body = json!({
            "error": self.error,
            "error_description": format!(
                "{}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}",
                self.aadsts_line()
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("{}/error?code={}", authority.trim_end_matches('/'), self.code),
        });
        let mut response = (self.status, body.to_string()).into_response();
        set_json_no_store(response.headers_mut());
        set_request_ids(response.headers_mut(), &trace_id, correlation_id);
        response
    }
}

/// The text of AADSTS500011 ("resource principal not found"), as Entra words it.
pub(crate) fn resource_not_found_text(resource: &str, tenant: &str) -> String {
    format!(
        "The resource principal named {resource} was not found in the tenant named {tenant}. \
         This can happen if the application has not been installed by the administrator of the \
         tenant or consented to by any user in the tenant. You might have sent your \
         authentication request to the wrong tenant."
    )
}

/// Now as Entra writes timestamps: `2023-06-02 21:00:26Z`.
pub(crate) fn entra_timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// The correlation id of a request: the client's `client-request-id` header when it is a
/// GUID (MSAL sends one, and Entra echoes it), otherwise a fresh one.
pub(crate) fn correlation_id(headers: &HeaderMap) -> String {
    headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v.trim()).ok())
        .unwrap_or_else(Uuid::new_v4)
        .to_string()
}

/// A JSON reply with `Cache-Control: no-store`.
pub(crate) fn json_reply(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    set_json_no_store(response.headers_mut());
    response
}

/// `Content-Type: application/json; charset=utf-8`, `Cache-Control: no-store` and
/// `Pragma: no-cache`, as Entra sends on every token-endpoint reply.
pub(crate) fn set_json_no_store(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// `x-ms-request-id` (the trace id) and `client-request-id` (the correlation id).
pub(crate) fn set_request_ids(headers: &mut HeaderMap, trace_id: &str, correlation_id: &str) {
    if let Ok(v) = HeaderValue::from_str(trace_id) {
        headers.insert("x-ms-request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(correlation_id) {
        headers.insert("client-request-id", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_has_entra_shape() {
        let ts = entra_timestamp();
        assert_eq!(ts.len(), "2023-06-02 21:00:26Z".len());
        assert!(ts.ends_with('Z'));
        assert_eq!(&ts[10..11], " ");
    }

    #[test]
    fn correlation_id_echoes_a_guid_only() {
        let mut headers = HeaderMap::new();
        let id = Uuid::new_v4().to_string();
        headers.insert("client-request-id", HeaderValue::from_str(&id).unwrap());
        assert_eq!(correlation_id(&headers), id);
        headers.insert("client-request-id", HeaderValue::from_static("not a guid"));
        assert_ne!(correlation_id(&headers), "not a guid");
    }
}
