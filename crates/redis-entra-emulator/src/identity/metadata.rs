//! OpenID Connect discovery: the v2 and v1 metadata documents and the JWKS.
//!
//! The documents are Entra's, field for field, with every endpoint on the emulator's own host:
//! MSAL checks that the v2 `issuer`'s scheme and host equal the authority's before it POSTs to
//! the `token_endpoint` the document names. The tenant may be the emulator's GUID or one of the
//! multi-tenant aliases `common` and `organizations`, for which Entra writes the literal
//! placeholder `{tenantid}` in the issuer. Any other tenant gets Entra's 400 AADSTS90002.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::errors::{correlation_id, EntraError};
use super::tenant::TenantRef;
use super::IdentityState;

/// Where the tenant's documents point, for one `{tenant}` path segment.
struct TenantUrls {
    /// The segment the endpoints are built on: the tenant id, or the alias as requested.
    segment: String,
    /// The tenant id in issuers: the GUID, or `{tenantid}` for an alias.
    tid: String,
}

/// Resolves the path's tenant, or Entra's error for an unknown one.
fn tenant_urls(state: &IdentityState, tenant: &str) -> Result<TenantUrls, EntraError> {
    match TenantRef::resolve(&state.directory, tenant) {
        TenantRef::Own => Ok(TenantUrls {
            segment: state.directory.tenant_id().to_string(),
            tid: state.directory.tenant_id().to_string(),
        }),
        TenantRef::MultiTenant => Ok(TenantUrls {
            segment: tenant.to_ascii_lowercase(),
            tid: "{tenantid}".to_string(),
        }),
        TenantRef::Unknown => Err(EntraError::invalid_tenant(tenant)),
    }
}

/// A discovery document reply: JSON, cacheable for a day, readable cross-origin.
fn discovery_reply(body: &Value) -> Response {
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=86400, private"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// The v2 issuer on the emulator's host: `{authority}/{tid}/v2.0`.
fn v2_issuer(state: &IdentityState, tid: &str) -> String {
    format!("{}/{tid}/v2.0", state.authority())
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`.
pub(crate) async fn openid_configuration_v2(
    State(state): State<IdentityState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    let urls = match tenant_urls(&state, &tenant) {
        Ok(urls) => urls,
        Err(error) => return error.respond(state.authority(), &correlation_id(&headers)),
    };
    let base = format!("{}/{}", state.authority(), urls.segment);
    let document = json!({
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": v2_issuer(&state, &urls.tid),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
        "claims_supported": [
            "sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
            "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username",
            "name", "tid", "ver", "at_hash", "c_hash", "email"
        ],
        "kerberos_endpoint": format!("{base}/kerberos"),
        "tenant_region_scope": "NA",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    });
    discovery_reply(&document)
}

/// `GET /{tenant}/.well-known/openid-configuration` (v1: issuer `https://sts.windows.net/{tid}/`,
/// as on the access tokens the emulator issues).
pub(crate) async fn openid_configuration_v1(
    State(state): State<IdentityState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    let urls = match tenant_urls(&state, &tenant) {
        Ok(urls) => urls,
        Err(error) => return error.respond(state.authority(), &correlation_id(&headers)),
    };
    let base = format!("{}/{}", state.authority(), urls.segment);
    let document = json!({
        "token_endpoint": format!("{base}/oauth2/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/discovery/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
        "scopes_supported": ["openid"],
        "issuer": format!("https://sts.windows.net/{}/", urls.tid),
        "microsoft_multi_refresh_token": true,
        "authorization_endpoint": format!("{base}/oauth2/authorize"),
        "device_authorization_endpoint": format!("{base}/oauth2/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/oauth2/logout"),
        "claims_supported": [
            "sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
            "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "amr", "nonce", "email",
            "given_name", "family_name", "nickname"
        ],
        "check_session_iframe": format!("{base}/oauth2/checksession"),
        "userinfo_endpoint": format!("{base}/openid/userinfo"),
        "kerberos_endpoint": format!("{base}/kerberos"),
        "tenant_region_scope": "NA",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    });
    discovery_reply(&document)
}

/// `GET /{tenant}/discovery/v2.0/keys` and `GET /{tenant}/discovery/keys`: the signing key,
/// with `issuer` set to the tenant's v2 issuer on the emulator's host.
pub(crate) async fn jwks(
    State(state): State<IdentityState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    let urls = match tenant_urls(&state, &tenant) {
        Ok(urls) => urls,
        Err(error) => return error.respond(state.authority(), &correlation_id(&headers)),
    };
    discovery_reply(&state.issuer.jwks(&v2_issuer(&state, &urls.tid)))
}
