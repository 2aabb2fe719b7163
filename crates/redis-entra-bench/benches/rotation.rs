//! Token rotation under load (`cargo bench -p redis-entra-bench --bench rotation`).
//!
//! **Ours**: `CONNS` (default 1,000) `EntraConnection`s share one `TokenManager`; the emulator's
//! tokens live 5 s, so the manager refreshes about every 2.5 s. Every connection issues a `GET`
//! every `INTERVAL_MS` (default 250 ms, random phase) and times it. After every connection is up, the bench follows
//! `ROTATIONS` (default 10) refreshes and measures, per rotation, the time from the manager's
//! `Refreshed` event to the last `ConnectionReauthenticated` event carrying that token (events are
//! read on a dedicated thread; the bench also checks each connection's token afterwards, so a
//! missed event cannot hide a connection that did not re-authenticate). Command latency is split
//! into a window around rotations (from 50 ms before a `Refreshed` event to 500 ms after) and
//! steady state (the rest).
//!
//! **The redis crate's `EntraIdCredentialsProvider`**: the same connections and load through
//! redis-rs' `MultiplexedConnection` with `AsyncConnectionConfig::set_credentials_provider`, the
//! provider built with `new_system_assigned_managed_identity()` reading the emulator's App
//! Service managed-identity endpoint (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`). Its refresh sleeps
//! `expires_on − now − 240 s`, zero for 5 s tokens, so the run is capped at `REDIS_RS_SECS`
//! (default 15) seconds.
//!
//! Plot: `docs/rotation.png`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use plotters::prelude::*;
use redis::aio::ConnectionLike;
use redis::AsyncConnectionConfig;
use redis_entra::{EntraConnection, TokenEvent, TokenManager, TokenManagerOptions};
use redis_entra_bench::{
    connect_options, docs_dir, fonts_ready, ms, percentile, raise_nofile_limit, redis_client,
    redis_rs_provider, secret_credential,
};
use redis_entra_emulator::stats::Stats;
use redis_entra_emulator::{Emulator, EmulatorConfig, IdentityKind};

/// How often each connection sends a `GET` (`INTERVAL_MS`, default 250).
fn interval() -> Duration {
    Duration::from_millis(env_or("INTERVAL_MS", 250) as u64)
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One command: when it started (seconds since the run's start), how long it took, whether it
/// succeeded.
#[derive(Clone, Copy)]
struct Sample {
    at: f64,
    took: Duration,
    ok: bool,
}

/// Starts the load: each connection a `GET` every `every`, until `stop`.
fn load<C>(
    conns: Vec<C>,
    t0: Instant,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Sample>>>
where
    C: ConnectionLike + Send + 'static,
{
    conns
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let phase = Duration::from_micros(rand::random::<u64>() % every.as_micros() as u64);
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let key = format!("bench:rotation:{}", i % 100);
                let mut samples = Vec::with_capacity(400);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let started = Instant::now();
                    let r = redis::cmd("GET")
                        .arg(&key)
                        .query_async::<Option<String>>(&mut conn)
                        .await;
                    samples.push(Sample {
                        at: (started - t0).as_secs_f64(),
                        took: started.elapsed(),
                        ok: r.is_ok(),
                    });
                }
                samples
            })
        })
        .collect()
}

async fn collect(handles: Vec<tokio::task::JoinHandle<Vec<Sample>>>) -> Vec<Sample> {
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("load task"));
    }
    all
}

/// What the event thread saw.
#[derive(Default)]
struct Seen {
    /// (generation, expires_on, when) of each `Refreshed`.
    refreshed: Vec<(u64, SystemTime, Instant)>,
    /// (expires_on, when, AUTH round trip) of each `ConnectionReauthenticated`.
    reauth: Vec<(SystemTime, Instant, Duration)>,
    reauth_failed: u64,
    reconnected: u64,
    lagged: u64,
}

struct Ours {
    conns: usize,
    samples: Vec<Sample>,
    /// Refresh instants in the measured part (seconds since start).
    refreshes: Vec<f64>,
}

