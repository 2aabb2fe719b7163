//! Trace-level logs of every sign-in flow (client and emulator, one process) hold no secret:
//! no password, client secret, device code, access or id token.
//! (Its own test binary: it installs the global subscriber.)

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use redis_entra::credential::{
    azure_cli, default_azure_credential, device_code, username_password, AzureCliOptions,
    DefaultAzureCredentialOptions, DeviceCodeOptions, DeviceCodePrompt, UsernamePasswordOptions,
};
use redis_entra_emulator::directory::REDIS_RESOURCE;

use common::*;

const SCOPE: &str = "https://redis.azure.com/.default";

#[tokio::test]
async fn trace_logs_of_every_flow_hold_no_secret() {
    let buffer = LogBuffer::install_trace();
    let emulator = emulator(Duration::from_secs(3600)).await;
    let user = emulator.user();
    let sp = emulator.service_principal().clone();
    let mut tokens: Vec<String> = Vec::new();
    let mut device_codes_seen = Vec::new();

    // Device code.
    let prompts = Arc::new(Mutex::new(Vec::<DeviceCodePrompt>::new()));
    let p = prompts.clone();
    let dc = device_code({
        let mut o = DeviceCodeOptions::default();
        o.tenant_id = emulator.tenant_id().to_string();
        o.authority_host = Some(emulator.authority().to_string());
        o.tls = tls(&emulator);
        o.prompt = Some(Arc::new(move |x: &DeviceCodePrompt| {
            p.lock().unwrap().push(x.clone())
        }));
        o
    })
    .unwrap();
    tokens.push(
        dc.get_token(&[SCOPE], None)
            .await
            .unwrap()
            .token
            .secret()
            .to_string(),
    );
    device_codes_seen.push(format!("{dc:?}"));
    // And its refresh-token path.
    dc.expire_cached_token().await;
    tokens.push(
        dc.get_token(&[SCOPE], None)
            .await
            .unwrap()
            .token
            .secret()
            .to_string(),
    );

    // Username/password, right and wrong.
    let options = {
        let mut o = UsernamePasswordOptions::default();
        o.tenant_id = emulator.tenant_id().to_string();
        o.username = user.username.clone();
        o.password = user.password.clone();
        o.authority_host = Some(emulator.authority().to_string());
        o.tls = tls(&emulator);
        o
    };
    let up = username_password(options.clone()).unwrap();
    tokens.push(
        up.get_token(&[SCOPE], None)
            .await
            .unwrap()
            .token
            .secret()
            .to_string(),
    );
    let wrong = username_password({
        let mut o = options;
        o.password = "a-wrong-password-123".into();
        o
    })
    .unwrap();
    assert!(wrong.get_token(&[SCOPE], None).await.is_err());

    // Azure CLI (fake).
    let dir = tempfile::tempdir().unwrap();
    let principal = emulator.directory().by_object_id(&user.object_id).unwrap();
    let issued = emulator.issuer().issue(&principal, REDIS_RESOURCE).unwrap();
    std::fs::write(
        dir.path().join("out.json"),
        serde_json::json!({"accessToken": issued.token, "expires_on": issued.expires_on})
            .to_string(),
    )
    .unwrap();
    let az = dir.path().join("az");
    std::fs::write(&az, "#!/bin/bash\ncat \"$(dirname \"$0\")/out.json\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cli = azure_cli({
        let mut o = AzureCliOptions::default();
        o.program = Some(az);
        o
    })
    .unwrap();
    tokens.push(
        cli.get_token(&[SCOPE], None)
            .await
            .unwrap()
            .token
            .secret()
            .to_string(),
    );

    // DefaultAzureCredential with a client secret.
    let secret = sp.secret.clone().unwrap();
    let vars: std::collections::HashMap<String, String> = [
        ("AZURE_TENANT_ID", emulator.tenant_id().to_string()),
        ("AZURE_CLIENT_ID", sp.client_id.clone()),
        ("AZURE_CLIENT_SECRET", secret.clone()),
        ("AZURE_AUTHORITY_HOST", emulator.authority().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let options = {
        let mut o = DefaultAzureCredentialOptions::default();
        o.tls = tls(&emulator);
        o.env = Some(Arc::new(move |n: &str| vars.get(n).cloned()));
        o
    };
    let debug_options = format!("{options:?}");
    let chain = default_azure_credential(options).unwrap();
    tokens.push(
        chain
            .get_token(&[SCOPE], None)
            .await
            .unwrap()
            .token
            .secret()
            .to_string(),
    );
    let debug_chain = format!("{chain:?}");

    emulator.shutdown().await;
    let logs = buffer.text();
    assert!(
        logs.contains("device code issued"),
        "the flows were logged:\n{logs}"
    );
    assert!(logs.contains("credential selected"), "{logs}");
    for (what, secret) in [
        ("user password", user.password.as_str()),
        ("wrong password", "a-wrong-password-123"),
        ("client secret", secret.as_str()),
    ] {
        assert!(!logs.contains(secret), "the {what} is in the logs");
        assert!(!debug_options.contains(secret) && !debug_chain.contains(secret));
    }
    for token in &tokens {
        assert!(!logs.contains(token.as_str()), "a token is in the logs");
    }
    assert!(!logs.contains("eyJ"), "something JWT-shaped is in the logs");
    assert!(
        !logs.contains("DAQABAAEAAA"),
        "a device code is in the logs"
    );
    assert!(!logs.contains("1.AQ"), "a refresh token is in the logs");
    assert!(logs.contains("refreshed with the refresh token"), "{logs}");
    for d in device_codes_seen {
        assert!(!d.contains("DAQABAAEAAA"));
    }
}
