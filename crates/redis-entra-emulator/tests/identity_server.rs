//! The fake Entra ID's guards (issue 11, "Identity server"): device-code approval needs the
//! user's credentials; IMDS on its own listener, serving only the identities attached to the
//! emulated compute resource; the per-request stores bounded.

use anyhow::{Context, Result};
use redis_entra_emulator::identity::{ARC_KEY_CAPACITY, SIGN_IN_STORE_CAPACITY};
use redis_entra_emulator::{Emulator, EmulatorConfig};
use serde_json::Value;

/// The Azure CLI's client id: a public client every tenant knows.
const AZURE_CLI: &str = "04b07795-8ddb-461a-bbee-02f9e1bf7b46";
const SCOPE: &str = "https://redis.azure.com/.default";

async fn start() -> Result<Emulator> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    Ok(Emulator::start(EmulatorConfig::default()).await?)
}

fn https(emu: &Emulator) -> Result<reqwest::Client> {
    let ca = reqwest::Certificate::from_pem(emu.ca_pem().as_bytes())?;
    Ok(reqwest::Client::builder().tls_certs_only([ca]).build()?)
}

async fn json_of(reply: reqwest::Response) -> Result<(u16, Value)> {
    let status = reply.status().as_u16();
    let body = reply.bytes().await?;
    let value = serde_json::from_slice(&body)
        .with_context(|| format!("{status}: {}", String::from_utf8_lossy(&body)))?;
    Ok((status, value))
}

fn oauth(emu: &Emulator, endpoint: &str) -> String {
    format!(
        "{}/{}/oauth2/v2.0/{endpoint}",
        emu.authority(),
        emu.tenant_id()
    )
}

async fn post_form(
    client: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
) -> Result<(u16, Value)> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter())
        .finish();
    json_of(
        client
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await?,
    )
    .await
}

/// A new device code: (device_code, user_code).
async fn device_code(emu: &Emulator, client: &reqwest::Client) -> Result<(String, String)> {
    let (status, body) = post_form(
        client,
        &oauth(emu, "devicecode"),
        &[("client_id", AZURE_CLI), ("scope", SCOPE)],
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    Ok((
        body["device_code"].as_str().unwrap_or_default().to_string(),
        body["user_code"].as_str().unwrap_or_default().to_string(),
    ))
}

/// Polls the token endpoint once with a device code, after the polling interval the code
/// asked for (a client polling sooner gets `slow_down`, as RFC 8628 says).
async fn poll(emu: &Emulator, client: &reqwest::Client, code: &str) -> Result<(u16, Value)> {
    tokio::time::sleep(emu.sign_in().device_code_interval()).await;
    post_form(
        client,
        &oauth(emu, "token"),
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", AZURE_CLI),
            ("device_code", code),
        ],
    )
    .await
}

