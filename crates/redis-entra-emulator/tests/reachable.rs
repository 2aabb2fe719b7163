//! Reachable from elsewhere: `--listen ADDR` and `--hostname NAME` put the fake Entra ID and
//! the gateway on that address, under that name, with certificates that name it.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use redis_entra_emulator::{Emulator, EmulatorConfig, IdentityKind};
use rustls::pki_types::pem::PemObject;

#[tokio::test]
async fn listen_and_hostname_move_the_authority_and_the_gateway() -> Result<()> {
    // 127.0.0.2 is loopback on Linux, and not 127.0.0.1: what listens there listens nowhere else.
    let emu = Emulator::start(EmulatorConfig {
        listen: "127.0.0.2".parse()?,
        hostname: "127.0.0.2".into(),
        ..EmulatorConfig::default()
    })
    .await?;
    let port = emu.gateway_addr().port();
    ensure!(emu.gateway_addr().ip().to_string() == "127.0.0.2");
    ensure!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "the gateway also listens on 127.0.0.1"
    );
    ensure!(
        emu.authority().starts_with("https://127.0.0.2:"),
        "{}",
        emu.authority()
    );
    let env = emu.env_for(IdentityKind::ServicePrincipal);
    let var = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .with_context(|| format!("{name} not in the env file"))
    };
    ensure!(var("AZURE_REDIS_HOST")? == "127.0.0.2");

    // A token from the authority at its new address, checked against the certificate...
    let ca = reqwest::Certificate::from_pem(emu.ca_pem().as_bytes())?;
    let http = reqwest::Client::builder().tls_certs_only([ca]).build()?;
    let sp = emu.service_principal();
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "client_credentials"),
            ("client_id", sp.client_id.as_str()),
            ("client_secret", sp.secret.as_deref().unwrap_or_default()),
            ("scope", "https://redis.azure.com/.default"),
        ])
        .finish();
    let reply: serde_json::Value = http
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            emu.authority(),
            emu.tenant_id()
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await
        .map(|body| serde_json::from_str(&body))??;
    let token = reply["access_token"].as_str().context("no access_token")?;

    // ... and AUTH through the gateway at the new address, the certificate verified.
    let client = redis::Client::build_with_tls(
        format!("rediss://127.0.0.2:{port}"),
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
async fn a_hostname_that_is_not_one_is_refused_with_the_flag_named() {
    let started = Emulator::start(EmulatorConfig {
        hostname: "https://example.test:443".into(),
        ..EmulatorConfig::default()
    })
    .await;
    let Err(err) = started else {
        panic!("an emulator started with a URL for a host name");
    };
    assert!(err.to_string().contains("--hostname"), "{err}");
}

#[test]
fn the_certificate_names_the_hostname() -> Result<()> {
    let pki = redis_entra_emulator::tls::Pki::generate_for(&["redis-entra.test".into()])?;
    let pem = pki.server_cert_pem();
    // The SAN is in the DER; a DNS name is stored as its ASCII bytes.
    let der: Vec<u8> = rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .context("a certificate")??
        .to_vec();
    ensure!(der.windows(16).any(|w| w == b"redis-entra.test"));
    Ok(())
}
