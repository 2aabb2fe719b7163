//! `redis-entra demo`: the project's main job. Starts the local Azure in process, then runs the two
//! scenarios of Microsoft's Azure Cache for Redis Python samples against it: hello world, and a long-running client that keeps working
//! across several token lifetimes while a connection that is never re-authenticated is closed
//! at expiry, as Azure closes it.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context};
use clap::Args;
use redis::AsyncCommands;
use redis_entra::credential::{client_secret, ClientSecretOptions};
use redis_entra::{
    ConnectOptions, EntraConnection, TlsOptions, TokenEvent, TokenManager, TokenManagerOptions,
};
use redis_entra_emulator::{Emulator, EmulatorConfig, IdentityKind};

use crate::emulator::parse_duration;
use crate::Outcome;

/// `demo`'s flags.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How long the emulator's tokens live.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub token_lifetime: Duration,
    /// How many token lifetimes the long-running client runs.
    #[arg(long, default_value_t = 3)]
    pub lifetimes: u32,
    /// Pause between two SET/GET rounds of the long-running client.
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub interval: Duration,
}

fn secs_until(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::now())
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> Outcome {
    if args.token_lifetime < Duration::from_secs(4) {
        return Err(anyhow!("--token-lifetime must be at least 4s").into());
    }
    let started = Instant::now();
    let t = move || format!("[t+{:>5.1}s]", started.elapsed().as_secs_f64());

    println!("redis-entra demo: Microsoft Entra ID authentication for Azure Cache for Redis, against a local Azure");
    let emulator = Emulator::start(EmulatorConfig {
        token_lifetime: args.token_lifetime,
        identity: IdentityKind::ServicePrincipal,
        ..EmulatorConfig::default()
    })
    .await
    .context("starting the emulator (is redis-server installed?)")?;
    let port = emulator.gateway_addr().port();
    println!(
        "{} emulator: Entra ID at {} (tenant {}), Redis gateway at localhost:{port} (TLS) in front of redis-server, tokens live {}s",
        t(),
        emulator.authority(),
        emulator.tenant_id(),
        args.token_lifetime.as_secs()
    );
    let sp = emulator.service_principal().clone();
    println!(
        "{} identity: service principal {} (object id {}), access policy Data Owner",
        t(),
        sp.client_id,
        sp.object_id
    );

    let tls = TlsOptions::with_ca_pem(emulator.ca_pem().to_string())?;
    let credential = client_secret(
        ClientSecretOptions::new(
            emulator.tenant_id().to_string(),
            sp.client_id.clone(),
            sp.secret.clone().unwrap_or_default(),
        )
        .with_authority_host(emulator.authority().to_string())
        .with_tls(tls.clone()),
    )?;
    let manager = TokenManager::new(credential, TokenManagerOptions::default());

    // Count and print what the token manager and the connection report.
    let refreshed = Arc::new(AtomicU64::new(0));
    let reauthenticated = Arc::new(AtomicU64::new(0));
    let reconnected = Arc::new(AtomicU64::new(0));
    let mut events = manager.events();
    let counters = (
        refreshed.clone(),
        reauthenticated.clone(),
        reconnected.clone(),
    );
    let printer = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(TokenEvent::Refreshed {
                    username,
                    expires_on,
                    generation,
                }) => {
                    counters.0.fetch_add(1, Ordering::Relaxed);
                    println!(
                        "{} token #{generation} acquired: username (oid) {username}, expires in {:.1}s",
                        t(),
                        secs_until(expires_on)
                    );
                }
                Ok(TokenEvent::ConnectionReauthenticated {
                    connection_id,
                    expires_on,
                    took,
                }) => {
                    counters.1.fetch_add(1, Ordering::Relaxed);
                    println!(
                        "{} connection {connection_id} re-authenticated in place (AUTH <oid> <new token>) in {:.1} ms; now valid for {:.1}s",
                        t(),
                        took.as_secs_f64() * 1000.0,
                        secs_until(expires_on)
                    );
                }
                Ok(TokenEvent::Reconnected {
                    connection_id,
                    reason,
                }) => {
                    counters.2.fetch_add(1, Ordering::Relaxed);
                    println!(
                        "{} connection {connection_id} reconnected with a fresh token ({reason})",
                        t()
                    );
                }
                Ok(TokenEvent::RefreshFailed {
                    error, retry_in, ..
                }) => println!(
                    "{} token request failed ({error}); retrying in {:.1}s",
                    t(),
                    retry_in.as_secs_f64()
                ),
                Ok(TokenEvent::ReauthenticationFailed {
                    connection_id,
                    error,
                }) => println!(
                    "{} connection {connection_id} re-authentication failed: {error}",
                    t()
                ),
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });

    // Scenario 1: hello world.
    println!("\n== hello world ==");
    let mut options = ConnectOptions::new("localhost", port);
    options.tls = tls;
    let first = manager.credentials().await.context("acquiring a token")?;
    let mut conn = EntraConnection::connect(options.clone(), manager.clone())
        .await
        .context("connecting to the gateway")?;
    println!(
        "{} connected: TLS to localhost:{port}, AUTH {} <token> -> OK",
        t(),
        first.username()
    );
    let _: () = conn.set("Az:key1", "value1").await?;
    let value: String = conn.get("Az:key1").await?;
    println!("{} SET Az:key1 value1 -> OK; GET Az:key1 -> {value}", t());
    if value != "value1" {
        return Err(anyhow!("GET Az:key1 returned {value:?}, expected \"value1\"").into());
    }

    // Scenario 2: a long-running client across several token lifetimes.
    println!(
        "\n== re-authentication: SET/GET every {} ms for {} token lifetimes ==",
        args.interval.as_millis(),
        args.lifetimes
    );
    // A control connection authenticated once and never again: Azure closes it at expiry.
    let mut control = options
        .client(&first)?
        .get_multiplexed_async_connection()
        .await
        .context("opening the control connection")?;
    println!(
        "{} control connection opened with token #1 and never re-authenticated (expires in {:.1}s)",
        t(),
        secs_until(first.expires_on())
    );
    let run_for = args.token_lifetime * args.lifetimes + Duration::from_secs(2);
    let deadline = Instant::now() + run_for;
    let (mut ok, mut failed, mut round) = (0u64, 0u64, 0u64);
    let mut last_report = Instant::now();
    while Instant::now() < deadline {
        round += 1;
        let key = format!("Az:key{}", round % 100);
        let value = format!("value{round}");
        let result: redis::RedisResult<Option<String>> = async {
            let _: () = conn.set(&key, &value).await?;
            conn.get(&key).await
        }
        .await;
        match result {
            Ok(Some(v)) if v == value => ok += 2,
            Ok(other) => {
                failed += 1;
                println!("{} GET {key} returned {other:?}, expected {value:?}", t());
            }
            Err(e) => {
                failed += 1;
                println!("{} command failed: {e}", t());
            }
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            println!("{} {ok} commands OK, {failed} failed so far", t());
            last_report = Instant::now();
        }
        tokio::time::sleep(args.interval).await;
    }
    let control_closed = redis::cmd("PING")
        .query_async::<String>(&mut control)
        .await
        .is_err();
    println!(
        "{} control connection: {}",
        t(),
        if control_closed {
            "closed by the server when its token expired, as Azure does"
        } else {
            "STILL OPEN after its token expired (the gateway should have closed it)"
        }
    );

    let stats = emulator.stats();
    let token_requests = stats.token_requests.load(Ordering::Relaxed);
    let closed_at_expiry = stats.closed_at_expiry.load(Ordering::Relaxed);
    let refreshed = refreshed.load(Ordering::Relaxed);
    let reauthenticated = reauthenticated.load(Ordering::Relaxed);
    let reconnected = reconnected.load(Ordering::Relaxed);
    printer.abort();
    drop(conn);
    emulator.shutdown().await;

    println!("\n== summary ==");
    println!("tokens acquired:               {refreshed} ({token_requests} token requests)");
    println!("in-place re-authentications:   {reauthenticated}");
    println!("reconnections:                 {reconnected}");
    println!("commands OK / failed:          {ok} / {failed}");
    println!("connections closed at expiry:  {closed_at_expiry}");
    let wanted = u64::from(args.lifetimes);
    let mut problems = Vec::new();
    if failed > 0 {
        problems.push(format!("{failed} commands failed"));
    }
    if reauthenticated < wanted {
        problems.push(format!(
            "only {reauthenticated} re-authentications in {wanted} token lifetimes"
        ));
    }
    if !control_closed {
        problems.push("the never re-authenticated connection was not closed at expiry".into());
    }
    if problems.is_empty() {
        println!("result: OK");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("result: FAILED: {}", problems.join("; "));
        Ok(ExitCode::from(1))
    }
}
