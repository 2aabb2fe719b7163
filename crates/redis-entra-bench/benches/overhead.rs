//! Overhead of `EntraConnection` over the plain redis-rs `MultiplexedConnection` it wraps
//! (`cargo bench -p redis-entra-bench --bench overhead`).
//!
//! One emulator (tokens living 1 h, so no refresh during the run), one gateway, one TLS path:
//! - **entra**: `EntraConnection` (service principal token, `AUTH <oid> <token>`);
//! - **static**: redis-rs' `MultiplexedConnection` authenticated once with the emulator's access
//!   key (`AUTH <key>`), through the same gateway to the same `redis-server`.
//!
//! Rounds interleave the two (the order alternates). In a round, `TASKS` tasks share one
//! connection (each holds a clone, as an application does) and each issues `PER_TASK`
//! sequential commands, alternately `SET` and `GET`, timing each. Figures: throughput per round
//! (commands / wall time), and latency percentiles over all rounds. Environment: `ROUNDS`
//! (default 8), `TASKS` (50), `PER_TASK` (2000).
//!
//! `OVERHEAD_ONLY=static` or `=entra` measures one kind only (both connections are still opened
//! and warmed, so two such runs differ only in which kind the measured commands take): run each
//! under `valgrind --tool=callgrind` and the difference of the instruction totals, divided by
//! the commands, is the wrapper's own cost per command, free of the machine's noise
//! (docs/PERFORMANCE.md).

use std::time::{Duration, Instant};

use plotters::prelude::*;
use redis::aio::ConnectionLike;
use redis::AsyncConnectionConfig;
use redis_entra::{EntraConnection, TokenManager, TokenManagerOptions};
use redis_entra_bench::{connect_options, docs_dir, fonts_ready, ms, percentile, redis_client};
use redis_entra_emulator::{Emulator, EmulatorConfig};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One round: `tasks` tasks, each `per_task` sequential commands on a clone of `conn`.
async fn round<C>(conn: C, tasks: usize, per_task: usize) -> (Duration, Vec<Duration>, usize)
where
    C: ConnectionLike + Clone + Send + 'static,
{
    let start = Instant::now();
    let mut handles = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let mut conn = conn.clone();
        handles.push(tokio::spawn(async move {
            let key = format!("bench:overhead:{t}");
            let mut samples = Vec::with_capacity(per_task);
            let mut failed = 0usize;
            for i in 0..per_task {
                let mut cmd = if i % 2 == 0 {
                    redis::cmd("SET")
                } else {
                    redis::cmd("GET")
                };
                cmd.arg(&key);
                if i % 2 == 0 {
                    cmd.arg(i);
                }
                let t0 = Instant::now();
                let r = cmd.query_async::<redis::Value>(&mut conn).await;
                samples.push(t0.elapsed());
                if r.is_err() {
                    failed += 1;
                }
            }
            (samples, failed)
        }));
    }
    let mut all = Vec::with_capacity(tasks * per_task);
    let mut failed = 0;
    for h in handles {
        let (s, f) = h.await.expect("task");
        all.extend(s);
        failed += f;
    }
    (start.elapsed(), all, failed)
}

