//! Foundation figures, measured against the emulator on this machine (run with
//! `cargo bench -p redis-entra --bench foundation`):
//! - token request latency (client secret, managed identity), one HTTPS round trip each;
//! - time from nothing to the first reply: emulator start, then token + TLS + AUTH + GET;
//! - how long re-authenticating one live connection takes (the `AUTH` round trip).

use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use redis::AsyncCommands;
use redis_entra::credential::{
    client_secret, managed_identity, ClientSecretOptions, ManagedIdentityOptions,
};
use redis_entra::{
    ConnectOptions, EntraConnection, TlsOptions, TokenEvent, TokenManager, TokenManagerOptions,
    REDIS_SCOPE,
};
use redis_entra_emulator::{Emulator, EmulatorConfig};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name}: n={} p50={:.2} ms p90={:.2} ms p99={:.2} ms max={:.2} ms",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.9)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap())
    );
}

async fn token_latency(name: &str, credential: Arc<dyn TokenCredential>, n: usize) {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        credential
            .get_token(&[REDIS_SCOPE], None)
            .await
            .expect("token");
        samples.push(t.elapsed());
    }
    report(name, samples);
}

#[tokio::main]
async fn main() {
    // Tokens shorter than 5 minutes, so azure_identity's cache never answers for the endpoint.
    let t0 = Instant::now();
    let emulator = Emulator::start(EmulatorConfig {
        token_lifetime: Duration::from_secs(2),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator");
    let started = t0.elapsed();
    let tls =
        TlsOptions::with_ca_pem(emulator.ca_pem().to_string()).expect("the emulator's CA is PEM");
    let sp = emulator.service_principal().clone();
    let secret_credential = client_secret(
        ClientSecretOptions::new(
            emulator.tenant_id().to_string(),
            sp.client_id.clone(),
            sp.secret.clone().unwrap(),
        )
        .with_authority_host(emulator.authority().to_string())
        .with_tls(tls.clone()),
    )
    .unwrap();

    // Cold path: a new manager and connection, from nothing to the first GET reply.
    let t1 = Instant::now();
    let manager = TokenManager::new(secret_credential.clone(), TokenManagerOptions::default());
    let mut events = manager.events();
    let mut options = ConnectOptions::new("localhost", emulator.gateway_addr().port());
    options.tls = tls.clone();
    let mut conn = EntraConnection::connect(options, manager.clone())
        .await
        .unwrap();
    let _: Option<String> = conn.get("Az:key1").await.unwrap();
    let first_reply = t1.elapsed();
    println!(
        "emulator start (PKI, RSA key, HTTPS, redis-server, gateway): {:.1} ms",
        started.as_secs_f64() * 1000.0
    );
    println!(
        "first reply from nothing (token request + TLS + AUTH + GET): {:.1} ms",
        first_reply.as_secs_f64() * 1000.0
    );

    token_latency(
        "token request, client secret (HTTPS POST)",
        secret_credential,
        200,
    )
    .await;
    std::env::set_var("IDENTITY_ENDPOINT", emulator.managed_identity_endpoint());
    std::env::set_var("IDENTITY_HEADER", emulator.identity_header());
    let mi = managed_identity({
        let mut o = ManagedIdentityOptions::default();
        o.user_assigned_id = None;
        o.tls = tls;
        o
    })
    .unwrap();
    token_latency(
        "token request, managed identity (App Service, HTTP GET)",
        mi,
        200,
    )
    .await;

    // Re-authentication of one live connection: tokens live 2 s, so a refresh every ~1 s.
    let mut reauth = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while reauth.len() < 20 && Instant::now() < deadline {
        if let Ok(Ok(TokenEvent::ConnectionReauthenticated { took, .. })) =
            tokio::time::timeout(Duration::from_secs(5), events.recv()).await
        {
            reauth.push(took);
        }
    }
    report(
        "re-authentication of one connection (AUTH round trip)",
        reauth,
    );
    drop(conn);
    emulator.shutdown().await;
}