#[tokio::test]
async fn device_code_approval_needs_the_users_credentials() -> Result<()> {
    let emu = start().await?;
    let client = https(&emu)?;
    let user = emu.user();
    emu.sign_in().set_auto_approve(false);
    let (code, user_code) = device_code(&emu, &client).await?;
    let approve = oauth(&emu, "devicecode/approve");

    // No credentials, a username alone, a wrong password: refused, the code stays pending.
    let (status, body) = post_form(&client, &approve, &[("user_code", &user_code)]).await?;
    assert_eq!(status, 400, "{body}");
    assert!(body["error_description"]
        .as_str()
        .is_some_and(|d| d.starts_with("AADSTS900144") && d.contains("'username'")));
    let (status, body) = post_form(
        &client,
        &approve,
        &[("user_code", &user_code), ("username", &user.username)],
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    assert!(body["error_description"]
        .as_str()
        .is_some_and(|d| d.contains("'password'")));
    let (status, body) = post_form(
        &client,
        &approve,
        &[
            ("user_code", &user_code),
            ("username", &user.username),
            ("password", "not the password"),
        ],
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    assert!(body["error_description"]
        .as_str()
        .is_some_and(|d| d.starts_with("AADSTS50126")));
    let (status, body) = poll(&emu, &client, &code).await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("authorization_pending"))
    );

    // The user's credentials: approved, and the poll gets the user's token.
    let (status, body) = post_form(
        &client,
        &approve,
        &[
            ("user_code", &user_code),
            ("username", &user.username),
            ("password", &user.password),
        ],
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let (status, body) = poll(&emu, &client, &code).await?;
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"].is_string());

    // The explicit switch: codes approved as they are issued, nobody signs in.
    emu.sign_in().set_auto_approve(true);
    let (code, _) = device_code(&emu, &client).await?;
    let (status, body) = poll(&emu, &client, &code).await?;
    assert_eq!(status, 200, "{body}");
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn imds_has_its_own_listener_and_serves_only_attached_identities() -> Result<()> {
    let emu = start().await?;
    let client = reqwest::Client::new();
    let query = "api-version=2018-02-01&resource=https%3A%2F%2Fredis.azure.com";
    let imds = format!("{}?{query}", emu.imds_endpoint());
    let app_service = format!(
        "{}?api-version=2019-08-01&resource=https%3A%2F%2Fredis.azure.com",
        emu.managed_identity_endpoint()
    );

    // Not on the App Service listener, where X-IDENTITY-HEADER is the guard.
    let msi_base = emu
        .managed_identity_endpoint()
        .trim_end_matches("/msi/token");
    let on_app_service = client
        .get(format!("{msi_base}/metadata/identity/oauth2/token?{query}"))
        .header("Metadata", "true")
        .send()
        .await?;
    assert_eq!(on_app_service.status().as_u16(), 404);
    assert_ne!(
        url::Url::parse(&imds)?.port(),
        url::Url::parse(&app_service)?.port()
    );
    let env: Vec<(String, String)> = emu.env();
    let advertised = env
        .iter()
        .find(|(k, _)| k == "REDIS_ENTRA_EMULATOR_IMDS")
        .map(|(_, v)| v.clone());
    assert_eq!(
        advertised.as_deref(),
        emu.imds_endpoint()
            .strip_suffix("/metadata/identity/oauth2/token")
    );
    // App Service still wants its header.
    let reply = client.get(&app_service).send().await?;
    assert_eq!(reply.status().as_u16(), 401);

    // The system-assigned identity and the attached user-assigned one: served.
    let (status, body) =
        json_of(client.get(&imds).header("Metadata", "true").send().await?).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["client_id"].as_str(),
        Some(emu.managed_identity().client_id.as_str())
    );
    let uami = emu.user_assigned_identity().clone();
    let (status, body) = json_of(
        client
            .get(format!("{imds}&client_id={}", uami.client_id))
            .header("Metadata", "true")
            .send()
            .await?,
    )
    .await?;
    assert_eq!(status, 200, "{body}");

    // A user-assigned identity of the tenant that is not attached: not served, by either.
    let stranger = emu.directory().create_detached_identity("elsewhere", true);
    let ask_imds = || {
        client
            .get(format!("{imds}&object_id={}", stranger.object_id))
            .header("Metadata", "true")
            .send()
    };
    let ask_app_service = || {
        client
            .get(format!("{app_service}&client_id={}", stranger.client_id))
            .header("X-IDENTITY-HEADER", emu.identity_header())
            .send()
    };
    let (status, body) = json_of(ask_imds().await?).await?;
    assert_eq!(
        (status, body["error_description"].as_str()),
        (400, Some("Identity not found"))
    );
    let (status, body) = json_of(ask_app_service().await?).await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["message"].as_str(),
        Some("Unable to load the proper Managed Identity.")
    );
    // Attached: served; detached again: not.
    emu.directory().attach_identity(&stranger.object_id);
    assert_eq!(ask_imds().await?.status().as_u16(), 200);
    assert_eq!(ask_app_service().await?.status().as_u16(), 200);
    assert!(emu.directory().detach_identity(&stranger.object_id));
    assert_eq!(ask_imds().await?.status().as_u16(), 400);
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn unpolled_device_codes_and_arc_challenges_are_bounded() -> Result<()> {
    let emu = start().await?;
    let client = https(&emu)?;
    emu.sign_in().set_auto_approve(false);
    let extra = 20;
    let mut last = None;
    for _ in 0..SIGN_IN_STORE_CAPACITY + extra {
        last = Some(device_code(&emu, &client).await?);
    }
    let stored = emu.sign_in().device_code_count();
    assert!(
        stored <= SIGN_IN_STORE_CAPACITY,
        "{stored} device codes stored (cap {SIGN_IN_STORE_CAPACITY})"
    );
    // The newest code still works.
    let (code, user_code) = last.context("no device code")?;
    let user = emu.user();
    let (status, body) = post_form(
        &client,
        &oauth(&emu, "devicecode/approve"),
        &[
            ("user_code", &user_code),
            ("username", &user.username),
            ("password", &user.password),
        ],
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(poll(&emu, &client, &code).await?.0, 200);

    // Azure Arc: every unauthenticated request writes a challenge key file; they are capped.
    let plain = reqwest::Client::new();
    let mut folder = None;
    for _ in 0..ARC_KEY_CAPACITY + extra {
        let reply = plain
            .get(format!(
                "{}?api-version=2020-06-01&resource=https%3A%2F%2Fredis.azure.com",
                emu.arc_endpoint()
            ))
            .header("Metadata", "true")
            .send()
            .await?;
        assert_eq!(reply.status().as_u16(), 401);
        let realm = reply
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic realm="))
            .context("no challenge")?
            .to_string();
        folder = std::path::Path::new(&realm)
            .parent()
            .map(|p| p.to_path_buf());
    }
    let folder = folder.context("no key folder")?;
    let files = std::fs::read_dir(&folder)?.count();
    assert!(
        files <= ARC_KEY_CAPACITY,
        "{files} challenge key files (cap {ARC_KEY_CAPACITY})"
    );
    emu.shutdown().await;
    Ok(())
}

/// Attack: connections to the fake Entra ID that say nothing held a task each, with no limit.
/// Its listeners hold at most `MAX_IDENTITY_CONNECTIONS` at once: one more is closed
/// unanswered, and once the others go, requests are served again.
#[tokio::test]
async fn the_identity_server_holds_a_bounded_number_of_connections() -> Result<()> {
    use redis_entra_emulator::identity::MAX_IDENTITY_CONNECTIONS;
    use tokio::io::AsyncReadExt;
    let emu = start().await?;
    let port = emu
        .authority()
        .rsplit_once(':')
        .and_then(|(_, port)| port.trim_end_matches('/').parse::<u16>().ok())
        .context("the authority has no port")?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut idle = Vec::with_capacity(MAX_IDENTITY_CONNECTIONS);
    for _ in 0..MAX_IDENTITY_CONNECTIONS {
        idle.push(tokio::net::TcpStream::connect(addr).await?);
    }
    let mut extra = tokio::net::TcpStream::connect(addr).await?;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), extra.read(&mut buf))
        .await
        .context("the connection over the limit was left open")?
        .unwrap_or(0);
    anyhow::ensure!(n == 0, "the connection over the limit got an answer");
    drop(idle);
    // A slot is released just after its socket closes: retry, within a bound.
    let client = https(&emu)?;
    let metadata = format!(
        "{}/{}/v2.0/.well-known/openid-configuration",
        emu.authority(),
        emu.tenant_id()
    );
    let mut status = 0;
    for _ in 0..50 {
        if let Ok(reply) = client.get(&metadata).send().await {
            status = reply.status().as_u16();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    anyhow::ensure!(status == 200, "after the idle connections went: {status}");
    emu.shutdown().await;
    Ok(())
}
