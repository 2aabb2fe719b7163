//! # redis-entra-emulator: a local Azure
//!
//! A fake Microsoft Entra ID and a Redis gateway that enforces Azure Cache for Redis' rules in
//! front of a real `redis-server`, so that Entra ID authentication can be tested without Azure.
//!
//! - [`identity`]: the fake Entra ID over HTTPS: OIDC metadata, JWKS, the v2 token endpoint
//!   (client credentials) and an App Service managed-identity endpoint.
//! - [`gateway`]: a TLS listener that speaks RESP2/RESP3, validates `AUTH <oid> <token>` against
//!   the JWKS, closes connections whose token expired, and forwards everything else untouched.
//! - [`backend`]: the `redis-server` behind the gateway, with one ACL user per access policy.
//! - [`cluster`]: cluster mode, N `redis-server` nodes each behind its own gateway, announcing
//!   the gateways' endpoints as Azure Managed Redis' OSS cluster policy does.
//! - [`app_certificate`]: the client certificate of "an application with a certificate"
//!   (PEM and PKCS#12 files, and the public part the directory keeps).
//! - [`workload`]: the cluster OIDC issuer of AKS workload identity, which signs the projected
//!   service-account token the emulator keeps fresh in `AZURE_FEDERATED_TOKEN_FILE`.
//! - [`directory`]: the tenant's identities and the cache's access policies, assignments and
//!   [`access_keys`].
//! - [`state`]: identities and keys kept across restarts (`--state DIR`), and the documented
//!   well-known identities (`--well-known`).
//! - [`profile`]: what changes when the emulator plays Azure Managed Redis (`--profile
//!   managed-redis`): its port, access-policy model, access-key switch and cluster policies.
//! - [`admin`]: the control plane over HTTP (identities, policies, keys, token lifetime, minted
//!   tokens, faults), behind a bearer key.
//! - [`Emulator`]: all of it started together, with an env file an unmodified Azure SDK sample
//!   can use.
//!
//! ```no_run
//! # async fn run() -> Result<(), redis_entra_emulator::Error> {
//! use redis_entra_emulator::{Emulator, EmulatorConfig};
//! let emulator = Emulator::start(EmulatorConfig::default()).await?;
//! for (name, value) in emulator.env() {
//!     println!("export {name}={value}");
//! }
//! emulator.shutdown().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod access_keys;
pub mod admin;
pub mod app_certificate;
pub mod backend;
pub mod cluster;
pub mod directory;
mod emulator;
pub mod env_file;
mod error;
pub mod faults;
pub mod gateway;
pub mod identity;
pub mod profile;
pub mod server_program;
pub mod signing;
pub mod state;
pub mod stats;
pub mod tls;
pub mod unsupported;
pub mod workload;

#[doc(hidden)]
pub mod fuzzing {
    //! Entry points for the `cargo fuzz` targets in `fuzz/` (not a stable API). They call the
    //! same code the identity server runs, unchanged.

    use axum::body::Body;
    use axum::http::{header, HeaderMap, HeaderValue};

    use crate::identity::form::{read_form, FormParams};

    /// Decodes `body` as an urlencoded form, as the identity endpoints do, and returns the
    /// value `FormParams::get` gives for each of `names`.
    pub fn parse_form(body: &[u8], names: &[&str]) -> Vec<Option<String>> {
        let form = FormParams::parse(body);
        names
            .iter()
            .map(|n| form.get(n).map(str::to_owned))
            .collect()
    }

    /// Runs the token endpoint's body reader (content-type check, size bound, UTF-8 check,
    /// decoding) over `body` sent with `content_type`; `None` when it refuses the request.
    pub fn read_form_body(
        content_type: Option<&[u8]>,
        body: Vec<u8>,
        names: &[&str],
    ) -> Option<Vec<Option<String>>> {
        let mut headers = HeaderMap::new();
        if let Some(ct) = content_type.and_then(|ct| HeaderValue::from_bytes(ct).ok()) {
            headers.insert(header::CONTENT_TYPE, ct);
        }
        let form = futures::executor::block_on(read_form(&headers, Body::from(body))).ok()?;
        Some(
            names
                .iter()
                .map(|n| form.get(n).map(str::to_owned))
                .collect(),
        )
    }
}

pub use access_keys::KeyType;
pub use emulator::{Emulator, EmulatorConfig, IdentityKind};
pub use error::Error;
pub use server_program::ServerProgram;