#[tokio::main]
async fn main() {
    let rounds = env_or("ROUNDS", 8);
    let tasks = env_or("TASKS", 50);
    let per_task = env_or("PER_TASK", 2000);
    let emulator = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    let manager = TokenManager::new(
        redis_entra_bench::secret_credential(&emulator),
        TokenManagerOptions::default(),
    );
    let entra = EntraConnection::connect(connect_options(&emulator), manager.clone())
        .await
        .expect("entra connection");
    let plain = redis_client(&emulator, None, &emulator.primary_key())
        .get_multiplexed_async_connection_with_config(&AsyncConnectionConfig::new())
        .await
        .expect("static connection");

    // Warm-up: both paths, one short round each.
    round(entra.clone(), tasks, 200).await;
    round(plain.clone(), tasks, 200).await;

    let n = tasks * per_task;
    if let Ok(only) = std::env::var("OVERHEAD_ONLY") {
        let started = Instant::now();
        let mut failed = 0;
        for _ in 0..rounds {
            failed += match only.as_str() {
                "static" => round(plain.clone(), tasks, per_task).await.2,
                "entra" => round(entra.clone(), tasks, per_task).await.2,
                other => panic!("OVERHEAD_ONLY={other:?}: use static or entra"),
            };
        }
        println!(
            "overhead, {only} only: {} commands in {:?}, {failed} failed",
            rounds * n,
            started.elapsed()
        );
        drop(entra);
        drop(plain);
        drop(manager);
        emulator.shutdown().await;
        return;
    }
    println!("overhead: {rounds} rounds, {tasks} tasks x {per_task} commands (SET/GET) per round and connection kind");
    let (mut lat_static, mut lat_entra) = (Vec::new(), Vec::new());
    let (mut tput_static, mut tput_entra) = (Vec::new(), Vec::new());
    let mut failed = (0, 0);
    for r in 0..rounds {
        for which in [r % 2, 1 - r % 2] {
            if which == 0 {
                let (wall, lat, f) = round(plain.clone(), tasks, per_task).await;
                tput_static.push(n as f64 / wall.as_secs_f64());
                lat_static.extend(lat);
                failed.0 += f;
            } else {
                let (wall, lat, f) = round(entra.clone(), tasks, per_task).await;
                tput_entra.push(n as f64 / wall.as_secs_f64());
                lat_entra.extend(lat);
                failed.1 += f;
            }
        }
        println!(
            "round {}: static {:.0} cmd/s, entra {:.0} cmd/s, ratio {:.3}",
            r + 1,
            tput_static[r],
            tput_entra[r],
            tput_entra[r] / tput_static[r]
        );
    }
    lat_static.sort();
    lat_entra.sort();
    let sum = |v: &[f64]| v.iter().sum::<f64>();
    let mut ratios: Vec<f64> = tput_entra
        .iter()
        .zip(&tput_static)
        .map(|(e, s)| e / s)
        .collect();
    ratios.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median_ratio = ratios[ratios.len() / 2];
    println!(
        "throughput, all rounds: static {:.0} cmd/s, entra {:.0} cmd/s, entra/static {:.3} (per-round ratios: median {:.3}, min {:.3}, max {:.3})",
        sum(&tput_static) / rounds as f64,
        sum(&tput_entra) / rounds as f64,
        sum(&tput_entra) / sum(&tput_static),
        median_ratio,
        ratios[0],
        ratios[ratios.len() - 1]
    );
    for (name, lat) in [("static", &lat_static), ("entra", &lat_entra)] {
        redis_entra_bench::report(&format!("latency {name}"), &mut lat.clone());
    }
    let p99 = |v: &[Duration]| ms(percentile(v, 0.99));
    let p50 = |v: &[Duration]| ms(percentile(v, 0.5));
    println!(
        "entra/static: p50 {:.3}, p99 {:.3}",
        p50(&lat_entra) / p50(&lat_static),
        p99(&lat_entra) / p99(&lat_static)
    );
    println!("commands failed: static {}, entra {}", failed.0, failed.1);
    println!(
        "gateway: closed_at_expiry {}",
        redis_entra_emulator::stats::Stats::get(&emulator.stats().closed_at_expiry)
    );

    if fonts_ready() {
        match plot(&lat_static, &lat_entra, &tput_static, &tput_entra) {
            Ok(p) => println!("plot: {}", p.display()),
            Err(e) => eprintln!("plot failed: {e}"),
        }
    }
    drop(entra);
    drop(plain);
    drop(manager);
    emulator.shutdown().await;
}

fn plot(
    lat_static: &[Duration],
    lat_entra: &[Duration],
    tput_static: &[f64],
    tput_entra: &[f64],
) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    let path = docs_dir().join("overhead.png");
    let root = BitMapBackend::new(&path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(600);

    // Latency: percentile curve (x: percentile, y: ms, log scale).
    let max = ms(percentile(lat_static, 0.999).max(percentile(lat_entra, 0.999))) * 1.1;
    let min = ms(percentile(lat_static, 0.0).min(percentile(lat_entra, 0.0))).max(0.01);
    let mut chart = ChartBuilder::on(&left)
        .caption(
            "Command latency by percentile (up to p99.9)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..99.9f64, (min..max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .draw()?;
    for (lat, color, name) in [
        (lat_static, RGBColor(120, 120, 120), "static password"),
        (lat_entra, BLUE, "EntraConnection"),
    ] {
        let pts: Vec<(f64, f64)> = (0..=999)
            .map(|i| {
                let p = i as f64 / 10.0;
                (p, ms(percentile(lat, p / 100.0)))
            })
            .collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    // Throughput per round.
    let top = tput_static
        .iter()
        .chain(tput_entra)
        .cloned()
        .fold(0.0, f64::max)
        * 1.15;
    let rounds = tput_static.len();
    let mut chart = ChartBuilder::on(&right)
        .caption("Throughput per round (cmd/s)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(65)
        .build_cartesian_2d(0.5..rounds as f64 + 0.5, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("round")
        .y_desc("commands per second")
        .draw()?;
    for (i, (s, e)) in tput_static.iter().zip(tput_entra).enumerate() {
        let x = (i + 1) as f64;
        chart.draw_series([
            Rectangle::new([(x - 0.35, 0.0), (x, *s)], RGBColor(120, 120, 120).filled()),
            Rectangle::new([(x, 0.0), (x + 0.35, *e)], BLUE.filled()),
        ])?;
    }
    chart
        .draw_series([Rectangle::new(
            [(0.0, 0.0), (0.0, 0.0)],
            RGBColor(120, 120, 120).filled(),
        )])?
        .label("static password")
        .legend(|(x, y)| {
            Rectangle::new(
                [(x, y - 5), (x + 15, y + 5)],
                RGBColor(120, 120, 120).filled(),
            )
        });
    chart
        .draw_series([Rectangle::new([(0.0, 0.0), (0.0, 0.0)], BLUE.filled())])?
        .label("EntraConnection")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], BLUE.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(path.clone())
}
