//! The interactive browser credential (authorization code + PKCE + loopback redirect) against
//! the emulator's sign-in page: driven by a plain HTTP client that fills in the form, and end
//! to end in headless Chromium (`scripts/setup --with-browser` installs it; the test fails without it).

mod common;

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use redis::AsyncCommands;
use redis_entra::credential::{interactive_browser, InteractiveBrowserOptions, OpenUrl};
use redis_entra::{EntraConnection, TokenManager};
use redis_entra_emulator::Emulator;

use common::*;

const SCOPE: &str = "https://redis.azure.com/.default";

/// An HTTP client that trusts the emulator and does not follow redirects.
fn http(emulator: &Emulator) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls(emulator).client_config().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The hidden inputs of the sign-in page's form.
fn hidden_inputs(page: &str) -> Vec<(String, String)> {
    page.split("<input type=\"hidden\" ")
        .skip(1)
        .filter_map(|chunk| {
            let name = chunk.split("name=\"").nth(1)?.split('"').next()?;
            let value = chunk.split("value=\"").nth(1)?.split('"').next()?;
            Some((
                name.to_string(),
                value.replace("&amp;", "&").replace("&quot;", "\""),
            ))
        })
        .collect()
}

/// Plays the user: loads the page, fills in the form, follows the redirect to the loopback
/// listener. Returns the sign-in page's reply to the POST.
async fn fill_in(
    client: reqwest::Client,
    authorize_url: String,
    username: String,
    password: String,
) -> (u16, String) {
    let page = client
        .get(&authorize_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("name=\"password\""), "{page}");
    let mut form = hidden_inputs(&page);
    form.push(("username".into(), username));
    form.push(("password".into(), password));
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter())
        .finish();
    let post_url = url::Url::parse(&authorize_url).unwrap();
    let reply = client
        .post(format!(
            "{}://{}{}",
            post_url.scheme(),
            post_url.host_str().unwrap().to_string() + ":" + &post_url.port().unwrap().to_string(),
            post_url.path()
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = reply.status().as_u16();
    if status == 302 {
        let location = reply.headers()["location"].to_str().unwrap().to_string();
        assert!(location.starts_with("http://127.0.0.1:"), "{location}");
        let done = client
            .get(&location)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        return (status, done);
    }
    (status, reply.text().await.unwrap())
}

fn opener(
    emulator: &Emulator,
    password: String,
    pages: tokio::sync::mpsc::UnboundedSender<(u16, String)>,
) -> OpenUrl {
    let client = http(emulator);
    let username = emulator.user().username;
    let handle = tokio::runtime::Handle::current();
    Arc::new(move |url: &str| {
        let (client, url, username, password, pages) = (
            client.clone(),
            url.to_string(),
            username.clone(),
            password.clone(),
            pages.clone(),
        );
        handle.spawn(async move {
            let _ = pages.send(fill_in(client, url, username, password).await);
        });
        true
    })
}

#[tokio::test]
async fn browser_flow_through_the_form_and_the_gateway_accepts_the_token() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let credential = interactive_browser({
        let mut o = InteractiveBrowserOptions::default();
        o.tenant_id = emulator.tenant_id().to_string();
        o.authority_host = Some(emulator.authority().to_string());
        o.tls = tls(&emulator);
        o.open_url = Some(opener(&emulator, emulator.user().password, tx));
        o.timeout = Duration::from_secs(30);
        o
    })
    .unwrap();
    let manager = TokenManager::new(credential.clone(), quick_options());
    let creds = manager.credentials().await.unwrap();
    assert_eq!(creds.username(), emulator.user().object_id);
    let (status, done) = rx.recv().await.unwrap();
    assert_eq!(status, 302);
    assert!(done.contains("Authentication complete"), "{done}");
    let mut conn = EntraConnection::connect(connect_options(&emulator), manager)
        .await
        .unwrap();
    let _: () = conn.set("browser:key", "v").await.unwrap();
    let v: String = conn.get("browser:key").await.unwrap();
    assert_eq!(v, "v");
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_wrong_password_on_the_page_shows_aadsts50126_and_no_redirect() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let credential = interactive_browser({
        let mut o = InteractiveBrowserOptions::default();
        o.tenant_id = emulator.tenant_id().to_string();
        o.authority_host = Some(emulator.authority().to_string());
        o.tls = tls(&emulator);
        o.open_url = Some(opener(&emulator, "not-it".into(), tx));
        o.timeout = Duration::from_secs(3);
        o
    })
    .unwrap();
    let error = credential
        .get_token(&[SCOPE], None)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("did not come back"), "{error}");
    let (status, page) = rx.recv().await.unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("AADSTS50126"), "{page}");
    emulator.shutdown().await;
}

