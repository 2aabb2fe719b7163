//! Our sign-in credentials against the emulator: device code, username/password, the Azure
//! CLI and the Azure Developer CLI (fake `az`/`azd` scripts printing tokens the emulator
//! minted), and the chain machinery. Nothing here touches process-wide environment variables
//! (see `credentials_env.rs` for `DefaultAzureCredential` from the environment).

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use redis::AsyncCommands;
use redis_entra::credential::{
    azure_cli, azure_developer_cli, default_azure_credential, device_code, environment,
    username_password, AzureCliOptions, AzureDeveloperCliOptions, DefaultAzureCredentialOptions,
    DeviceCodeOptions, DeviceCodePrompt, EnvLookup, EnvironmentOptions, UsernamePasswordOptions,
};
use redis_entra::{EntraConnection, TokenManager};
use redis_entra_emulator::directory::REDIS_RESOURCE;
use redis_entra_emulator::Emulator;

use common::*;

const SCOPE: &str = "https://redis.azure.com/.default";

/// SET/GET through the gateway with this credential; returns the username used.
async fn set_get(emulator: &Emulator, credential: Arc<dyn TokenCredential>, key: &str) -> String {
    let manager = TokenManager::new(credential, quick_options());
    let creds = manager.credentials().await.unwrap();
    let username = creds.username().to_string();
    let mut conn = EntraConnection::connect(connect_options(emulator), manager)
        .await
        .unwrap();
    let _: () = conn.set(key, "value").await.unwrap();
    let v: String = conn.get(key).await.unwrap();
    assert_eq!(v, "value");
    username
}

fn device_code_options(
    emulator: &Emulator,
    prompts: Arc<Mutex<Vec<DeviceCodePrompt>>>,
) -> DeviceCodeOptions {
    {
        let mut o = DeviceCodeOptions::default();
        o.tenant_id = emulator.tenant_id().to_string();
        o.authority_host = Some(emulator.authority().to_string());
        o.tls = tls(emulator);
        o.prompt = Some(Arc::new(move |p: &DeviceCodePrompt| {
            prompts.lock().unwrap().push(p.clone())
        }));
        o
    }
}

#[tokio::test]
async fn device_code_signs_in_the_user_and_the_gateway_accepts_the_token() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    let prompts = Arc::new(Mutex::new(Vec::new()));
    let credential = device_code(device_code_options(&emulator, prompts.clone())).unwrap();
    let username = set_get(&emulator, credential.clone(), "dc:key").await;
    assert_eq!(username, emulator.user().object_id);
    {
        let prompts = prompts.lock().unwrap();
        assert_eq!(prompts.len(), 1, "the user was prompted once");
        assert!(prompts[0].message.contains(&prompts[0].user_code));
        assert!(prompts[0]
            .verification_uri
            .starts_with(emulator.authority()));
    }
    // A second call reuses the token: no second prompt.
    let first = credential.get_token(&[SCOPE], None).await.unwrap();
    assert_eq!(prompts.lock().unwrap().len(), 1);
    // Once it is nearly spent, the refresh token gets a new one: still no second prompt.
    credential.expire_cached_token().await;
    let refreshed = credential.get_token(&[SCOPE], None).await.unwrap();
    assert_ne!(refreshed.token.secret(), first.token.secret());
    assert_eq!(
        prompts.lock().unwrap().len(),
        1,
        "refreshing did not prompt"
    );
    // A refused refresh token (here: the emulator forgot it) means signing in again.
    emulator.sign_in().forget_refresh_tokens();
    credential.expire_cached_token().await;
    credential.get_token(&[SCOPE], None).await.unwrap();
    assert_eq!(
        prompts.lock().unwrap().len(),
        2,
        "a refused refresh token prompts again"
    );
    emulator.shutdown().await;
}

/// An HTTP client that trusts the emulator.
fn http(emulator: &Emulator) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls(emulator).client_config().unwrap())
        .build()
        .unwrap()
}

