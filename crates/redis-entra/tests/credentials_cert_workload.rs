//! Our pure-Rust certificate credential and workload identity credential against the emulator:
//! tokens the gateway accepts, and misconfigurations whose errors name the fix.

mod common;

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use redis::AsyncCommands;
use redis_entra::config::{Auth, RedisConfig};
use redis_entra::credential::{
    client_certificate, workload_identity, AssertionAlgorithm, CertificateSource,
    ClientCertificateOptions, WorkloadIdentityOptions,
};
use redis_entra::{EntraConnection, TokenManager};
use redis_entra_emulator::app_certificate::AppCertificate;
use redis_entra_emulator::directory::TOKEN_EXCHANGE_AUDIENCE;
use redis_entra_emulator::workload::{self, ServiceAccountIssuer};
use redis_entra_emulator::{Emulator, EmulatorConfig};

use common::*;

const SCOPE: &str = "https://redis.azure.com/.default";

fn cert_options(emulator: &Emulator, certificate: CertificateSource) -> ClientCertificateOptions {
    ClientCertificateOptions::new(
        emulator.tenant_id().to_string(),
        emulator.certificate_app().client_id.clone(),
        certificate,
    )
    .with_authority_host(emulator.authority().to_string())
    .with_tls(tls(emulator))
}

fn pem_path(emulator: &Emulator) -> std::path::PathBuf {
    emulator.certificate_files().unwrap().pem.clone()
}

/// SET/GET through the gateway with `credential`; checks the username is `object_id`.
async fn set_get(emulator: &Emulator, credential: Arc<dyn TokenCredential>, object_id: &str) {
    let manager = TokenManager::new(credential, quick_options());
    let creds = manager.credentials().await.unwrap();
    assert_eq!(creds.username(), object_id);
    let mut conn = EntraConnection::connect(connect_options(emulator), manager)
        .await
        .unwrap();
    let _: () = conn.set("Az:cert", "value1").await.unwrap();
    let v: String = conn.get("Az:cert").await.unwrap();
    assert_eq!(v, "value1");
}

