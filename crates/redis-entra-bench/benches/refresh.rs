//! Token requests per refresh (`cargo bench -p redis-entra-bench --bench refresh`).
//!
//! 1. **1-hour tokens, simulated**: a tokio runtime with a paused clock runs 24 virtual hours of
//!    our `TokenManager` (and, side by side, the redis crate's `EntraIdCredentialsProvider`) over a
//!    trivial in-process credential that counts its calls and returns a JWT-shaped token expiring
//!    one hour after the *real* clock's now. This simulates the scheduling only: no emulator, no
//!    network. (The real-clock expiry keeps the manager's "fresher than the current token" check
//!    meaningful while tokio's clock jumps hours ahead.)
//! 2. **redis-rs, 30 s tokens, real time**: the redis crate's provider against the emulator's App
//!    Service managed-identity endpoint, capped at `REDIS_RS_CAP` seconds (default 10), because
//!    it asks in a tight loop for tokens living under 240 s.
//! 3. **Real time against the emulator, concurrently**: our `TokenManager` (client secret) with
//!    tokens living 30 s for `SECS_30S` (default 180) and 5 minutes for `SECS_5M` (default 360),
//!    each with one `EntraConnection` issuing a `PING` a second; and the redis crate's provider
//!    with 5-minute tokens for the same `SECS_5M`. Requests are counted by each emulator
//!    (`Stats::token_requests`), one emulator per subject.
//!
//! `PARTS` (default `sim,redis-rs-30s,real`) picks which run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::time::OffsetDateTime;
use futures::StreamExt;
use redis::StreamingCredentialsProvider;
use redis_entra::{EntraConnection, TokenEvent, TokenManager, TokenManagerOptions};
use redis_entra_bench::{connect_options, redis_rs_provider, secret_credential};
use redis_entra_emulator::stats::Stats;
use redis_entra_emulator::{Emulator, EmulatorConfig, IdentityKind};

fn secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A credential that mints a JWT-shaped, unsigned token (with an `oid`) living `lifetime` on the
/// real clock, and counts its calls.
#[derive(Debug)]
struct CountingCredential {
    lifetime: Duration,
    calls: AtomicU64,
}

impl CountingCredential {
    /// The next token and its expiry.
    fn mint(&self) -> (String, OffsetDateTime) {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let expires_on = OffsetDateTime::now_utc() + self.lifetime;
        let b64 = |s: String| {
            azure_core::base64::encode_url_safe(s)
                .trim_end_matches('=')
                .to_string()
        };
        let header = b64(r#"{"alg":"none","typ":"JWT"}"#.to_string());
        let payload = b64(format!(
            r#"{{"oid":"00000000-0000-0000-0000-000000000001","exp":{},"uti":"{n}"}}"#,
            expires_on.unix_timestamp()
        ));
        (format!("{header}.{payload}.sig"), expires_on)
    }
}

#[async_trait::async_trait]
impl TokenCredential for CountingCredential {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let (token, expires_on) = self.mint();
        Ok(AccessToken::new(Secret::new(token), expires_on))
    }
}

/// The same, for the azure_core the redis crate's provider takes.
#[async_trait::async_trait]
impl azure_core_031::credentials::TokenCredential for CountingCredential {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<azure_core_031::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core_031::Result<azure_core_031::credentials::AccessToken> {
        let (token, expires_on) = self.mint();
        Ok(azure_core_031::credentials::AccessToken::new(
            azure_core_031::credentials::Secret::new(token),
            expires_on,
        ))
    }
}

/// 24 virtual hours of 1-hour tokens on a paused clock: (our requests, our refreshes, redis-rs
/// requests).
fn simulate(hours: u64) -> (u64, u64, u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("paused runtime");
    rt.block_on(async move {
        let ours = Arc::new(CountingCredential {
            lifetime: Duration::from_secs(3600),
            calls: AtomicU64::new(0),
        });
        let manager = TokenManager::new(ours.clone(), TokenManagerOptions::default());
        let mut events = manager.events();
        manager.credentials().await.expect("first token");
        let refreshed = Arc::new(AtomicU64::new(1));
        let r = refreshed.clone();
        tokio::spawn(async move {
            while let Ok(e) = events.recv().await {
                if let TokenEvent::Refreshed { .. } = e {
                    r.fetch_add(1, Ordering::SeqCst);
                }
            }
        });

        let theirs = Arc::new(CountingCredential {
            lifetime: Duration::from_secs(3600),
            calls: AtomicU64::new(0),
        });
        let mut provider = redis::EntraIdCredentialsProvider::new_with_credential(
            theirs.clone(),
            vec![redis_entra::REDIS_SCOPE.to_string()],
        )
        .expect("provider");
        provider.start(redis::RetryConfig::default());
        let mut stream = provider.subscribe();
        tokio::spawn(async move { while stream.next().await.is_some() {} });

        tokio::time::sleep(Duration::from_secs(hours * 3600)).await;
        // The first Refreshed event may have been sent before the subscription; count tokens by
        // the credential's calls and refreshes by generations.
        let generation = manager.current().map(|c| c.generation()).unwrap_or(0);
        (
            ours.calls.load(Ordering::SeqCst),
            generation,
            theirs.calls.load(Ordering::SeqCst),
        )
    })
}

