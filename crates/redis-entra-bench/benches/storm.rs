//! Connection storm (`cargo bench -p redis-entra-bench --bench storm`).
//!
//! `N` (default 10,000) connection attempts start at once, all sharing one fresh
//! `TokenManager` (no token yet). Each one `EntraConnection::connect`s (token, TLS, `AUTH`),
//! sends a `GET`, records the time from the common start to that first reply, and drops its
//! connection. The emulator counts token requests (goal: exactly one).
//!
//! File descriptors: the hard limit here is 20,000 per process, and the gateway holds two per
//! connection (client side and backend), the client one. So the emulator runs in a child process
//! (this binary again, `STORM_EMULATOR_CHILD=1`), each process raises its soft limit to the hard
//! one, and each attempt drops its connection after its first reply; the bench reports the peak
//! number of connections open at once (client side) and the child's peak descriptor count.
//! Plot: `docs/storm.png` (`docs/storm-N.png` for another `N`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plotters::prelude::*;
use redis_entra::credential::{client_secret, ClientSecretOptions};
use redis_entra::{ConnectOptions, EntraConnection, TlsOptions, TokenManager, TokenManagerOptions};
use redis_entra_bench::{docs_dir, fonts_ready, ms, open_fds, percentile, raise_nofile_limit};
use redis_entra_emulator::stats::Stats;
use redis_entra_emulator::{Emulator, EmulatorConfig};
use serde_json::{json, Value};

