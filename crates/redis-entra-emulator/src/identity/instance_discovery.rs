//! Instance discovery: `GET /{tenant}/discovery/instance?api-version=1.1&authorization_endpoint=…`,
//! which MSAL calls (on `login.microsoftonline.com`, whatever the authority) before it trusts an
//! authority host it does not know, unless told `disable_instance_discovery`.
//!
//! The reply is Entra's shape: `tenant_discovery_endpoint` (the OpenID Connect metadata of the
//! tenant named in `authorization_endpoint`, v2 when that endpoint is a v2 one) and `metadata`,
//! the clouds' host aliases. The hosts are Entra's; when the emulator serves on a host of its own
//! (`https://localhost:PORT`), that host is listed too, as a cloud of one host, so that MSAL
//! accepts it. An `authorization_endpoint` on any other host gets Entra's 400 `invalid_instance`
//! (AADSTS50049).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use super::errors::{correlation_id, json_reply, EntraError};
use super::IdentityState;

/// The public cloud's and the sovereign clouds' host aliases, as Entra lists them.
const CLOUDS: &[(&str, &str, &[&str])] = &[
    (
        "login.microsoftonline.com",
        "login.windows.net",
        &[
            "login.microsoftonline.com",
            "login.windows.net",
            "login.microsoft.com",
            "sts.windows.net",
        ],
    ),
    (
        "login.partner.microsoftonline.cn",
        "login.partner.microsoftonline.cn",
        &["login.partner.microsoftonline.cn", "login.chinacloudapi.cn"],
    ),
    (
        "login.microsoftonline.de",
        "login.microsoftonline.de",
        &["login.microsoftonline.de"],
    ),
    (
        "login.microsoftonline.us",
        "login.microsoftonline.us",
        &["login.microsoftonline.us", "login.usgovcloudapi.net"],
    ),
    (
        "login-us.microsoftonline.com",
        "login-us.microsoftonline.com",
        &["login-us.microsoftonline.com"],
    ),
];

/// The query of an instance discovery request.
#[derive(Debug, Deserialize)]
pub(crate) struct DiscoveryQuery {
    /// The authority's authorization endpoint, `https://HOST/{tenant}/oauth2/v2.0/authorize`.
    authorization_endpoint: Option<String>,
}

/// The host (with its port, when not 443) of an `https://` URL.
fn https_host(url: &url::Url) -> Option<String> {
    if url.scheme() != "https" {
        return None;
    }
    let host = url.host_str()?.to_ascii_lowercase();
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

/// `GET /{tenant}/discovery/instance`.
pub(crate) async fn instance(
    State(state): State<IdentityState>,
    Query(query): Query<DiscoveryQuery>,
    headers: HeaderMap,
) -> Response {
    let authority = state.authority();
    let correlation = correlation_id(&headers);
    let Some(endpoint) = query.authorization_endpoint.as_deref() else {
        return EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90014,
            "The required field 'authorization_endpoint' is missing from the request.",
        )
        .respond(authority, &correlation);
    };
    let own_host = url::Url::parse(authority).ok().and_then(|u| https_host(&u));
    let parsed = url::Url::parse(endpoint).ok();
    let known = parsed.as_ref().and_then(https_host).filter(|host| {
        Some(host) == own_host.as_ref()
            || CLOUDS
                .iter()
                .any(|(_, _, aliases)| aliases.contains(&host.as_str()))
    });
    let (Some(url), Some(_)) = (parsed.as_ref(), known) else {
        return EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_instance",
            50049,
            "Unknown or invalid instance.",
        )
        .respond(authority, &correlation);
    };
    let mut segments = url.path_segments().into_iter().flatten();
    let tenant = segments
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("common");
    let v2 = url.path().contains("/v2.0/");
    let document = if v2 {
        format!("{authority}/{tenant}/v2.0/.well-known/openid-configuration")
    } else {
        format!("{authority}/{tenant}/.well-known/openid-configuration")
    };
    let mut metadata: Vec<Value> = CLOUDS
        .iter()
        .map(|(network, cache, aliases)| {
            json!({"preferred_network": network, "preferred_cache": cache, "aliases": aliases})
        })
        .collect();
    if let Some(own) = own_host.filter(|h| !CLOUDS.iter().any(|(_, _, a)| a.contains(&h.as_str())))
    {
        metadata.push(json!({"preferred_network": own, "preferred_cache": own, "aliases": [own]}));
    }
    json_reply(
        StatusCode::OK,
        &json!({
            "tenant_discovery_endpoint": document,
            "api-version": "1.1",
            "metadata": metadata,
        }),
    )
}
