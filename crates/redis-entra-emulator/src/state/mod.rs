//! Identities and keys that outlive one run: a state folder (`--state DIR`) and the documented
//! well-known identities (`--well-known`).
//!
//! Without either, every start makes a new tenant, new client ids, secrets and object ids, a new
//! token signing key and a new CA. With them:
//!
//! - **`--state DIR`** keeps the CA (certificate and key), the token signing key (same `kid`,
//!   same JWKS), the client certificate of the certificate application, and the identities
//!   (tenant id; client ids, object ids and secrets of every identity; the user's sign-in
//!   details; the cache's access keys) in `DIR`. The first start with a missing or empty folder
//!   makes them and writes them there; later starts read them. A token issued by one run is
//!   accepted by the next. The server certificate is issued anew at every start, by the kept
//!   CA, for that start's `--hostname` and `--listen`, so clients that trust the CA keep
//!   trusting the emulator. What is changed at run time (regenerated access keys, identities,
//!   policies and assignments made through the admin interface) is not kept.
//! - **`--well-known`** takes the identities from the constants of [`well_known`] (documented
//!   in docs/EMULATOR.md), so test configurations can name them. They are public test values,
//!   not secrets. The keys are not well-known: without `--state` the CA and signing key are new
//!   at every start; with `--state` they are kept in the folder, next to the well-known
//!   identities. A folder made with `--well-known` must be used with it, and one made without
//!   it without it: the emulator refuses the other case rather than mixing two sets.
//!
//! The folder's files are listed in [`files`]; [`STATE_VERSION`] is the format they are in.

use std::path::Path;
use std::time::Duration;

use uuid::Uuid;

use crate::access_keys::{generate_key, AccessKeys};
use crate::app_certificate::AppCertificate;
use crate::directory::{AccessPolicy, Directory, Principal, PrincipalKind, UserAccount};
use crate::signing::{SigningKey, TokenIssuer};
use crate::tls::{CaKeys, Pki};
use crate::Error;

pub mod files;
mod identities;
pub mod well_known;

pub use files::STATE_VERSION;
pub use identities::{Identities, Ids};

/// The certificate application's display name and certificate subject.
const CERT_APP: &str = "redis-entra-cert-app";

/// The keys that `--state` keeps: the CA, the token signing key, and the certificate
/// application's certificate and key. `Debug` never shows a key.
#[derive(Debug, Clone)]
pub struct Keys {
    /// The CA certificate and key.
    pub ca: CaKeys,
    /// The token signing key.
    pub signing: SigningKey,
    /// The certificate application's certificate and key, PEM (a secret).
    pub app_certificate: AppCertificatePem,
}

/// A client certificate and its key as one PEM text. `Debug` never shows it.
#[derive(Clone)]
pub struct AppCertificatePem(pub String);

impl std::fmt::Debug for AppCertificatePem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppCertificatePem(<redacted>)")
    }
}

impl Keys {
    /// New keys.
    pub fn generate() -> Result<Self, Error> {
        Ok(Self {
            ca: CaKeys::generate()?,
            signing: SigningKey::generate()?,
            app_certificate: AppCertificatePem(AppCertificate::generate(CERT_APP)?.pem_with_key()),
        })
    }
}

/// Everything the emulator's identity side starts from: PKI, token issuer, the tenant with its
/// identities (each assigned Data Owner; the managed identities attached to the emulated
/// compute resource) and the certificate application's certificate.
#[derive(Debug)]
pub struct Tenant {
    /// The CA and this start's server certificate.
    pub pki: Pki,
    /// The token issuer.
    pub issuer: TokenIssuer,
    /// The tenant and its access policies.
    pub directory: Directory,
    /// The service principal with a client secret.
    pub service_principal: Principal,
    /// The system-assigned managed identity.
    pub managed_identity: Principal,
    /// The user-assigned managed identity.
    pub user_assigned_identity: Principal,
    /// The application that signs in with a certificate.
    pub certificate_app: Principal,
    /// The certificate application's certificate and key.
    pub app_certificate: AppCertificate,
    /// The application of the workload identity.
    pub workload_app: Principal,
}

/// Makes or reads the tenant: kept in `state` when given (see [`files::open`]), the identities
/// well-known when `well_known`, otherwise new. The server certificate names `names` (see
/// [`Pki::with_ca`]); tokens live `lifetime`.
pub fn prepare(
    state: Option<&Path>,
    well_known: bool,
    names: &[String],
    lifetime: Duration,
) -> Result<Tenant, Error> {
    let Some(dir) = state else {
        let identities = if well_known {
            Identities::well_known()
        } else {
            Identities::generate()
        };
        return build(&identities, &Keys::generate()?, names, lifetime, None);
    };
    let (identities, keys) = files::open(dir, well_known)?;
    build(&identities, &keys, names, lifetime, Some(dir))
}

