//! What an operator sees: `GET /health` (ready only when every listener and the backend
//! answer), the counters over `GET /admin/stats` and in Prometheus' format at `GET /metrics`.

use std::time::Duration;

use anyhow::{ensure, Result};
use redis_entra_emulator::{Emulator, EmulatorConfig};
use serde_json::Value;

async fn get(emu: &Emulator, path: &str, key: bool) -> Result<(u16, String)> {
    let mut request = reqwest::Client::new().get(format!("{}{path}", emu.admin_url()));
    if key {
        request = request.bearer_auth(emu.admin_key());
    }
    let reply = request.send().await?;
    Ok((reply.status().as_u16(), reply.text().await?))
}

/// A client-credentials token request for the service principal, with `secret`.
async fn token_request(emu: &Emulator, secret: &str) -> Result<u16> {
    let ca = reqwest::Certificate::from_pem(emu.ca_pem().as_bytes())?;
    let client = reqwest::Client::builder().tls_certs_only([ca]).build()?;
    let sp = emu.service_principal();
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "client_credentials"),
            ("client_id", sp.client_id.as_str()),
            ("client_secret", secret),
            ("scope", "https://redis.azure.com/.default"),
        ])
        .finish();
    let reply = client
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            emu.authority(),
            emu.tenant_id()
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await?;
    Ok(reply.status().as_u16())
}

#[tokio::test]
async fn health_is_ready_only_while_the_backend_answers() -> Result<()> {
    let emu = Emulator::start(EmulatorConfig::default()).await?;
    let (status, body) = get(&emu, "/health", false).await?;
    ensure!(status == 200, "{status} {body}");
    let health: Value = serde_json::from_str(&body)?;
    ensure!(health["status"] == "ready", "{body}");
    let names: Vec<&str> = health["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    for expected in [
        "fake Entra ID",
        "managed identity endpoint",
        "Redis gateway",
    ] {
        ensure!(names.contains(&expected), "{expected} missing from {body}");
    }

    // While the backend is down, not ready; ready again once it is back.
    let restart = emu.restart_backend(Duration::from_secs(2));
    let watch = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = get(&emu, "/health", false).await?;
            if status == 503 {
                ensure!(body.contains("backend"), "{body}");
                return Ok(());
            }
            ensure!(tokio::time::Instant::now() < deadline, "never unavailable");
            tokio::task::yield_now().await;
        }
    };
    let (restarted, seen_down) = tokio::join!(restart, watch);
    restarted?;
    seen_down?;
    let (status, body) = get(&emu, "/health", false).await?;
    ensure!(status == 200, "after the restart: {status} {body}");
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn counters_by_grant_and_by_reason_over_json_and_prometheus() -> Result<()> {
    let emu = Emulator::start(EmulatorConfig::default()).await?;
    let secret = emu.service_principal().secret.clone().unwrap();
    ensure!(token_request(&emu, &secret).await? == 200);
    ensure!(token_request(&emu, "not the secret").await? == 401);

    // A refused AUTH: a token that is not a token.
    let client = redis::Client::build_with_tls(
        format!("rediss://localhost:{}", emu.gateway_addr().port()),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(emu.ca_pem().as_bytes().to_vec()),
        },
    )?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let refused: redis::RedisResult<()> = redis::cmd("AUTH")
        .arg(&emu.service_principal().object_id)
        .arg("not-a-jwt")
        .query_async(&mut conn)
        .await;
    ensure!(refused.is_err());

    // The counters need the key as JSON...
    let (status, _) = get(&emu, "/admin/stats", false).await?;
    ensure!(status == 401, "/admin/stats without the key: {status}");
    let (status, body) = get(&emu, "/admin/stats", true).await?;
    ensure!(status == 200, "{status} {body}");
    let stats: Value = serde_json::from_str(&body)?;
    ensure!(
        stats["token_requests_by_grant"]["client_credentials"] == 2,
        "{body}"
    );
    ensure!(stats["auth_refused_by_reason"]["token"] == 1, "{body}");
    ensure!(stats["auth_failed"] == 1, "{body}");
    ensure!(stats["connections_accepted"] == 1, "{body}");

    // ... and not in Prometheus' format.
    let (status, text) = get(&emu, "/metrics", false).await?;
    ensure!(status == 200, "{status} {text}");
    for line in [
        "redis_entra_emulator_token_requests_by_grant_total{grant=\"client_credentials\"} 2",
        "redis_entra_emulator_auth_refused_by_reason_total{reason=\"token\"} 1",
        "redis_entra_emulator_connections_accepted_total 1",
        "# TYPE redis_entra_emulator_closed_at_expiry_total counter",
    ] {
        ensure!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
    }
    ensure!(!text.contains(&secret), "a secret in /metrics");
    emu.shutdown().await;
    Ok(())
}