async fn ours(conns_n: usize, rotations: usize) -> Ours {
    let emulator = Emulator::start(EmulatorConfig {
        token_lifetime: Duration::from_secs(5),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator");
    let manager = TokenManager::new(secret_credential(&emulator), TokenManagerOptions::default());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut rx = manager.events();
    let seen2 = seen.clone();
    let events = std::thread::spawn(move || loop {
        match rx.blocking_recv() {
            Ok(event) => {
                let now = Instant::now();
                let mut s = seen2.lock().unwrap();
                match event {
                    TokenEvent::Refreshed {
                        generation,
                        expires_on,
                        ..
                    } => s.refreshed.push((generation, expires_on, now)),
                    TokenEvent::ConnectionReauthenticated {
                        expires_on, took, ..
                    } => s.reauth.push((expires_on, now, took)),
                    TokenEvent::ReauthenticationFailed { .. } => s.reauth_failed += 1,
                    TokenEvent::Reconnected { .. } => s.reconnected += 1,
                    _ => {}
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                seen2.lock().unwrap().lagged += n
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    });

    let t_connect = Instant::now();
    let options = connect_options(&emulator);
    let conns: Vec<EntraConnection> = futures::stream::iter(0..conns_n)
        .map(|_| EntraConnection::connect(options.clone(), manager.clone()))
        .buffer_unordered(64)
        .map(|r| r.expect("connect"))
        .collect()
        .await;
    println!(
        "ours: {} EntraConnections up in {:.2} s (one TokenManager, tokens living 5 s)",
        conns.len(),
        t_connect.elapsed().as_secs_f64()
    );
    let requests_before = Stats::get(&emulator.stats().token_requests);
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let handles = load(conns.clone(), t0, interval(), stop.clone());

    // Follow rotations: wait for `rotations` Refreshed events after t0, then 1 s more.
    let first_gen = manager.current().map(|c| c.generation()).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(10 + 5 * rotations as u64);
    while manager.current().map(|c| c.generation()).unwrap_or(0) < first_gen + rotations as u64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Every connection now holds the latest token? (Independent of the events.)
    let latest = manager.current().expect("token").expires_on();
    let stale = conns
        .iter()
        .filter(|c| c.token_expires_on() < latest)
        .count();
    stop.store(true, Ordering::Relaxed);
    let samples = collect(handles).await;
    let run = t0.elapsed().as_secs_f64();
    let requests = Stats::get(&emulator.stats().token_requests) - requests_before;
    let stats = emulator.stats();
    let (closed, auth_ok, auth_failed) = (
        Stats::get(&stats.closed_at_expiry),
        Stats::get(&stats.auth_succeeded),
        Stats::get(&stats.auth_failed),
    );

    let s = std::mem::take(&mut *seen.lock().unwrap());
    let mut per_rotation = Vec::new();
    let mut reauth_rtt = Vec::new();
    let mut refreshes = Vec::new();
    for (generation, expires_on, at) in s.refreshed.iter() {
        if *generation <= first_gen || *at < t0 {
            continue;
        }
        refreshes.push((*at - t0).as_secs_f64());
        let mine: Vec<_> = s.reauth.iter().filter(|r| r.0 == *expires_on).collect();
        reauth_rtt.extend(mine.iter().map(|r| r.2));
        let last = mine.iter().map(|r| r.1).max().unwrap_or(*at);
        per_rotation.push((*generation, mine.len(), last.saturating_duration_since(*at)));
    }
    println!("ours: rotation (generation): connections re-authenticated, Refreshed -> last ConnectionReauthenticated");
    for (g, n, d) in &per_rotation {
        println!(
            "  generation {g}: {n}/{conns_n} re-authenticated, last after {:.1} ms",
            ms(*d)
        );
    }
    let mut spans: Vec<Duration> = per_rotation.iter().map(|r| r.2).collect();
    spans.sort();
    println!(
        "ours: time to re-authenticate all {conns_n} connections over {} rotations: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        spans.len(),
        ms(percentile(&spans, 0.5)),
        ms(percentile(&spans, 0.99)),
        ms(spans.last().copied().unwrap_or_default())
    );
    redis_entra_bench::report("ours: AUTH round trip per connection", &mut reauth_rtt);
    println!(
        "ours: events lagged (missed by the reader) {}, ReauthenticationFailed {}, Reconnected {}; connections not on the latest token 1 s after the last rotation: {stale}",
        s.lagged, s.reauth_failed, s.reconnected
    );
    report_latency("ours", &samples, &refreshes, run);
    println!(
        "ours: token requests during the run {requests} for {} refreshes; gateway: closed_at_expiry {closed}, AUTH ok {auth_ok}, AUTH refused {auth_failed}",
        refreshes.len()
    );
    drop(conns);
    drop(manager);
    emulator.shutdown().await;
    drop(events); // the reader thread ends when the manager's event channel closes
    Ours {
        conns: conns_n,
        samples,
        refreshes,
    }
}

fn report_latency(who: &str, samples: &[Sample], refreshes: &[f64], run: f64) {
    let failed = samples.iter().filter(|s| !s.ok).count();
    let near = |at: f64| refreshes.iter().any(|r| at >= r - 0.05 && at <= r + 0.5);
    let (mut window, mut steady): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
    for s in samples.iter().filter(|s| s.ok) {
        if near(s.at) {
            window.push(s.took);
        } else {
            steady.push(s.took);
        }
    }
    window.sort();
    steady.sort();
    println!(
        "{who}: {} commands in {run:.1} s ({:.0}/s), failed {failed}",
        samples.len(),
        samples.len() as f64 / run
    );
    if !refreshes.is_empty() {
        println!(
            "{who}: latency around rotations (-50 ms..+500 ms, n={}): p50 {:.3} ms, p99 {:.3} ms; steady (n={}): p50 {:.3} ms, p99 {:.3} ms; p99 ratio {:.2}",
            window.len(),
            ms(percentile(&window, 0.5)),
            ms(percentile(&window, 0.99)),
            steady.len(),
            ms(percentile(&steady, 0.5)),
            ms(percentile(&steady, 0.99)),
            ms(percentile(&window, 0.99)) / ms(percentile(&steady, 0.99))
        );
    } else {
        let mut all: Vec<Duration> = samples.iter().filter(|s| s.ok).map(|s| s.took).collect();
        redis_entra_bench::report(&format!("{who}: command latency"), &mut all);
    }
}

struct Theirs {
    samples: Vec<Sample>,
    /// Token requests per 100 ms bucket.
    request_rate: Vec<(f64, f64)>,
}

async fn theirs(conns_n: usize, secs: u64) -> Theirs {
    let emulator = Emulator::start(EmulatorConfig {
        token_lifetime: Duration::from_secs(5),
        identity: IdentityKind::ManagedIdentity,
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator");
    let started = Instant::now();
    let provider = redis_rs_provider(&emulator);
    let client = redis_client(&emulator, None, "unused");
    let t_connect = Instant::now();
    let conns: Vec<_> = futures::stream::iter(0..conns_n)
        .map(|_| {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(10)))
                .set_response_timeout(Some(Duration::from_secs(5)))
                .set_credentials_provider(provider.clone());
            let client = client.clone();
            async move {
                match tokio::time::timeout(
                    Duration::from_secs(15),
                    client.get_multiplexed_async_connection_with_config(&config),
                )
                .await
                {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err("no connection after 15 s".to_string()),
                }
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let connect_failed = conns.iter().filter(|c| c.is_err()).count();
    if let Some(Err(e)) = conns.iter().find(|c| c.is_err()) {
        println!("redis-rs: first connect error: {e}");
    }
    let conns: Vec<_> = conns.into_iter().filter_map(|c| c.ok()).collect();
    println!(
        "redis-rs: {} MultiplexedConnections with EntraIdCredentialsProvider (system-assigned managed identity, App Service endpoint) up in {:.2} s, {connect_failed} failed to connect",
        conns.len(),
        t_connect.elapsed().as_secs_f64()
    );
    let stats = emulator.stats().clone();
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let handles = load(conns, t0, interval(), stop.clone());
    let mut request_rate = Vec::new();
    let mut last = Stats::get(&stats.token_requests);
    let end = t0 + Duration::from_secs(secs);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = Stats::get(&stats.token_requests);
        request_rate.push((t0.elapsed().as_secs_f64(), (now - last) as f64 * 10.0));
        last = now;
    }
    stop.store(true, Ordering::Relaxed);
    let samples = collect(handles).await;
    let run = t0.elapsed().as_secs_f64();
    println!("redis-rs: load stopped");
    drop(provider);
    let total = started.elapsed().as_secs_f64();
    let requests = Stats::get(&stats.token_requests);
    report_latency("redis-rs", &samples, &[], run);
    println!(
        "redis-rs: token requests {requests} in {total:.1} s ({:.0}/s); gateway: closed_at_expiry {}, AUTH ok {}, AUTH refused {}",
        requests as f64 / total,
        Stats::get(&stats.closed_at_expiry),
        Stats::get(&stats.auth_succeeded),
        Stats::get(&stats.auth_failed),
    );
    emulator.shutdown().await;
    Theirs {
        samples,
        request_rate,
    }
}

#[tokio::main]
async fn main() {
    let limit = raise_nofile_limit();
    let conns = env_or("CONNS", 1000);
    let rotations = env_or("ROTATIONS", 10);
    let redis_rs_secs = env_or("REDIS_RS_SECS", 15) as u64;
    println!("open-file limit {limit}; {conns} connections, {rotations} rotations");
    let o = if env_or("OURS", 1) == 1 {
        ours(conns, rotations).await
    } else {
        Ours {
            conns,
            samples: Vec::new(),
            refreshes: Vec::new(),
        }
    };
    let t = if redis_rs_secs > 0 {
        Some(theirs(conns, redis_rs_secs).await)
    } else {
        None
    };
    if fonts_ready() {
        match plot(&o, t.as_ref()) {
            Ok(p) => println!("plot: {}", p.display()),
            Err(e) => eprintln!("plot failed: {e}"),
        }
    }
}

fn plot(o: &Ours, t: Option<&Theirs>) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    let path = docs_dir().join("rotation.png");
    let root = BitMapBackend::new(&path, (1400, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(450);
    let y_max = 50.0f64;
    let clamp = |d: Duration| ms(d).clamp(0.01, y_max * 0.999);

    let x_max = o.samples.iter().map(|s| s.at).fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!(
                "redis-entra: {} EntraConnections, a GET every {} ms each, tokens living 5 s (red lines: Refreshed)",
                o.conns,
                interval().as_millis()
            ),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..x_max, (0.05..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("GET latency (ms, log; failures at top)")
        .draw()?;
    chart.draw_series(o.samples.iter().map(|s| {
        let y = if s.ok { clamp(s.took) } else { y_max * 0.99 };
        let color = if s.ok { BLUE.mix(0.25) } else { RED.mix(1.0) };
        Pixel::new((s.at, y), color)
    }))?;
    for r in &o.refreshes {
        chart.draw_series(LineSeries::new(
            [(*r, 0.05), (*r, y_max)],
            RED.stroke_width(1),
        ))?;
    }

    if let Some(t) = t {
        let x_max = t.samples.iter().map(|s| s.at).fold(0.0, f64::max).max(1.0);
        let mut chart = ChartBuilder::on(&bottom)
            .caption(
                "redis crate's EntraIdCredentialsProvider, same load (orange: token requests per second, right axis)",
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .right_y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, (0.05..y_max).log_scale())?
            .set_secondary_coord(
                0.0..x_max,
                0.0..t.request_rate.iter().map(|r| r.1).fold(1.0, f64::max) * 1.1,
            );
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("GET latency (ms, log; failures at top)")
            .draw()?;
        chart
            .configure_secondary_axes()
            .y_desc("token requests / s")
            .draw()?;
        chart.draw_series(t.samples.iter().map(|s| {
            let y = if s.ok { clamp(s.took) } else { y_max * 0.99 };
            let color = if s.ok { BLUE.mix(0.25) } else { RED.mix(1.0) };
            Pixel::new((s.at, y), color)
        }))?;
        chart.draw_secondary_series(LineSeries::new(
            t.request_rate.iter().copied(),
            RGBColor(255, 140, 0).stroke_width(2),
        ))?;
    }
    root.present()?;
    Ok(path.clone())
}