async fn start(lifetime: Duration, identity: IdentityKind) -> Emulator {
    Emulator::start(EmulatorConfig {
        token_lifetime: lifetime,
        identity,
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator")
}

/// Ours against an emulator for `run`: (token requests, tokens (generations), commands ok,
/// failed, closed at expiry).
async fn ours_real(lifetime: Duration, run: Duration) -> (u64, u64, u64, u64, u64) {
    let emulator = start(lifetime, IdentityKind::ServicePrincipal).await;
    let manager = TokenManager::new(secret_credential(&emulator), TokenManagerOptions::default());
    let mut conn = EntraConnection::connect(connect_options(&emulator), manager.clone())
        .await
        .expect("connect");
    let (mut ok, mut failed) = (0u64, 0u64);
    let end = Instant::now() + run;
    while Instant::now() < end {
        match redis::cmd("PING").query_async::<String>(&mut conn).await {
            Ok(_) => ok += 1,
            Err(_) => failed += 1,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let generation = manager.current().map(|c| c.generation()).unwrap_or(0);
    let stats = emulator.stats();
    let result = (
        Stats::get(&stats.token_requests),
        generation,
        ok,
        failed,
        Stats::get(&stats.closed_at_expiry),
    );
    drop(conn);
    drop(manager);
    emulator.shutdown().await;
    result
}

/// The redis crate's provider against an emulator's managed-identity endpoint for `run`:
/// (token requests, seconds actually run).
async fn redis_rs_real(emulator: &Emulator, run: Duration) -> (u64, f64) {
    let started = Instant::now();
    let provider = redis_rs_provider(emulator);
    tokio::time::sleep(run).await;
    drop(provider); // aborts its refresh task
    let took = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(100)).await;
    (Stats::get(&emulator.stats().token_requests), took)
}

fn main() {
    let parts = std::env::var("PARTS").unwrap_or_else(|_| "sim,redis-rs-30s,real".into());
    if parts.contains("sim") {
        let hours = 24;
        let t = Instant::now();
        let (ours, generations, theirs) = simulate(hours);
        println!(
            "simulation (paused tokio clock, in-process credential, no emulator), 1-hour tokens over {hours} virtual hours ({:.1} s real): ours {ours} token requests for {generations} tokens ({:.2} requests per token, one every {:.1} min); redis-rs provider {theirs} requests (one every {:.1} min)",
            t.elapsed().as_secs_f64(),
            ours as f64 / generations.max(1) as f64,
            hours as f64 * 60.0 / ours.max(1) as f64,
            hours as f64 * 60.0 / theirs.max(1) as f64,
        );
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        if parts.contains("redis-rs-30s") {
            let cap = secs("REDIS_RS_CAP", 10);
            let emulator = start(Duration::from_secs(30), IdentityKind::ManagedIdentity).await;
            let (requests, took) = redis_rs_real(&emulator, Duration::from_secs(cap)).await;
            println!(
                "redis-rs provider, 30 s tokens, managed identity (App Service) against the emulator, capped at {took:.1} s: {requests} token requests ({:.0}/s; a 30 s token needs one per ~15-22 s)",
                requests as f64 / took
            );
            emulator.shutdown().await;
        }
        if parts.contains("real") {
            let s30 = secs("SECS_30S", 180);
            let s5m = secs("SECS_5M", 360);
            println!("real time: ours 30 s tokens for {s30} s, ours 5 min tokens for {s5m} s, redis-rs 5 min tokens for {s5m} s, concurrently");
            let rr_emulator = start(Duration::from_secs(300), IdentityKind::ManagedIdentity).await;
            let (a, b, c) = tokio::join!(
                ours_real(Duration::from_secs(30), Duration::from_secs(s30)),
                ours_real(Duration::from_secs(300), Duration::from_secs(s5m)),
                redis_rs_real(&rr_emulator, Duration::from_secs(s5m)),
            );
            for (name, (requests, tokens, ok, failed, closed)) in [("30 s", a), ("5 min", b)] {
                println!(
                    "ours, {name} tokens: {requests} token requests for {tokens} tokens ({:.2} per token); PING ok {ok}, failed {failed}; closed_at_expiry {closed}",
                    requests as f64 / tokens.max(1) as f64
                );
            }
            println!(
                "redis-rs provider, 5 min tokens, {:.0} s: {} token requests (one every {:.1} s; ours refreshes a 5 min token every ~150 s)",
                c.1,
                c.0,
                c.1 / c.0.max(1) as f64
            );
            rr_emulator.shutdown().await;
        }
    });
}
