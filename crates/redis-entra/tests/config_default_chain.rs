//! One rule everywhere: a configuration that names no identity (only the cache's host, as
//! Service Connector's system-assigned row or a developer's laptop has it) signs in the way the
//! Azure SDKs' `DefaultAzureCredential` does: `RedisConfig::connect` and `credential::from_env`
//! alike. Here the chain finds a developer's `az login` (a fake `az` on `PATH`).
//!
//! Its own test binary: it changes `PATH` for the process.

mod common;

use std::time::Duration;

use redis::AsyncCommands;
use redis_entra::config::RedisConfig;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_naming_no_identity_signs_in_like_the_sdks_default_chain() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    // A signed-in Azure CLI: prints a token for the emulator's user.
    let dir = tempfile::tempdir().unwrap();
    let principal = emulator
        .directory()
        .by_object_id(&emulator.user().object_id)
        .unwrap();
    let issued = emulator
        .issuer()
        .issue(&principal, "https://redis.azure.com")
        .unwrap();
    std::fs::write(
        dir.path().join("out.json"),
        serde_json::json!({
            "accessToken": issued.token, "expires_on": issued.expires_on,
            "tenant": emulator.tenant_id(), "tokenType": "Bearer"
        })
        .to_string(),
    )
    .unwrap();
    let az = dir.path().join("az");
    std::fs::write(&az, "#!/bin/sh\ncat \"$(dirname \"$0\")/out.json\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::env::set_var("PATH", path);
    // Nothing here is a managed identity, and IMDS is not reachable.
    for name in [
        "IDENTITY_ENDPOINT",
        "MSI_ENDPOINT",
        "AZURE_CLIENT_ID",
        "AZURE_TOKEN_CREDENTIALS",
    ] {
        std::env::remove_var(name);
    }
    std::env::set_var("REDIS_ENTRA_IMDS_ADDR", "127.0.0.1:9");

    let port = emulator.gateway_addr().port().to_string();
    let mut config = RedisConfig::from_vars(|name| match name {
        "AZURE_REDIS_HOST" => Some("localhost".to_string()),
        "AZURE_REDIS_PORT" => Some(port.clone()),
        _ => None,
    })
    .unwrap();
    config.tls = tls(&emulator);
    let mut conn = tokio::time::timeout(Duration::from_secs(30), config.connect())
        .await
        .expect("connects within 30 s")
        .expect("the default chain signs in with the Azure CLI's account");
    let _: () = conn.set("chain:key", "v").await.unwrap();
    let v: String = conn.get("chain:key").await.unwrap();
    assert_eq!(v, "v");
    assert_eq!(
        conn.manager().current().unwrap().username(),
        emulator.user().object_id
    );
    drop(conn);
    emulator.shutdown().await;
}