async fn token_error(credential: &Arc<dyn TokenCredential>) -> String {
    match credential.get_token(&[SCOPE], None).await {
        Ok(_) => panic!("a token was issued"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn certificate_pem_rs256_and_ps256_with_chain() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    let oid = emulator.certificate_app().object_id.clone();
    for (algorithm, chain) in [
        (AssertionAlgorithm::Rs256, false),
        (AssertionAlgorithm::Ps256, false),
        (AssertionAlgorithm::Ps256, true),
    ] {
        let mut options = cert_options(&emulator, CertificateSource::Path(pem_path(&emulator)));
        options.algorithm = algorithm;
        options.send_certificate_chain = chain;
        let credential = client_certificate(options).unwrap();
        let debug = format!("{credential:?}");
        assert!(!debug.contains("PRIVATE"), "{debug}");
        set_get(&emulator, credential, &oid).await;
    }
    // PEM text works too.
    let text = std::fs::read_to_string(pem_path(&emulator)).unwrap();
    let credential =
        client_certificate(cert_options(&emulator, CertificateSource::Pem(text))).unwrap();
    credential.get_token(&[SCOPE], None).await.unwrap();
    emulator.shutdown().await;
}

#[tokio::test]
async fn certificate_pkcs12_with_password_and_wrong_password() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    let files = emulator.certificate_files().unwrap().clone();
    let mut options = cert_options(&emulator, CertificateSource::Path(files.pkcs12.clone()));
    options.password = Some(files.pkcs12_password.clone());
    let credential = client_certificate(options.clone()).unwrap();
    set_get(&emulator, credential, &emulator.certificate_app().object_id).await;

    options.password = Some("not-the-password".into());
    let err = client_certificate(options).unwrap_err().to_string();
    assert!(err.contains("password is wrong"), "{err}");
    assert!(err.contains("AZURE_CLIENT_CERTIFICATE_PASSWORD"), "{err}");
    assert!(!err.contains(&files.pkcs12_password), "{err}");
    emulator.shutdown().await;
}

#[tokio::test]
async fn certificate_misconfigurations_name_the_fix() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    // Unreadable file.
    let err = client_certificate(cert_options(
        &emulator,
        CertificateSource::Path("/nonexistent/cert.pem".into()),
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    assert!(err.contains("AZURE_CLIENT_CERTIFICATE_PATH"), "{err}");

    // A certificate without its key.
    let err = client_certificate(cert_options(
        &emulator,
        CertificateSource::Pem(emulator.app_certificate().certificate_pem.clone()),
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("no private key"), "{err}");

    // A certificate the application does not know.
    let stranger = AppCertificate::generate("stranger").unwrap();
    let credential = client_certificate(cert_options(
        &emulator,
        CertificateSource::Pem(stranger.pem_with_key()),
    ))
    .unwrap();
    let err = token_error(&credential).await;
    assert!(err.contains("AADSTS700027"), "{err}");
    assert!(err.contains(&stranger.thumbprint_sha256()), "{err}");
    assert!(err.contains("upload the certificate"), "{err}");
    assert!(!err.contains("Trace ID"), "{err}");

    // The right certificate for another application: the app does not know it either.
    let mut options = cert_options(&emulator, CertificateSource::Path(pem_path(&emulator)));
    options.client_id = emulator.service_principal().client_id.clone();
    let err = token_error(&client_certificate(options).unwrap()).await;
    assert!(err.contains("AADSTS700027"), "{err}");
    emulator.shutdown().await;
}

#[tokio::test]
async fn certificate_from_the_environment() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    let env = emulator.env_for(redis_entra_emulator::IdentityKind::Certificate);
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut config = RedisConfig::from_vars(lookup).unwrap();
    assert!(
        matches!(&config.auth, Auth::ClientCertificate { client_id, .. } if *client_id == emulator.certificate_app().client_id),
        "{:?}",
        config.auth
    );
    config.tls = tls(&emulator);
    let credential = config.credential().unwrap().unwrap();
    set_get(&emulator, credential, &emulator.certificate_app().object_id).await;
    emulator.shutdown().await;
}

fn workload_options(
    emulator: &Emulator,
    token_file: std::path::PathBuf,
) -> WorkloadIdentityOptions {
    WorkloadIdentityOptions::new(
        emulator.tenant_id().to_string(),
        emulator.workload_app().client_id.clone(),
        token_file,
    )
    .with_authority_host(emulator.authority().to_string())
    .with_tls(tls(emulator))
}

#[tokio::test]
async fn workload_identity_from_the_environment() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    let env = emulator.env_for(redis_entra_emulator::IdentityKind::WorkloadIdentity);
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut config = RedisConfig::from_vars(lookup).unwrap();
    assert!(
        matches!(&config.auth, Auth::WorkloadIdentity { .. }),
        "{:?}",
        config.auth
    );
    config.tls = tls(&emulator);
    let credential = config.credential().unwrap().unwrap();
    set_get(&emulator, credential, &emulator.workload_app().object_id).await;
    emulator.shutdown().await;
}

#[tokio::test]
async fn workload_identity_refusals_name_the_fix() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    let issuer = emulator.service_account_issuer();
    let subject = workload::service_account_subject(workload::NAMESPACE, workload::SERVICE_ACCOUNT);
    let dir = tempfile_dir();
    let file = dir.join("token");
    let credential = workload_identity(workload_options(&emulator, file.clone())).unwrap();

    // Missing file.
    let err = token_error(&credential).await;
    assert!(err.contains("AZURE_FEDERATED_TOKEN_FILE"), "{err}");

    // Expired service-account token.
    std::fs::write(
        &file,
        issuer
            .mint(&subject, TOKEN_EXCHANGE_AUDIENCE, -120)
            .unwrap(),
    )
    .unwrap();
    let err = token_error(&credential).await;
    assert!(err.contains("AADSTS700024"), "{err}");

    // Another service account.
    let other = workload::service_account_subject("other", "sa");
    std::fs::write(
        &file,
        issuer.mint(&other, TOKEN_EXCHANGE_AUDIENCE, 600).unwrap(),
    )
    .unwrap();
    let err = token_error(&credential).await;
    assert!(err.contains("AADSTS70021"), "{err}");
    assert!(
        err.contains(&format!("Assertion Subject: '{other}'")),
        "{err}"
    );
    assert!(err.contains("federated credential"), "{err}");

    // Another issuer.
    let stranger = ServiceAccountIssuer::new("https://oidc.example.invalid/cluster/").unwrap();
    std::fs::write(
        &file,
        stranger
            .mint(&subject, TOKEN_EXCHANGE_AUDIENCE, 600)
            .unwrap(),
    )
    .unwrap();
    let err = token_error(&credential).await;
    assert!(err.contains("AADSTS70021"), "{err}");
    assert!(
        err.contains("Assertion Issuer: 'https://oidc.example.invalid/cluster/'"),
        "{err}"
    );

    // Right issuer and subject, wrong key: a forged token.
    let forger = ServiceAccountIssuer::new(issuer.issuer()).unwrap();
    std::fs::write(
        &file,
        forger.mint(&subject, TOKEN_EXCHANGE_AUDIENCE, 600).unwrap(),
    )
    .unwrap();
    let err = token_error(&credential).await;
    assert!(err.contains("AADSTS700027"), "{err}");

    // And a good one works with the same credential (the file changed, so it is re-read).
    std::fs::write(
        &file,
        issuer.mint(&subject, TOKEN_EXCHANGE_AUDIENCE, 600).unwrap(),
    )
    .unwrap();
    credential.get_token(&[SCOPE], None).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    emulator.shutdown().await;
}

