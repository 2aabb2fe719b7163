//! The fake Entra ID: what a client talks to before it ever reaches Redis.
//!
//! Three routers share one [`IdentityState`]:
//!
//! - [`authority_router`] is the authority host (`AZURE_AUTHORITY_HOST`), served over HTTPS
//!   because the Azure SDK for Rust refuses a plain-http authority: the OpenID Connect metadata
//!   documents (v1 and v2), the JWKS, and the v2 token endpoint with the client-credentials grant.
//! - [`managed_identity_router`] is App Service's managed-identity endpoint, served over plain
//!   HTTP on loopback as App Service serves `IDENTITY_ENDPOINT`: `/msi/token`, guarded by
//!   `X-IDENTITY-HEADER`.
//! - [`imds_router`] is the VM's instance metadata service, on a listener of its own (as
//!   `169.254.169.254` is another host than the app's endpoint): `/metadata/identity/oauth2/token`,
//!   guarded by `Metadata: true` only, as IMDS is.
//!
//! The managed-identity endpoints serve only the identities attached to the emulated compute
//! resource ([`Directory::attach_identity`](crate::directory::Directory::attach_identity)).
//!
//! [`serve`] runs either router on a listener, one task per connection, with or without TLS.
//! [`serve_hermetic`] runs the authority routes as `https://login.microsoftonline.com` behind
//! an HTTP `CONNECT` proxy listener (hermetic mode: apps keep the SDKs' default authority).
//!
//! Every reply is shaped as the real service shapes it (see
//! `reference/entra-and-azure-redis-wire.md`), including errors, so that the same client code
//! paths run against the emulator as against Azure. Token requests honour the fault injected
//! through [`crate::faults::Faults`] and are counted in [`crate::stats::Stats`]. Logs (at debug)
//! name the method, path, client id and outcome, never a secret, token, assertion or
//! `Authorization` value.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use redis_entra_emulator::{directory::Directory, faults::Faults, signing::TokenIssuer,
//!     stats::Stats, tls::Pki, identity::{authority_router, serve, IdentityState}};
//!
//! let directory = Arc::new(Directory::new());
//! let issuer = Arc::new(TokenIssuer::new(directory.tenant_id(), Duration::from_secs(3600))?);
//! let pki = Pki::generate()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let state = IdentityState {
//!     directory,
//!     issuer,
//!     faults: Arc::new(Faults::default()),
//!     stats: Arc::new(Stats::default()),
//!     authority: format!("https://localhost:{}", listener.local_addr()?.port()),
//!     identity_header: "a-random-value".into(),
//!     sign_in: Default::default(),
//! };
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = serve(listener, Some(pki.server_config()), authority_router(state), async {
//!     let _ = stopped.await;
//! });
//! // … use it …
//! let _ = stop.send(());
//! server.await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::directory::Directory;
use crate::faults::Faults;
use crate::signing::TokenIssuer;
use crate::stats::Stats;

mod arc;
mod assertion;
mod authorize;
mod client_auth;
mod device_code;
mod errors;
mod fault_injection;
pub(crate) mod form;
mod hermetic;
mod imds;
mod instance_discovery;
mod logging;
mod managed_identity;
mod metadata;
mod oidc_issuer;
mod resource;
mod server;
mod sign_in;
mod tenant;
mod token_endpoint;
mod user_grants;

pub use arc::{arc_router, ARC_KEY_CAPACITY, ARC_KEY_LIFETIME};
pub use hermetic::{
    hermetic_env, serve_hermetic, HermeticConfig, HERMETIC_HOSTS, MAX_PROXY_CONNECTIONS,
    MAX_REQUEST_HEAD, PUBLIC_CLOUD_AUTHORITY, REQUEST_HEAD_TIMEOUT,
};
pub use oidc_issuer::issuer_url as oidc_issuer_url;
pub use server::{serve, MAX_IDENTITY_CONNECTIONS};
pub use sign_in::{SignInState, SIGN_IN_STORE_CAPACITY};

/// Everything the identity endpoints share: the tenant, the signing key, the faults in force,
/// the counters, and where the emulator is reachable.
///
/// Cloning is cheap (reference counts and two short strings).
#[derive(Clone)]
pub struct IdentityState {
    /// The tenant and its identities.
    pub directory: Arc<Directory>,
    /// Signs the access tokens and publishes the JWKS.
    pub issuer: Arc<TokenIssuer>,
    /// The faults token requests must honour.
    pub faults: Arc<Faults>,
    /// Counters of token requests and issued tokens.
    pub stats: Arc<Stats>,
    /// The authority host as clients reach it, e.g. `https://localhost:PORT`, without a
    /// trailing slash (one is tolerated and ignored). Metadata and error URIs are built on it.
    pub authority: String,
    /// The App Service `X-IDENTITY-HEADER` value (`IDENTITY_HEADER`): a secret, redacted in
    /// `Debug` and never logged.
    pub identity_header: String,
    /// Users' sign-ins in progress (device codes, authorization codes, refresh tokens) and how
    /// they are approved: the identity server's own state, not the tenant's.
    pub sign_in: Arc<SignInState>,
}

impl IdentityState {
    /// The authority without any trailing slash.
    pub(crate) fn authority(&self) -> &str {
        self.authority.trim_end_matches('/')
    }
}

impl std::fmt::Debug for IdentityState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityState")
            .field("tenant_id", &self.directory.tenant_id())
            .field("authority", &self.authority)
            .field("identity_header", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The authority host's routes (serve them over TLS):
///
/// - `GET /{tenant}/v2.0/.well-known/openid-configuration` and
///   `GET /{tenant}/.well-known/openid-configuration` (v1);
/// - `GET /{tenant}/discovery/v2.0/keys` and `GET /{tenant}/discovery/keys` (the JWKS; `common`
///   and `organizations` are accepted as the tenant);
/// - `GET /{tenant}/discovery/instance` (MSAL's instance discovery, api-version 1.1);
/// - `POST /{tenant}/oauth2/v2.0/token` (client credentials; for users: `password`,
///   device code and `authorization_code` grants);
/// - `POST /{tenant}/oauth2/v2.0/devicecode`, `POST …/devicecode/approve` and
///   `GET …/devicecode/verify` (the device code flow);
/// - `GET` and `POST /{tenant}/oauth2/v2.0/authorize` (the sign-in page of the authorization
///   code flow with PKCE);
/// - `GET /oidc/{id}/.well-known/openid-configuration` and `GET /oidc/{id}/openid/v1/jwks`
///   (the cluster OIDC issuers registered in the directory, for workload identity).
///
/// Client credentials accept a secret or a client assertion (a certificate's, or a federated
/// credential's), verified as Entra verifies them.
pub fn authority_router(state: IdentityState) -> Router {
    Router::new()
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(metadata::openid_configuration_v2),
        )
        .route(
            "/{tenant}/.well-known/openid-configuration",
            get(metadata::openid_configuration_v1),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(metadata::jwks))
        .route("/{tenant}/discovery/keys", get(metadata::jwks))
        .route(
            "/{tenant}/discovery/instance",
            get(instance_discovery::instance),
        )
        .route("/{tenant}/oauth2/v2.0/token", post(token_endpoint::token))
        .route(
            "/{tenant}/oauth2/v2.0/authorize",
            get(authorize::page).post(authorize::submit),
        )
        .route("/{tenant}/oauth2/v2.0/devicecode", post(device_code::start))
        .route(
            "/{tenant}/oauth2/v2.0/devicecode/approve",
            post(device_code::approve),
        )
        .route(
            "/{tenant}/oauth2/v2.0/devicecode/verify",
            get(device_code::verify_page),
        )
        .route(
            "/oidc/{id}/.well-known/openid-configuration",
            get(oidc_issuer::openid_configuration),
        )
        .route("/oidc/{id}/openid/v1/jwks", get(oidc_issuer::jwks))
        .layer(axum::middleware::from_fn(logging::log_request))
        .with_state(state)
}

/// App Service's managed-identity endpoint (serve it over plain HTTP on loopback, as App
/// Service does): `GET /msi/token?api-version=2019-08-01&resource=…` with `X-IDENTITY-HEADER`
/// (App Service, Functions, Container Apps: `IDENTITY_ENDPOINT` is
/// `http://127.0.0.1:PORT/msi/token`). Nothing else: the IMDS shape, which needs no secret
/// header, is [`imds_router`]'s, on another listener.
pub fn managed_identity_router(state: IdentityState) -> Router {
    Router::new()
        .route("/msi/token", get(managed_identity::app_service_token))
        .layer(axum::middleware::from_fn(logging::log_request))
        .with_state(state)
}

/// The VM instance metadata service's managed-identity route (serve it over plain HTTP on a
/// loopback listener of its own): `GET /metadata/identity/oauth2/token?api-version=…&resource=…`
/// with `Metadata: true`.
pub fn imds_router(state: IdentityState) -> Router {
    Router::new()
        .route("/metadata/identity/oauth2/token", get(imds::imds_token))
        .layer(axum::middleware::from_fn(logging::log_request))
        .with_state(state)
}