fn main() {
    if std::env::var_os("STORM_EMULATOR_CHILD").is_some() {
        child();
        return;
    }
    let limit = raise_nofile_limit();
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .env("STORM_EMULATOR_CHILD", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("emulator child");
    let child_pid = child.id().to_string();
    let mut to_child = child.stdin.take().expect("child stdin");
    let mut from_child = BufReader::new(child.stdout.take().expect("child stdout"));
    let mut line = String::new();
    from_child.read_line(&mut line).expect("child's first line");
    let info: Value = serde_json::from_str(&line).expect("child info");
    let mut ask_stats = move || -> Value {
        writeln!(to_child, "stats").expect("to child");
        let mut line = String::new();
        from_child.read_line(&mut line).expect("child stats");
        serde_json::from_str(&line).expect("stats json")
    };

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let s = |k: &str| info[k].as_str().expect(k).to_string();
    let tls = TlsOptions::with_ca_pem(s("ca_pem")).expect("the emulator's CA is PEM");
    let (before, results, wall, peak_open, peak_child_fds, failures, first_error) = rt.block_on(async {
        let credential = client_secret(ClientSecretOptions::new(s("tenant"), s("client_id"), s("secret")).with_authority_host(s("authority")).with_tls(tls.clone()))
        .expect("credential");
        let manager = TokenManager::new(credential, TokenManagerOptions::default());
        let mut options = ConnectOptions::new("localhost", info["port"].as_u64().unwrap() as u16);
        options.tls = tls;
        // What each connect pays before its first byte: building the redis client (the TLS root
        // store from the PEM bundle: the system roots plus the emulator's CA).
        let creds = manager.credentials().await.expect("token");
        let t = Instant::now();
        for _ in 0..50 {
            options.client(&creds).expect("client");
        }
        let client_build = t.elapsed() / 50;
        // And one connection after another, unhurried (token already there).
        let mut sequential = Vec::new();
        for _ in 0..50 {
            let t = Instant::now();
            let mut conn = EntraConnection::connect(options.clone(), manager.clone())
                .await
                .expect("connect");
            let _: Option<String> = redis::cmd("GET")
                .arg("bench:storm:0")
                .query_async(&mut conn)
                .await
                .expect("GET");
            sequential.push(t.elapsed());
        }
        sequential.sort();
        println!(
            "one at a time (token already held): ConnectOptions::client (redis::Client::build_with_tls with the PEM bundle) {:.2} ms; connect + TLS + AUTH + GET p50 {:.2} ms",
            ms(client_build),
            ms(percentile(&sequential, 0.5))
        );
        // The storm itself uses a fresh credential (no cached token) and a fresh manager, and a
        // connect timeout long enough for every attempt to finish on this machine (the default,
        // 10 s, is `CONNECT_TIMEOUT_SECS=10`).
        let credential = client_secret(ClientSecretOptions::new(s("tenant"), s("client_id"), s("secret")).with_authority_host(s("authority")).with_tls(options.tls.clone()))
        .expect("credential");
        let manager = TokenManager::new(credential, TokenManagerOptions::default());
        options.connect_timeout = Duration::from_secs(
            std::env::var("CONNECT_TIMEOUT_SECS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(120),
        );
        let open = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
        // The child's descriptors, sampled every 50 ms.
        let peak_fds = Arc::new(AtomicUsize::new(0));
        let sampler = {
            let peak_fds = peak_fds.clone();
            let pid = child_pid.clone();
            tokio::spawn(async move {
                loop {
                    let fds = tokio::task::spawn_blocking({
                        let pid = pid.clone();
                        move || open_fds(&pid)
                    })
                    .await
                    .unwrap_or(0);
                    peak_fds.fetch_max(fds, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let before = ask_stats();
        let start = Instant::now();
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (options, manager) = (options.clone(), manager.clone());
                let (open, peak, failures, first_error) =
                    (open.clone(), peak.clone(), failures.clone(), first_error.clone());
                tokio::spawn(async move {
                    let attempt = async {
                        let mut conn = EntraConnection::connect(options, manager).await?;
                        let now_open = open.fetch_add(1, Ordering::Relaxed) + 1;
                        peak.fetch_max(now_open, Ordering::Relaxed);
                        let r = redis::cmd("GET")
                            .arg(format!("bench:storm:{}", i % 100))
                            .query_async::<Option<String>>(&mut conn)
                            .await;
                        let took = start.elapsed();
                        drop(conn);
                        open.fetch_sub(1, Ordering::Relaxed);
                        r.map_err(redis_entra::Error::from)?;
                        Ok::<_, redis_entra::Error>(took)
                    };
                    match tokio::time::timeout(Duration::from_secs(180), attempt).await {
                        Ok(Ok(took)) => Some(took),
                        Ok(Err(e)) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            first_error.lock().unwrap().get_or_insert(e.to_string());
                            None
                        }
                        Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            first_error
                                .lock()
                                .unwrap()
                                .get_or_insert("no reply within 180 s".into());
                            None
                        }
                    }
                })
            })
            .collect();
        let mut results = Vec::with_capacity(n);
        for h in handles {
            if let Some(t) = h.await.expect("attempt task") {
                results.push(t);
            }
        }
        let wall = start.elapsed();
        sampler.abort();
        let first_error = first_error.lock().unwrap().clone();
        (
            before,
            results,
            wall,
            peak.load(Ordering::Relaxed),
            peak_fds.load(Ordering::Relaxed),
            failures.load(Ordering::Relaxed),
            first_error,
        )
    });
    let after = ask_stats();
    let delta = |k: &str| after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0);
    let mut sorted = results.clone();
    sorted.sort();
    println!("storm: {n} concurrent connection attempts, one fresh TokenManager, emulator in a child process; open-file limit {limit} per process");
    println!(
        "token requests at the emulator: {} (tokens issued {})",
        delta("token_requests"),
        delta("tokens_issued")
    );
    println!(
        "first replies: {} ok, {failures} failed{}",
        sorted.len(),
        first_error
            .map(|e| format!(" (first error: {e})"))
            .unwrap_or_default()
    );
    println!(
        "time from the common start to the first reply: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms; wall time {:.2} s",
        ms(percentile(&sorted, 0.5)),
        ms(percentile(&sorted, 0.9)),
        ms(percentile(&sorted, 0.99)),
        ms(sorted.last().copied().unwrap_or_default()),
        wall.as_secs_f64()
    );
    println!(
        "gateway: connections accepted {}, AUTH ok {}, AUTH refused {}; peak connections open at once (client side) {peak_open}; emulator child's peak open descriptors {peak_child_fds} (sampled every 50 ms)",
        delta("connections_accepted"),
        delta("auth_succeeded"),
        delta("auth_failed"),
    );
    if fonts_ready() {
        match plot(&sorted, n) {
            Ok(p) => println!("plot: {}", p.display()),
            Err(e) => eprintln!("plot failed: {e}"),
        }
    }
    drop(child.stdin.take());
    let _ = child.wait();
}

/// The emulator child: prints how to reach it, then answers `stats` lines until stdin closes.
fn child() {
    raise_nofile_limit();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let emulator = rt
        .block_on(Emulator::start(EmulatorConfig::default()))
        .expect("emulator");
    let sp = emulator.service_principal().clone();
    let info = json!({
        "port": emulator.gateway_addr().port(),
        "authority": emulator.authority(),
        "tenant": emulator.tenant_id(),
        "client_id": sp.client_id,
        "secret": sp.secret,
        "ca_pem": emulator.ca_pem(),
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{info}").expect("stdout");
    out.flush().expect("flush");
    drop(out);
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "stats" {
            let s = emulator.stats();
            let v = json!({
                "token_requests": Stats::get(&s.token_requests),
                "tokens_issued": Stats::get(&s.tokens_issued),
                "connections_accepted": Stats::get(&s.connections_accepted),
                "auth_succeeded": Stats::get(&s.auth_succeeded),
                "auth_failed": Stats::get(&s.auth_failed),
            });
            println!("{v}");
        }
    }
    rt.block_on(emulator.shutdown());
}

fn plot(sorted: &[Duration], n: usize) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    // The default run's plot is the one in docs/; other sizes get their own file.
    let path = if n == 10_000 {
        docs_dir().join("storm.png")
    } else {
        docs_dir().join(format!("storm-{n}.png"))
    };
    let root = BitMapBackend::new(&path, (900, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = ms(sorted.last().copied().unwrap_or_default()).max(1.0) * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{n} concurrent connects sharing one fresh TokenManager: first replies over time"
            ),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max, 0.0..n as f64)?;
    chart
        .configure_mesh()
        .x_desc("ms since the common start")
        .y_desc("attempts with a reply")
        .draw()?;
    chart.draw_series(LineSeries::new(
        sorted
            .iter()
            .enumerate()
            .map(|(i, d)| (ms(*d), (i + 1) as f64)),
        BLUE.stroke_width(2),
    ))?;
    root.present()?;
    Ok(path.clone())
}