#[tokio::test]
async fn no_browser_is_an_error_naming_the_way_out() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    let credential = interactive_browser({
        let mut o = InteractiveBrowserOptions::default();
        o.tenant_id = emulator.tenant_id().to_string();
        o.authority_host = Some(emulator.authority().to_string());
        o.tls = tls(&emulator);
        o.open_url = Some(Arc::new(|_: &str| false));
        o
    })
    .unwrap();
    let error = credential
        .get_token(&[SCOPE], None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("open_url") && error.contains("device code"),
        "{error}"
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_token_endpoint_checks_the_pkce_verifier() {
    // A code redeemed with the wrong verifier is refused with AADSTS501481.
    let emulator = emulator(Duration::from_secs(3600)).await;
    let client = http(&emulator);
    let base = format!(
        "{}/{}/oauth2/v2.0",
        emulator.authority(),
        emulator.tenant_id()
    );
    let user = emulator.user();
    let redirect = "http://127.0.0.1:9/";
    let form = [
        (
            "client_id",
            redis_entra::credential::DEVELOPER_SIGN_IN_CLIENT_ID,
        ),
        ("response_type", "code"),
        ("redirect_uri", redirect),
        ("scope", SCOPE),
        ("state", "s"),
        (
            "code_challenge",
            "RNdMlvbmim3B0nI75q6gOvOMa4RP4jOSqUwpuC4_0Y8",
        ),
        ("code_challenge_method", "S256"),
        ("username", &user.username),
        ("password", &user.password),
    ];
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter())
        .finish();
    let reply = client
        .post(format!("{base}/authorize"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 302);
    let location = url::Url::parse(reply.headers()["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let redeem = |verifier: &'static str, code: String| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs([
                    ("grant_type", "authorization_code"),
                    (
                        "client_id",
                        redis_entra::credential::DEVELOPER_SIGN_IN_CLIENT_ID,
                    ),
                    ("code", &code),
                    ("redirect_uri", redirect),
                    ("code_verifier", verifier),
                ])
                .finish();
            client
                .post(format!("{base}/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let wrong = redeem("not-the-verifier", code.clone()).await;
    assert!(wrong.contains("AADSTS501481"), "{wrong}");
    // The code was consumed by the failed attempt, as Entra does.
    let again = redeem("dBjftJeZ4CVP-mJ0z3z7KFsLY5oX-rcaXg2M0D9xZ8I", code).await;
    assert!(again.contains("AADSTS70008"), "{again}");
    emulator.shutdown().await;
}

#[tokio::test]
async fn end_to_end_in_headless_chromium() {
    let Some(chromium) = ["chromium", "chromium-browser"].into_iter().find(|p| {
        std::process::Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        panic!("chromium is not installed: run scripts/setup --with-browser (scripts/test does)");
    };
    let emulator = emulator(Duration::from_secs(3600)).await;
    emulator.sign_in().set_auto_submit(true);
    let profile = tempfile::tempdir().unwrap();
    let children: Arc<std::sync::Mutex<Vec<std::process::Child>>> = Arc::default();
    let spawned = children.clone();
    let profile_dir = profile.path().to_path_buf();
    let open: OpenUrl = Arc::new(move |url: &str| {
        let child = std::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                // The emulator's CA is not in this fresh profile's trust store.
                "--ignore-certificate-errors",
            ])
            .arg(format!("--user-data-dir={}", profile_dir.display()))
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        match child {
            Ok(child) => {
                spawned.lock().unwrap().push(child);
                true
            }
            Err(_) => false,
        }
    });
    let credential = interactive_browser({
        let mut o = InteractiveBrowserOptions::default();
        o.tenant_id = emulator.tenant_id().to_string();
        o.authority_host = Some(emulator.authority().to_string());
        o.tls = tls(&emulator);
        o.open_url = Some(open);
        o.timeout = Duration::from_secs(60);
        o
    })
    .unwrap();
    let result = credential.get_token(&[SCOPE], None).await;
    for mut child in children.lock().unwrap().drain(..) {
        let _ = child.kill();
        let _ = child.wait();
    }
    let token = result.unwrap();
    let claims = redis_entra::TokenClaims::from_jwt(token.token.secret()).unwrap();
    assert_eq!(
        claims.oid.as_deref(),
        Some(emulator.user().object_id.as_str())
    );
    let manager = TokenManager::new(credential, quick_options());
    let mut conn = EntraConnection::connect(connect_options(&emulator), manager)
        .await
        .unwrap();
    let _: () = conn.set("chromium:key", "v").await.unwrap();
    emulator.shutdown().await;
}