/// Posts the approval endpoint the way the verification page does.
async fn answer(emulator: &Emulator, form: &[(&str, &str)]) -> reqwest::Response {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter())
        .finish();
    http(emulator)
        .post(format!(
            "{}/{}/oauth2/v2.0/devicecode/approve",
            emulator.authority(),
            emulator.tenant_id()
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn device_code_approved_through_the_approval_endpoint_with_the_password() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    emulator.sign_in().set_auto_approve(false);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<DeviceCodePrompt>();
    let mut options = device_code_options(&emulator, Arc::new(Mutex::new(Vec::new())));
    options.prompt = Some(Arc::new(move |p: &DeviceCodePrompt| {
        let _ = tx.send(p.clone());
    }));
    let credential = device_code(options).unwrap();
    let task = tokio::spawn(async move { credential.get_token(&[SCOPE], None).await });
    let prompt = rx.recv().await.unwrap();
    let user = emulator.user();
    // A wrong password is refused, and the code stays pending.
    let refused = answer(
        &emulator,
        &[
            ("user_code", &prompt.user_code),
            ("username", &user.username),
            ("password", "nope"),
        ],
    )
    .await;
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("AADSTS50126"));
    let ok = answer(
        &emulator,
        &[
            ("user_code", &prompt.user_code),
            ("username", &user.username),
            ("password", &user.password),
        ],
    )
    .await;
    assert_eq!(ok.status(), 200);
    let token = task.await.unwrap().unwrap();
    let claims = redis_entra::TokenClaims::from_jwt(token.token.secret()).unwrap();
    assert_eq!(claims.oid.as_deref(), Some(user.object_id.as_str()));
    assert_eq!(claims.user_name.as_deref(), Some(user.username.as_str()));
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_declined_device_code_says_so_and_what_to_do() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    emulator.sign_in().set_auto_approve(false);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<DeviceCodePrompt>();
    let mut options = device_code_options(&emulator, Arc::new(Mutex::new(Vec::new())));
    options.prompt = Some(Arc::new(move |p: &DeviceCodePrompt| {
        let _ = tx.send(p.clone());
    }));
    let credential = device_code(options).unwrap();
    let task = tokio::spawn(async move { credential.get_token(&[SCOPE], None).await });
    let prompt = rx.recv().await.unwrap();
    let reply = answer(
        &emulator,
        &[("user_code", &prompt.user_code), ("action", "decline")],
    )
    .await;
    assert_eq!(reply.status(), 200);
    let error = task.await.unwrap().unwrap_err().to_string();
    assert!(error.contains("declined"), "{error}");
    assert!(error.contains("approve the request"), "{error}");
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_device_code_nobody_answers_times_out_with_a_clear_error() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    emulator.sign_in().set_auto_approve(false);
    let mut options = device_code_options(&emulator, Arc::new(Mutex::new(Vec::new())));
    options.timeout = Some(Duration::from_secs(3));
    let error = device_code(options)
        .unwrap()
        .get_token(&[SCOPE], None)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("in time"), "{error}");
    emulator.shutdown().await;
}

fn password_options(emulator: &Emulator, password: &str) -> UsernamePasswordOptions {
    {
        let mut o = UsernamePasswordOptions::default();
        o.tenant_id = emulator.tenant_id().to_string();
        o.username = emulator.user().username;
        o.password = password.to_string();
        o.authority_host = Some(emulator.authority().to_string());
        o.tls = tls(emulator);
        o
    }
}

#[tokio::test]
async fn username_password_signs_in_and_the_gateway_accepts_the_token() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    let credential =
        username_password(password_options(&emulator, &emulator.user().password)).unwrap();
    assert!(!format!("{credential:?}").contains(&emulator.user().password));
    let username = set_get(&emulator, credential, "pw:key").await;
    assert_eq!(username, emulator.user().object_id);
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_wrong_password_is_aadsts50126_and_names_the_fix() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    let credential = username_password(password_options(&emulator, "wrong-password")).unwrap();
    let error = credential
        .get_token(&[SCOPE], None)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("AADSTS50126"), "{error}");
    assert!(error.contains("invalid_grant"), "{error}");
    assert!(
        error.contains("check AZURE_USERNAME and AZURE_PASSWORD"),
        "{error}"
    );
    assert!(!error.contains("wrong-password"), "{error}");
    emulator.shutdown().await;
}