impl Identities {
    /// New identities: random ids, secrets, password and access keys.
    pub fn generate() -> Self {
        let ids = || Ids {
            client_id: Uuid::new_v4().to_string(),
            object_id: Uuid::new_v4().to_string(),
        };
        Self {
            tenant_id: Uuid::new_v4().to_string(),
            service_principal: ids(),
            service_principal_secret: format!("emu~{}", Uuid::new_v4().simple()),
            managed_identity: ids(),
            user_assigned_identity: ids(),
            certificate_app: ids(),
            workload_app: ids(),
            user: ids(),
            user_name: well_known::USER_NAME.to_string(),
            user_password: format!("Emu!{}", Uuid::new_v4().simple()),
            primary_key: generate_key(),
            secondary_key: generate_key(),
        }
    }
}

/// The tenant of `identities`, with the keys `keys` (read from the folder `dir`, if given: a
/// key that cannot be used is then an [`Error::State`] naming its file).
fn build(
    identities: &Identities,
    keys: &Keys,
    names: &[String],
    lifetime: Duration,
    dir: Option<&Path>,
) -> Result<Tenant, Error> {
    let in_file = |file: &str| {
        let path = dir.map(|d| d.join(file));
        move |e: Error| match (e, path) {
            (Error::Pki(problem), Some(path)) => Error::State {
                path,
                problem: format!(
                    "is not usable ({problem}): delete the folder (or give another --state) to \
                     start over with new identities and keys"
                ),
            },
            (e, _) => e,
        }
    };
    let pki = Pki::with_ca(&keys.ca, names).map_err(in_file(files::CA_KEY_FILE))?;
    let issuer = TokenIssuer::with_key(&identities.tenant_id, &keys.signing, lifetime)
        .map_err(in_file(files::SIGNING_KEY_FILE))?;
    let app_certificate = AppCertificate::from_pem(&keys.app_certificate.0)
        .map_err(in_file(files::APP_CERTIFICATE_FILE))?;
    let directory = Directory::with_tenant(
        &identities.tenant_id,
        AccessKeys::with_keys(&identities.primary_key, &identities.secondary_key),
    );
    let owner = |p: Principal| {
        directory.assign(&p.object_id, AccessPolicy::DataOwner);
        p
    };
    let application = |name: &str, ids: &Ids, secret: Option<&str>| Principal {
        display_name: name.to_string(),
        client_id: ids.client_id.clone(),
        object_id: ids.object_id.clone(),
        kind: PrincipalKind::ServicePrincipal,
        secret: secret.map(str::to_string),
        resource_id: None,
    };
    let attached = |p: Principal| {
        directory.attach_identity(&p.object_id);
        p
    };
    // In the order the emulator has always created them: `principals()` lists them so.
    let service_principal = owner(directory.add_principal(application(
        "redis-entra-app",
        &identities.service_principal,
        Some(&identities.service_principal_secret),
    )));
    let mi = &identities.managed_identity;
    let managed_identity = owner(attached(directory.add_principal(
        Principal::managed_identity("redis-entra-site", false, &mi.client_id, &mi.object_id),
    )));
    let user = directory.add_user(
        UserAccount {
            username: identities.user_name.clone(),
            password: identities.user_password.clone(),
            object_id: identities.user.object_id.clone(),
        },
        &identities.user.client_id,
    );
    directory.assign(&user.object_id, AccessPolicy::DataOwner);
    let ua = &identities.user_assigned_identity;
    let user_assigned_identity = owner(attached(directory.add_principal(
        Principal::managed_identity("redis-entra-identity", true, &ua.client_id, &ua.object_id),
    )));
    let certificate_app =
        owner(directory.add_principal(application(CERT_APP, &identities.certificate_app, None)));
    directory.add_certificate(&certificate_app.client_id, app_certificate.uploaded.clone());
    let workload_app = owner(directory.add_principal(application(
        "redis-entra-workload-app",
        &identities.workload_app,
        None,
    )));
    Ok(Tenant {
        pki,
        issuer,
        directory,
        service_principal,
        managed_identity,
        user_assigned_identity,
        certificate_app,
        app_certificate,
        workload_app,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_secret_or_a_key() -> Result<(), Error> {
        let identities = Identities::generate();
        let keys = Keys::generate()?;
        let text = format!("{identities:?} {keys:?}");
        for secret in [
            identities.service_principal_secret.as_str(),
            identities.user_password.as_str(),
            identities.primary_key.as_str(),
            identities.secondary_key.as_str(),
            "PRIVATE KEY",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains(&identities.tenant_id), "{text}");
        assert!(text.contains(&keys.signing.kid), "{text}");
        Ok(())
    }

    #[test]
    fn a_state_file_with_a_bad_id_or_an_empty_secret_is_refused() {
        assert_eq!(Identities::well_known().check(), Ok(()));
        let mut bad = Identities::well_known();
        bad.workload_app.object_id = "not-a-guid".into();
        assert!(bad
            .check()
            .is_err_and(|e| e.contains("workload_app.object_id")));
        let mut bad = Identities::generate();
        bad.user_password = " ".into();
        assert!(bad.check().is_err_and(|e| e.contains("user_password")));
    }
}
