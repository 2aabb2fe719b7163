//! Hermetic mode: the fake Entra ID answers as `https://login.microsoftonline.com` through the
//! proxy listener (CONNECT) and to direct TLS (the hosts-file mode), with Entra's real issuer
//! strings, instance discovery included; the gateway takes the tokens; every other host is
//! refused with a reason.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use redis_entra_emulator::identity::{HermeticConfig, MAX_REQUEST_HEAD};
use redis_entra_emulator::{Emulator, EmulatorConfig, IdentityKind};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOST: &str = "https://login.microsoftonline.com";

async fn hermetic() -> Result<Emulator> {
    Ok(Emulator::start(EmulatorConfig {
        hermetic: Some(HermeticConfig::default()),
        ..EmulatorConfig::default()
    })
    .await?)
}

fn proxy_addr(emu: &Emulator) -> Result<SocketAddr> {
    let proxy = emu.hermetic_proxy().context("no hermetic proxy")?;
    Ok(proxy.trim_start_matches("http://").parse()?)
}

/// A client that trusts the emulator's CA only, and goes through the hermetic proxy.
fn through_proxy(emu: &Emulator) -> Result<reqwest::Client> {
    let ca = reqwest::Certificate::from_pem(emu.ca_pem().as_bytes())?;
    let proxy = reqwest::Proxy::https(emu.hermetic_proxy().context("no hermetic proxy")?)?;
    Ok(reqwest::Client::builder()
        .tls_certs_only([ca])
        .proxy(proxy)
        .timeout(Duration::from_secs(10))
        .build()?)
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value> {
    let text = http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(serde_json::from_str(&text)?)
}

/// The env file's variables by name.
fn var(env: &[(String, String)], name: &str) -> Option<String> {
    env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

#[tokio::test]
async fn the_env_file_names_the_proxy_not_the_authority() -> Result<()> {
    let emu = hermetic().await?;
    let env = emu.env_for(IdentityKind::ServicePrincipal);
    let proxy = emu.hermetic_proxy().context("no proxy")?.to_string();
    ensure!(var(&env, "AZURE_AUTHORITY_HOST").is_none(), "{env:?}");
    ensure!(var(&env, "HTTPS_PROXY") == Some(proxy.clone()));
    ensure!(var(&env, "https_proxy") == Some(proxy));
    let no_proxy = var(&env, "NO_PROXY").context("no NO_PROXY")?;
    ensure!(no_proxy.split(',').any(|h| h == "localhost"), "{no_proxy}");
    ensure!(no_proxy.split(',').any(|h| h == "127.0.0.1"), "{no_proxy}");
    let ca = emu.ca_file().display().to_string();
    for name in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"] {
        ensure!(var(&env, name) == Some(ca.clone()), "{name}");
    }
    // The health check knows the listener.
    let health: Value = serde_json::from_str(
        &reqwest::Client::builder()
            .no_proxy()
            .build()?
            .get(format!("{}/health", emu.admin_url()))
            .send()
            .await?
            .text()
            .await?,
    )?;
    ensure!(health["status"] == "ready", "{health}");
    let addr = proxy_addr(&emu)?.to_string();
    ensure!(
        health["listeners"].as_array().is_some_and(|l| l
            .iter()
            .any(|x| x["name"] == "hermetic proxy" && x["addr"] == addr.as_str())),
        "{health}"
    );
    emu.shutdown().await;
    // Without --hermetic: the authority host, and no proxy.
    let plain = Emulator::start(EmulatorConfig::default()).await?;
    let env = plain.env();
    ensure!(var(&env, "AZURE_AUTHORITY_HOST").as_deref() == Some(plain.authority()));
    ensure!(var(&env, "HTTPS_PROXY").is_none() && plain.hermetic_proxy().is_none());
    plain.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn metadata_and_instance_discovery_carry_entras_real_strings() -> Result<()> {
    let emu = hermetic().await?;
    let http = through_proxy(&emu)?;
    let tid = emu.tenant_id().to_string();

    let v2 = get_json(
        &http,
        &format!("{HOST}/{tid}/v2.0/.well-known/openid-configuration"),
    )
    .await?;
    ensure!(v2["issuer"] == format!("{HOST}/{tid}/v2.0"), "{v2}");
    ensure!(v2["token_endpoint"] == format!("{HOST}/{tid}/oauth2/v2.0/token"));
    let v1 = get_json(
        &http,
        &format!("{HOST}/{tid}/.well-known/openid-configuration"),
    )
    .await?;
    ensure!(
        v1["issuer"] == format!("https://sts.windows.net/{tid}/"),
        "{v1}"
    );

    let discovery = get_json(
        &http,
        &format!(
            "{HOST}/common/discovery/instance?api-version=1.1&authorization_endpoint={HOST}/{tid}/oauth2/v2.0/authorize"
        ),
    )
    .await?;
    ensure!(
        discovery["tenant_discovery_endpoint"]
            == format!("{HOST}/{tid}/v2.0/.well-known/openid-configuration"),
        "{discovery}"
    );
    let aliases = discovery["metadata"]
        .as_array()
        .and_then(|m| m.first())
        .map(|first| first["aliases"].clone())
        .context("no metadata")?;
    ensure!(
        aliases
            .as_array()
            .is_some_and(|a| a.iter().any(|h| h == "login.microsoftonline.com")
                && a.iter().any(|h| h == "login.windows.net")),
        "{aliases}"
    );
    // An authorize endpoint on a host Entra does not know: AADSTS50049.
    let unknown = http
        .get(format!(
            "{HOST}/common/discovery/instance?api-version=1.1&authorization_endpoint=https://login.example.com/x/oauth2/v2.0/authorize"
        ))
        .send()
        .await?;
    ensure!(unknown.status() == 400);
    let body: Value = serde_json::from_str(&unknown.text().await?)?;
    ensure!(body["error"] == "invalid_instance", "{body}");
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_token_from_login_microsoftonline_com_opens_the_gateway() -> Result<()> {
    let emu = hermetic().await?;
    let http = through_proxy(&emu)?;
    let sp = emu.service_principal();
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "client_credentials"),
            ("client_id", sp.client_id.as_str()),
            ("client_secret", sp.secret.as_deref().unwrap_or_default()),
            ("scope", "https://redis.azure.com/.default"),
        ])
        .finish();
    let reply: Value = serde_json::from_str(
        &http
            .post(format!("{HOST}/{}/oauth2/v2.0/token", emu.tenant_id()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?,
    )?;
    let token = reply["access_token"].as_str().context("no access_token")?;
    let client = redis::Client::build_with_tls(
        format!("rediss://localhost:{}", emu.gateway_addr().port()),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(emu.ca_pem().as_bytes().to_vec()),
        },
    )?;
    let mut conn = tokio::time::timeout(
        Duration::from_secs(10),
        client.get_multiplexed_async_connection(),
    )
    .await??;
    let () = redis::cmd("AUTH")
        .arg(&sp.object_id)
        .arg(token)
        .query_async(&mut conn)
        .await?;
    let whoami: String = redis::cmd("ACL")
        .arg("WHOAMI")
        .query_async(&mut conn)
        .await?;
    ensure!(whoami == sp.object_id);
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_client_sent_by_the_hosts_file_gets_the_same_answers() -> Result<()> {
    let emu = hermetic().await?;
    let addr = proxy_addr(&emu)?;
    let ca = reqwest::Certificate::from_pem(emu.ca_pem().as_bytes())?;
    // As /etc/hosts would: the name resolves to the listener, no proxy.
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .no_proxy()
        .resolve("login.microsoftonline.com", addr)
        .timeout(Duration::from_secs(10))
        .build()?;
    let tid = emu.tenant_id();
    let v2 = get_json(
        &http,
        &format!(
            "https://login.microsoftonline.com:{}/{tid}/v2.0/.well-known/openid-configuration",
            addr.port()
        ),
    )
    .await?;
    ensure!(v2["issuer"] == format!("{HOST}/{tid}/v2.0"), "{v2}");
    // Another server name is not served.
    let ca = reqwest::Certificate::from_pem(emu.ca_pem().as_bytes())?;
    let other = reqwest::Client::builder()
        .tls_certs_only([ca])
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let refused = other
        .get(format!(
            "https://localhost:{}/common/discovery/keys",
            addr.port()
        ))
        .send()
        .await;
    ensure!(refused.is_err(), "served for localhost: {refused:?}");
    emu.shutdown().await;
    Ok(())
}

/// Sends `request` to the proxy and reads the whole reply (the proxy closes after a refusal).
async fn raw(addr: SocketAddr, request: &[u8]) -> Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
        .await
        .context("the proxy did not close the connection")??;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

#[tokio::test]
async fn other_hosts_are_refused_with_a_reason() -> Result<()> {
    let emu = hermetic().await?;
    let addr = proxy_addr(&emu)?;
    let reply = raw(
        addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .await?;
    ensure!(reply.starts_with("HTTP/1.1 403 "), "{reply}");
    ensure!(
        reply.contains("example.com:443") && reply.contains("no network"),
        "{reply}"
    );
    let reply = raw(
        addr,
        b"CONNECT login.microsoftonline.us:443 HTTP/1.1\r\n\r\n",
    )
    .await?;
    ensure!(
        reply.starts_with("HTTP/1.1 403 ") && reply.contains("sovereign"),
        "{reply}"
    );
    let reply = raw(
        addr,
        b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
    )
    .await?;
    ensure!(
        reply.starts_with("HTTP/1.1 403 ") && reply.contains("NO_PROXY"),
        "{reply}"
    );
    // A head longer than the limit is cut off with 431, not read forever.
    let mut long = b"CONNECT login.microsoftonline.com:443 HTTP/1.1\r\n".to_vec();
    long.extend(std::iter::repeat_n(b'x', MAX_REQUEST_HEAD + 10));
    let reply = raw(addr, &long).await?;
    ensure!(reply.starts_with("HTTP/1.1 431 "), "{reply}");
    // Through reqwest: a refused tunnel is an error, not a hang.
    let http = through_proxy(&emu)?;
    ensure!(http.get("https://example.com/").send().await.is_err());
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn connections_are_bounded_in_number_and_in_time() -> Result<()> {
    use redis_entra_emulator::identity::{MAX_PROXY_CONNECTIONS, REQUEST_HEAD_TIMEOUT};
    let emu = hermetic().await?;
    let addr = proxy_addr(&emu)?;
    // Clients that connect and say nothing hold every slot...
    let mut idle = Vec::with_capacity(MAX_PROXY_CONNECTIONS);
    for _ in 0..MAX_PROXY_CONNECTIONS {
        idle.push(tokio::net::TcpStream::connect(addr).await?);
    }
    // ... so one more is closed at once, unanswered.
    let mut extra = tokio::net::TcpStream::connect(addr).await?;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
        .await
        .context("the connection over the limit was left open")?
        .unwrap_or(0);
    ensure!(n == 0, "the connection over the limit got an answer");
    // The idle ones are closed once their time to send a request is up.
    let first = idle.first_mut().context("no idle connection")?;
    let closed = tokio::time::timeout(
        REQUEST_HEAD_TIMEOUT + Duration::from_secs(5),
        first.read(&mut buf),
    )
    .await
    .context("an idle connection outlived the request head timeout")?
    .unwrap_or(0);
    ensure!(closed == 0, "an idle connection got an answer");
    drop(idle);
    // Once freed, the slots serve again. A slot is released just after its socket closes, so
    // the first try may still find none free: retry, within a bound.
    let mut reply = String::new();
    for _ in 0..50 {
        // A connection closed unanswered may also fail to write: that is a retry too.
        if let Ok(answer) = raw(addr, b"CONNECT example.com:443 HTTP/1.1\r\n\r\n").await {
            reply = answer;
            if !reply.is_empty() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(reply.starts_with("HTTP/1.1 403 "), "{reply:?}");
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn instance_discovery_on_the_emulators_own_host() -> Result<()> {
    let emu = Emulator::start(EmulatorConfig::default()).await?;
    let ca = reqwest::Certificate::from_pem(emu.ca_pem().as_bytes())?;
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .no_proxy()
        .build()?;
    let authority = emu.authority();
    let tid = emu.tenant_id();
    let discovery = get_json(
        &http,
        &format!(
            "{authority}/common/discovery/instance?api-version=1.1&authorization_endpoint={authority}/{tid}/oauth2/authorize"
        ),
    )
    .await?;
    // A v1 authorize endpoint: the v1 document.
    ensure!(
        discovery["tenant_discovery_endpoint"]
            == format!("{authority}/{tid}/.well-known/openid-configuration"),
        "{discovery}"
    );
    let own = authority.trim_start_matches("https://");
    ensure!(
        discovery["metadata"]
            .as_array()
            .is_some_and(|m| m.iter().any(|c| c["preferred_network"] == own)),
        "{discovery}"
    );
    let missing = http
        .get(format!(
            "{authority}/common/discovery/instance?api-version=1.1"
        ))
        .send()
        .await?;
    ensure!(missing.status() == 400);
    let body: Value = serde_json::from_str(&missing.text().await?)?;
    ensure!(body["error"] == "invalid_request", "{body}");
    emu.shutdown().await;
    Ok(())
}