/// A directory holding a fake `program` (bash) that records its arguments in `args`, fails
/// with `fail`'s text when that file exists, and prints `out.json` otherwise.
fn fake_cli(program: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(program);
    std::fs::write(
        &path,
        "#!/bin/bash\ndir=\"$(cd \"$(dirname \"$0\")\" && pwd)\"\nprintf '%s\\n' \"$@\" > \"$dir/args\"\nif [ -f \"$dir/fail\" ]; then cat \"$dir/fail\" >&2; exit 1; fi\ncat \"$dir/out.json\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, path)
}

/// A token for the emulator's user, as the emulator would issue it.
fn user_token(emulator: &Emulator) -> (String, u64) {
    let principal = emulator
        .directory()
        .by_object_id(&emulator.user().object_id)
        .unwrap();
    let issued = emulator.issuer().issue(&principal, REDIS_RESOURCE).unwrap();
    (issued.token, issued.expires_on)
}

fn args(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("args"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn azure_cli_token_is_accepted_by_the_gateway() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    let (dir, program) = fake_cli("az");
    let (token, exp) = user_token(&emulator);
    std::fs::write(
        dir.path().join("out.json"),
        serde_json::json!({
            "accessToken": token, "expiresOn": "2030-01-02 03:04:05.000000", "expires_on": exp,
            "subscription": "00000000-0000-0000-0000-000000000000",
            "tenant": emulator.tenant_id(), "tokenType": "Bearer"
        })
        .to_string(),
    )
    .unwrap();
    let credential = azure_cli({
        let mut o = AzureCliOptions::default();
        o.tenant_id = Some(emulator.tenant_id().to_string());
        o.program = Some(program);
        o
    })
    .unwrap();
    let got = credential.get_token(&[SCOPE], None).await.unwrap();
    assert_eq!(got.expires_on.unix_timestamp() as u64, exp);
    assert_eq!(
        args(dir.path()),
        [
            "account",
            "get-access-token",
            "-o",
            "json",
            "--scope",
            SCOPE,
            "--tenant",
            emulator.tenant_id()
        ]
    );
    let username = set_get(&emulator, credential, "az:key").await;
    assert_eq!(username, emulator.user().object_id);
    emulator.shutdown().await;
}

#[tokio::test]
async fn azure_cli_without_expires_on_uses_the_token_exp() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    let (dir, program) = fake_cli("az");
    let (token, exp) = user_token(&emulator);
    std::fs::write(
        dir.path().join("out.json"),
        serde_json::json!({"accessToken": token, "expiresOn": "2030-01-02 03:04:05.000000", "tokenType": "Bearer"}).to_string(),
    )
    .unwrap();
    let credential = azure_cli({
        let mut o = AzureCliOptions::default();
        o.program = Some(program);
        o
    })
    .unwrap();
    let got = credential.get_token(&[SCOPE], None).await.unwrap();
    assert_eq!(got.expires_on.unix_timestamp() as u64, exp);
    emulator.shutdown().await;
}

#[tokio::test]
async fn azure_cli_missing_or_signed_out_names_the_fix() {
    let missing = azure_cli({
        let mut o = AzureCliOptions::default();
        o.program = Some("/nonexistent/bin/az".into());
        o
    })
    .unwrap()
    .get_token(&[SCOPE], None)
    .await
    .unwrap_err();
    assert!(redis_entra::credential::chain::is_unavailable(&missing));
    assert!(
        missing
            .to_string()
            .contains("install the Azure CLI or sign in another way"),
        "{missing}"
    );

    let (dir, program) = fake_cli("az");
    std::fs::write(
        dir.path().join("fail"),
        "ERROR: Please run 'az login' to setup account.\n",
    )
    .unwrap();
    let signed_out = azure_cli({
        let mut o = AzureCliOptions::default();
        o.program = Some(program.clone());
        o
    })
    .unwrap()
    .get_token(&[SCOPE], None)
    .await
    .unwrap_err();
    assert!(
        signed_out.to_string().contains("run `az login`"),
        "{signed_out}"
    );

    std::fs::write(dir.path().join("fail"), "ERROR: something else broke\n").unwrap();
    let other = azure_cli({
        let mut o = AzureCliOptions::default();
        o.program = Some(program);
        o
    })
    .unwrap()
    .get_token(&[SCOPE], None)
    .await
    .unwrap_err();
    assert!(!redis_entra::credential::chain::is_unavailable(&other));
    assert!(
        other.to_string().contains("something else broke"),
        "{other}"
    );
}

#[tokio::test]
async fn azure_cli_that_hangs_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("az");
    std::fs::write(&path, "#!/bin/bash\nsleep 30\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let error = azure_cli({
        let mut o = AzureCliOptions::default();
        o.program = Some(path);
        o.timeout = Duration::from_millis(500);
        o
    })
    .unwrap()
    .get_token(&[SCOPE], None)
    .await
    .unwrap_err();
    assert!(error.to_string().contains("did not answer"), "{error}");
}