#[tokio::test]
async fn workload_identity_follows_the_rotated_token_file() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let emulator = Emulator::start(EmulatorConfig {
        federated_token_lifetime: Duration::from_secs(3),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let file = emulator.federated_token_file().to_path_buf();
    let credential = workload_identity(workload_options(&emulator, file.clone())).unwrap();
    credential.get_token(&[SCOPE], None).await.unwrap();
    let first = std::fs::read_to_string(&file).unwrap();
    // Past the first service-account token's expiry: it has been rotated at least once, and
    // the credential sends the new one.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let second = std::fs::read_to_string(&file).unwrap();
    assert_ne!(first, second, "the emulator did not rotate the token file");
    credential.get_token(&[SCOPE], None).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    set_get(&emulator, credential, &emulator.workload_app().object_id).await;
    emulator.shutdown().await;
}

/// A fresh folder under the system temp dir.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "redis-entra-wi-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn throttling_keeps_retry_after_for_the_token_manager() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    let credential = client_certificate(cert_options(
        &emulator,
        CertificateSource::Path(pem_path(&emulator)),
    ))
    .unwrap();
    emulator.faults().set_identity(
        redis_entra_emulator::faults::IdentityFault::TooManyRequests {
            retry_after_secs: 7,
        },
    );
    let err = credential.get_token(&[SCOPE], None).await.unwrap_err();
    let azure_core::error::ErrorKind::HttpResponse {
        status,
        raw_response: Some(raw),
        ..
    } = err.kind()
    else {
        panic!("not an HTTP error with a raw response: {err:?}")
    };
    assert_eq!(u16::from(*status), 429);
    assert_eq!(
        raw.headers()
            .get_optional_str(&azure_core::http::headers::HeaderName::from_static(
                "retry-after"
            )),
        Some("7")
    );
    assert!(err.to_string().contains("AADSTS90055"), "{err}");
    emulator.shutdown().await;
}

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn no_secret_reaches_the_logs_or_debug() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let files = emulator.certificate_files().unwrap().clone();
    let mut options = cert_options(&emulator, CertificateSource::Path(files.pkcs12.clone()));
    options.password = Some(files.pkcs12_password.clone());
    let debug_options = format!("{options:?}");
    let credential = client_certificate(options).unwrap();
    let token = credential.get_token(&[SCOPE], None).await.unwrap();
    let stranger = AppCertificate::generate("stranger").unwrap();
    let bad = client_certificate(cert_options(
        &emulator,
        CertificateSource::Pem(stranger.pem_with_key()),
    ))
    .unwrap();
    let _ = bad.get_token(&[SCOPE], None).await;
    let wi = workload_identity(workload_options(
        &emulator,
        emulator.federated_token_file().to_path_buf(),
    ))
    .unwrap();
    let wi_token = wi.get_token(&[SCOPE], None).await.unwrap();
    let sa_token = std::fs::read_to_string(emulator.federated_token_file()).unwrap();
    let debug = format!(
        "{debug_options} {credential:?} {wi:?} {token:?} {:?}",
        emulator.app_certificate()
    );
    emulator.shutdown().await;
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("token request"),
        "nothing was logged:\n{logs}"
    );
    for (what, text) in [("logs", &logs), ("Debug", &debug)] {
        assert!(!text.contains("eyJ"), "{what} hold a JWT:\n{text}");
        assert!(!text.contains("PRIVATE KEY"), "{what} hold a key:\n{text}");
        assert!(
            !text.contains(&files.pkcs12_password),
            "{what} hold the password"
        );
        assert!(
            !text.contains(token.token.secret()),
            "{what} hold the token"
        );
        assert!(
            !text.contains(wi_token.token.secret()),
            "{what} hold the token"
        );
        assert!(!text.contains(sa_token.trim()), "{what} hold the SA token");
    }
}

#[tokio::test]
async fn certificate_with_an_encrypted_pem_key() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    let files = emulator.certificate_files().unwrap().clone();
    let mut options = cert_options(
        &emulator,
        CertificateSource::Path(files.encrypted_pem.clone()),
    );
    options.password = Some(files.pkcs12_password.clone());
    let credential = client_certificate(options.clone()).unwrap();
    set_get(&emulator, credential, &emulator.certificate_app().object_id).await;

    options.password = None;
    let err = client_certificate(options.clone()).unwrap_err().to_string();
    assert!(err.contains("is encrypted"), "{err}");
    assert!(err.contains("AZURE_CLIENT_CERTIFICATE_PASSWORD"), "{err}");
    options.password = Some("wrong".into());
    let err = client_certificate(options).unwrap_err().to_string();
    assert!(err.contains("password is wrong"), "{err}");
    emulator.shutdown().await;
}
