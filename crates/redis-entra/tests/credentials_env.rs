//! `DefaultAzureCredential` from the real process environment: the order of its links,
//! `AZURE_TOKEN_CREDENTIALS`, and the one error that lists every link when all fail.
//! (Its own test binary, and one test at a time: it sets process-wide variables and `PATH`.)

mod common;

use std::path::Path;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use redis_entra::credential::{default_azure_credential, DefaultAzureCredentialOptions};
use redis_entra::TokenClaims;
use redis_entra_emulator::directory::REDIS_RESOURCE;
use redis_entra_emulator::{Emulator, IdentityKind};

use common::*;

const SCOPE: &str = "https://redis.azure.com/.default";

/// One test at a time: the environment is process-wide.
static ENV: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const VARS: [&str; 14] = [
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_TOKEN_CREDENTIALS",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_REDIS_CLIENTID",
];

fn clear() {
    for name in VARS {
        std::env::remove_var(name);
    }
    // The managed identity link's IMDS probe goes to a closed local port, never off the machine.
    std::env::set_var("REDIS_ENTRA_IMDS_ADDR", "127.0.0.1:9");
}

fn set_service_principal(emulator: &Emulator) {
    for (name, value) in emulator.env_for(IdentityKind::ServicePrincipal) {
        if name.starts_with("AZURE_") && !name.starts_with("AZURE_REDIS") {
            std::env::set_var(name, value);
        }
    }
}

fn set_managed_identity(emulator: &Emulator) {
    std::env::set_var("IDENTITY_ENDPOINT", emulator.managed_identity_endpoint());
    std::env::set_var("IDENTITY_HEADER", emulator.identity_header());
}

/// Puts a fake `az` on `PATH` (first) printing a token for the emulator's user.
fn fake_az_on_path(emulator: &Emulator, dir: &Path) {
    let principal = emulator
        .directory()
        .by_object_id(&emulator.user().object_id)
        .unwrap();
    let issued = emulator.issuer().issue(&principal, REDIS_RESOURCE).unwrap();
    std::fs::write(
        dir.join("out.json"),
        serde_json::json!({"accessToken": issued.token, "expires_on": issued.expires_on, "tokenType": "Bearer"})
            .to_string(),
    )
    .unwrap();
    let az = dir.join("az");
    std::fs::write(&az, "#!/bin/bash\ncat \"$(dirname \"$0\")/out.json\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::env::set_var("PATH", only_system_path(Some(dir)));
}

/// `PATH` with `first` in front, and only the system directories (no real `az`/`azd`).
fn only_system_path(first: Option<&Path>) -> String {
    let mut parts: Vec<String> = first.map(|d| d.display().to_string()).into_iter().collect();
    parts.extend(["/usr/bin".to_string(), "/bin".to_string()]);
    parts.join(":")
}

fn options(emulator: &Emulator) -> DefaultAzureCredentialOptions {
    {
        let mut o = DefaultAzureCredentialOptions::default();
        o.tls = tls(emulator);
        o.managed_identity_probe_timeout = Duration::from_millis(500);
        o
    }
}

async fn oid(credential: &dyn TokenCredential) -> String {
    let token = credential.get_token(&[SCOPE], None).await.unwrap();
    TokenClaims::from_jwt(token.token.secret())
        .unwrap()
        .oid
        .unwrap()
}

#[tokio::test]
async fn order_and_narrowing() {
    let _guard = ENV.lock().await;
    let emulator = emulator(Duration::from_secs(3600)).await;
    let bin = tempfile::tempdir().unwrap();
    let saved_path = std::env::var("PATH").unwrap_or_default();

    // The environment beats the managed identity.
    clear();
    set_service_principal(&emulator);
    set_managed_identity(&emulator);
    fake_az_on_path(&emulator, bin.path());
    let chain = default_azure_credential(options(&emulator)).unwrap();
    assert_eq!(
        oid(chain.as_ref()).await,
        emulator.service_principal().object_id
    );
    assert_eq!(chain.selected_name(), Some("EnvironmentCredential"));

    // AZURE_TOKEN_CREDENTIALS=dev skips the environment: the Azure CLI signs in.
    std::env::set_var("AZURE_TOKEN_CREDENTIALS", "dev");
    let chain = default_azure_credential(options(&emulator)).unwrap();
    assert_eq!(
        chain.link_names(),
        ["AzureCliCredential", "AzureDeveloperCliCredential"]
    );
    assert_eq!(oid(chain.as_ref()).await, emulator.user().object_id);
    assert_eq!(chain.selected_name(), Some("AzureCliCredential"));

    // =ManagedIdentityCredential: only the managed identity (the secret is still set).
    std::env::set_var("AZURE_TOKEN_CREDENTIALS", "ManagedIdentityCredential");
    std::env::remove_var("AZURE_CLIENT_ID");
    let chain = default_azure_credential(options(&emulator)).unwrap();
    assert_eq!(chain.link_names(), ["ManagedIdentityCredential"]);
    assert_eq!(
        oid(chain.as_ref()).await,
        emulator.managed_identity().object_id
    );

    // Without AZURE_TOKEN_CREDENTIALS and without environment variables, the managed identity.
    std::env::remove_var("AZURE_TOKEN_CREDENTIALS");
    std::env::remove_var("AZURE_CLIENT_SECRET");
    let chain = default_azure_credential(options(&emulator)).unwrap();
    assert_eq!(
        oid(chain.as_ref()).await,
        emulator.managed_identity().object_id
    );
    assert_eq!(chain.selected_name(), Some("ManagedIdentityCredential"));

    // An unknown value is an error listing the valid ones.
    std::env::set_var("AZURE_TOKEN_CREDENTIALS", "everything");
    let error = default_azure_credential(options(&emulator))
        .unwrap_err()
        .to_string();
    assert!(error.contains("AZURE_TOKEN_CREDENTIALS"), "{error}");
    assert!(
        error.contains("dev, prod, EnvironmentCredential"),
        "{error}"
    );

    clear();
    std::env::set_var("PATH", saved_path);
    emulator.shutdown().await;
}

#[tokio::test]
async fn when_every_link_is_unavailable_one_error_lists_them_all() {
    let _guard = ENV.lock().await;
    let emulator = emulator(Duration::from_secs(3600)).await;
    let saved_path = std::env::var("PATH").unwrap_or_default();
    clear();
    let empty = tempfile::tempdir().unwrap();
    std::env::set_var("PATH", empty.path());
    let chain = default_azure_credential(options(&emulator)).unwrap();
    let error = chain
        .get_token(&[SCOPE], None)
        .await
        .unwrap_err()
        .to_string();
    std::env::set_var("PATH", saved_path);
    for line in [
        "- EnvironmentCredential: unavailable: no AZURE_CLIENT_SECRET",
        "- WorkloadIdentityCredential: unavailable: AZURE_FEDERATED_TOKEN_FILE",
        "- ManagedIdentityCredential: unavailable: IDENTITY_ENDPOINT is not set",
        "- AzureCliCredential: unavailable: the Azure CLI (az) was not found on PATH: install the Azure CLI or sign in another way",
        "- AzureDeveloperCliCredential: unavailable: the Azure Developer CLI (azd) was not found on PATH",
    ] {
        assert!(error.contains(line), "missing {line:?} in:\n{error}");
    }
    assert!(
        error.starts_with("DefaultAzureCredential found no credential"),
        "{error}"
    );
    assert!(error.contains("AZURE_TOKEN_CREDENTIALS"), "{error}");
    assert_eq!(chain.selected_name(), None);
    emulator.shutdown().await;
}