#[tokio::test]
async fn azure_developer_cli_token_is_accepted_by_the_gateway() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    let (dir, program) = fake_cli("azd");
    let (token, exp) = user_token(&emulator);
    let expires = time::OffsetDateTime::from_unix_timestamp(exp as i64)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    std::fs::write(
        dir.path().join("out.json"),
        serde_json::json!({"token": token, "expiresOn": expires}).to_string(),
    )
    .unwrap();
    let credential = azure_developer_cli({
        let mut o = AzureDeveloperCliOptions::default();
        o.tenant_id = Some(emulator.tenant_id().to_string());
        o.program = Some(program.clone());
        o
    })
    .unwrap();
    let got = credential.get_token(&[SCOPE], None).await.unwrap();
    assert_eq!(got.expires_on.unix_timestamp() as u64, exp);
    assert_eq!(
        args(dir.path()),
        [
            "auth",
            "token",
            "-o",
            "json",
            "--no-prompt",
            "--scope",
            SCOPE,
            "--tenant-id",
            emulator.tenant_id()
        ]
    );
    let username = set_get(&emulator, credential, "azd:key").await;
    assert_eq!(username, emulator.user().object_id);

    std::fs::write(
        dir.path().join("fail"),
        "{\"type\":\"consoleMessage\",\"timestamp\":\"2026-01-01T00:00:00Z\",\"data\":{\"message\":\"ERROR: not logged in, run `azd auth login` to login\"}}\n",
    )
    .unwrap();
    let signed_out = azure_developer_cli({
        let mut o = AzureDeveloperCliOptions::default();
        o.program = Some(program);
        o
    })
    .unwrap()
    .get_token(&[SCOPE], None)
    .await
    .unwrap_err();
    assert!(
        signed_out.to_string().contains("run `azd auth login`"),
        "{signed_out}"
    );
    let missing = azure_developer_cli({
        let mut o = AzureDeveloperCliOptions::default();
        o.program = Some("/nonexistent/azd".into());
        o
    })
    .unwrap()
    .get_token(&[SCOPE], None)
    .await
    .unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("install the Azure Developer CLI"),
        "{missing}"
    );
    emulator.shutdown().await;
}

/// A lookup over fixed variables.
fn vars(pairs: &[(&str, &str)]) -> EnvLookup {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Arc::new(move |name: &str| map.get(name).cloned())
}

#[tokio::test]
async fn environment_credential_reads_a_username_and_password() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    let user = emulator.user();
    let credential = environment({
        let mut o = EnvironmentOptions::default();
        o.tls = tls(&emulator);
        o.env = Some(vars(&[
            ("AZURE_TENANT_ID", emulator.tenant_id()),
            ("AZURE_USERNAME", &user.username),
            ("AZURE_PASSWORD", &user.password),
            ("AZURE_AUTHORITY_HOST", emulator.authority()),
        ]));
        o
    });
    assert_eq!(credential.describe(), "username and password");
    let username = set_get(&emulator, credential, "env-user:key").await;
    assert_eq!(username, user.object_id);
    emulator.shutdown().await;
}

#[tokio::test]
async fn environment_credential_names_missing_variables() {
    let credential = environment({
        let mut o = EnvironmentOptions::default();
        o.env = Some(vars(&[("AZURE_CLIENT_SECRET", "s3cret-value")]));
        o
    });
    let error = credential.get_token(&[SCOPE], None).await.unwrap_err();
    assert!(redis_entra::credential::chain::is_unavailable(&error));
    let text = error.to_string();
    assert!(
        text.contains("AZURE_TENANT_ID and AZURE_CLIENT_ID are not"),
        "{text}"
    );
    assert!(!text.contains("s3cret-value"));
}

#[tokio::test]
async fn default_chain_uses_injected_environment_and_remembers_the_winner() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    let sp = emulator.service_principal();
    let chain = default_azure_credential({
        let mut o = DefaultAzureCredentialOptions::default();
        o.tls = tls(&emulator);
        o.env = Some(vars(&[
            ("AZURE_TENANT_ID", emulator.tenant_id()),
            ("AZURE_CLIENT_ID", &sp.client_id),
            ("AZURE_CLIENT_SECRET", sp.secret.as_deref().unwrap()),
            ("AZURE_AUTHORITY_HOST", emulator.authority()),
        ]));
        o
    })
    .unwrap();
    assert_eq!(chain.selected_name(), None);
    let username = set_get(&emulator, chain.clone(), "dac:key").await;
    assert_eq!(username, sp.object_id);
    assert_eq!(chain.selected_name(), Some("EnvironmentCredential"));
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_configured_link_that_fails_stops_the_chain() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    let sp = emulator.service_principal();
    let chain = default_azure_credential({
        let mut o = DefaultAzureCredentialOptions::default();
        o.tls = tls(&emulator);
        o.env = Some(vars(&[
            ("AZURE_TENANT_ID", emulator.tenant_id()),
            ("AZURE_CLIENT_ID", &sp.client_id),
            ("AZURE_CLIENT_SECRET", "not-the-secret"),
            ("AZURE_AUTHORITY_HOST", emulator.authority()),
        ]));
        o
    })
    .unwrap();
    let error = chain
        .get_token(&[SCOPE], None)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("EnvironmentCredential: failed"), "{error}");
    assert!(error.contains("stopped at the first credential"), "{error}");
    assert!(!error.contains("AzureCliCredential"), "{error}");
    assert!(!error.contains("not-the-secret"), "{error}");
    emulator.shutdown().await;
}

#[test]
fn token_credentials_values() {
    use redis_entra::credential::selected_links;
    assert_eq!(
        selected_links(Some("dev")).unwrap(),
        ["AzureCliCredential", "AzureDeveloperCliCredential"]
    );
    assert_eq!(
        selected_links(Some("prod")).unwrap(),
        [
            "EnvironmentCredential",
            "WorkloadIdentityCredential",
            "ManagedIdentityCredential"
        ]
    );
    assert_eq!(
        selected_links(Some("managedidentitycredential")).unwrap(),
        ["ManagedIdentityCredential"]
    );
    assert_eq!(selected_links(None).unwrap().len(), 5);
    let error = selected_links(Some("laptop")).unwrap_err().to_string();
    for valid in [
        "dev",
        "prod",
        "EnvironmentCredential",
        "AzureDeveloperCliCredential",
    ] {
        assert!(error.contains(valid), "{error}");
    }
}
