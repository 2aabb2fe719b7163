//! Gateway throughput and memory (issue 6).
//!
//! ```sh
//! scripts/bench-setup            # installs haproxy if missing
//! cargo bench -p redis-entra-emulator --bench gateway
//! ```
//!
//! Throughput: `redis-benchmark` (GET and SET, 50 clients, 200,000 requests times the
//! pipeline depth, `-P 1` and `-P 16`, TLS) against three targets in one run, interleaved, each
//! run `ROUNDS` times (default 2; the best round and the median of the rounds are reported):
//!
//! - `gateway`: the emulator's Redis gateway (token of the service principal, `--user <oid>`);
//! - `haproxy`: haproxy in TCP mode terminating TLS in front of the same `redis-server` (its
//!   unix socket, as the backend user `entra-data-owner`);
//! - `redis-tls`: a separate `redis-server` with its own TLS port (same build and persistence
//!   settings as the backend).
//!
//! haproxy and the TLS `redis-server` serve a certificate of a second [`Pki`] (the same kind:
//! ECDSA P-256 for `localhost`, issued by its own CA): the emulator keeps its own key private.
//!
//! Beside the rates, each run's CPU time per request of the TLS-terminating process, of
//! `redis-benchmark` and of the `redis-server` behind, and their `read`/`write` system calls
//! (`/proc/PID/stat`, `/proc/PID/io`): figures that the machine's other load disturbs less.
//!
//! `GATEWAY_BENCH_ONLY=memory` measures memory only (no throughput rounds);
//! `GATEWAY_BENCH_ONLY=throughput`, throughput only. `GATEWAY_BENCH_DEPTHS=16` runs only the
//! depths listed; `GATEWAY_BENCH_TARGETS=gateway,haproxy` only the targets listed (e.g. one at a
//! time under `perf record`); `GATEWAY_BENCH_REQUESTS=N`, N requests per run at every depth;
//! `GATEWAY_BENCH_WORKERS=N`, the emulator's runtime on N worker threads (default 2).
//!
//! Memory: a child process (this binary again, `GATEWAY_BENCH_CLIENT=1`) opens N idle
//! authenticated TLS connections; the figure is the RSS growth of the server side divided by N.
//! For the gateway that is this process (the emulator runs in it) plus, separately, the backend
//! `redis-server` (each gateway connection has its own backend connection).
//!
//! Loopback only; everything is stopped at the end.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use redis_entra_emulator::backend::BackendAddr;
use redis_entra_emulator::directory::{AccessPolicy, REDIS_RESOURCE};
use redis_entra_emulator::tls::Pki;
use redis_entra_emulator::{Emulator, EmulatorConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLIENTS: u32 = 50;
/// Requests per `redis-benchmark` run at `-P 1`; a deeper pipeline runs as many more, so that
/// every run lasts about as long (seconds, not a quarter of one) and the figures are the
/// steady state rather than the 50 connections' set-up. `GATEWAY_BENCH_REQUESTS` sets a fixed
/// number for every depth instead (200000 repeats the figures before 2026-12-08).
const REQUESTS: u32 = 200_000;

/// The pipeline depths to run: [`DEPTHS`], or those `GATEWAY_BENCH_DEPTHS` lists
/// (comma-separated, e.g. `16`).
fn depths() -> Vec<u32> {
    match std::env::var("GATEWAY_BENCH_DEPTHS") {
        Ok(list) => list
            .split(',')
            .filter_map(|d| d.trim().parse().ok())
            .collect(),
        Err(_) => DEPTHS.to_vec(),
    }
}

/// Whether to run `target`: all, or those `GATEWAY_BENCH_TARGETS` lists (comma-separated).
fn wanted(target: &str) -> bool {
    std::env::var("GATEWAY_BENCH_TARGETS")
        .map_or(true, |list| list.split(',').any(|t| t.trim() == target))
}

/// Requests per run at `depth`.
fn requests(depth: u32) -> u32 {
    std::env::var("GATEWAY_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(REQUESTS * depth)
}
const DEPTHS: [u32; 2] = [1, 16];

fn main() -> Result<()> {
    if std::env::var_os("GATEWAY_BENCH_CLIENT").is_some() {
        return client_main();
    }
    let fd_limit = raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            std::env::var("GATEWAY_BENCH_WORKERS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(2),
        )
        .enable_all()
        .build()?;
    rt.block_on(run(fd_limit))
}

/// One target of `redis-benchmark` and of the memory test.
struct Target {
    name: &'static str,
    port: u16,
    ca: PathBuf,
    user: String,
    password: String,
}

async fn run(fd_limit: u64) -> Result<()> {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let started = Instant::now();
    let emulator = Emulator::start(EmulatorConfig {
        token_lifetime: Duration::from_secs(3600),
        ..Default::default()
    })
    .await?;
    let sp = emulator.service_principal().clone();
    let token = emulator.issuer().issue(&sp, REDIS_RESOURCE)?.token;
    let socket = match emulator.backend().addr() {
        BackendAddr::Unix(p) => p.clone(),
        other => bail!("expected a unix-socket backend, got {other:?}"),
    };
    let (owner, owner_password) = emulator
        .backend()
        .credentials(&AccessPolicy::DataOwner)
        .context("no data-owner credentials")?;
    let backend_pid = find_pid_by_cmdline(socket.parent().context("socket dir")?)
        .context("backend redis-server pid")?;

    // A second PKI for haproxy and redis-server's own TLS port, written to a private dir.
    let dir = tempfile::Builder::new()
        .prefix("gateway-bench-")
        .tempdir()?;
    let pki = Pki::generate()?;
    let ca = dir.path().join("ca.pem");
    let cert = dir.path().join("server.crt");
    let key = dir.path().join("server.key");
    let bundle = dir.path().join("server.pem");
    write_private(&ca, pki.ca_pem())?;
    write_private(&cert, pki.server_cert_pem())?;
    write_private(&key, pki.server_key_pem())?;
    write_private(
        &bundle,
        &format!("{}{}", pki.server_cert_pem(), pki.server_key_pem()),
    )?;
    let emulator_ca = dir.path().join("emulator-ca.pem");
    write_private(&emulator_ca, emulator.ca_pem())?;

    let haproxy_port = free_port()?;
    let haproxy_cfg = dir.path().join("haproxy.cfg");
    write_private(
        &haproxy_cfg,
        &format!(
            "global\n  maxconn 9500\n  nbthread 2\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
             timeout client 300s\n  timeout server 300s\n\nfrontend fe\n  bind 127.0.0.1:{haproxy_port} ssl crt {bundle}\n  \
             default_backend be\n\nbackend be\n  server redis unix@{sock}\n",
            bundle = bundle.display(),
            sock = socket.display()
        ),
    )?;
    let haproxy = Guard(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&haproxy_cfg)
            .stdout(Stdio::null())
            .spawn()
            .context("starting haproxy (run scripts/bench-setup)")?,
    );
    let tls_port = free_port()?;
    let redis_tls = Guard(
        Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &tls_port.to_string()])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&ca)
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args([
                "--maxclients",
                "20000",
                "--loglevel",
                "warning",
                "--logfile",
                "",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .context("starting redis-server --tls-port")?,
    );
    wait_port(haproxy_port).await?;
    wait_port(tls_port).await?;
    eprintln!("setup took {:?}", started.elapsed());

    let targets = [
        Target {
            name: "gateway",
            port: emulator.gateway_addr().port(),
            ca: emulator_ca.clone(),
            user: sp.object_id.clone(),
            password: token.clone(),
        },
        Target {
            name: "haproxy",
            port: haproxy_port,
            ca: ca.clone(),
            user: owner.to_string(),
            password: owner_password.to_string(),
        },
        Target {
            name: "redis-tls",
            port: tls_port,
            ca: ca.clone(),
            user: "default".into(),
            password: "unused".into(),
        },
    ];

    // Memory first, on fresh servers.
    // Each proxied connection costs its proxy two descriptors (client side and backend side):
    // with the usual hard limit of 20,000 the second size is 9,000, not 10,000.
    let max_conns = ((fd_limit.saturating_sub(1_000)) / 2).min(10_000) as usize / 1_000 * 1_000;
    let only = std::env::var("GATEWAY_BENCH_ONLY").unwrap_or_default();
    let memory_only = only == "memory";
    let sizes: &[usize] = if only == "throughput" {
        &[]
    } else {
        &[1_000, max_conns]
    };
    let mut memory = Vec::new();
    for &n in sizes {
        for t in &targets {
            let pids: Vec<(&str, u32)> = match t.name {
                "gateway" => vec![("emulator", std::process::id()), ("backend", backend_pid)],
                "haproxy" => vec![("haproxy", haproxy.0.id()), ("backend", backend_pid)],
                _ => vec![("redis-server", redis_tls.0.id())],
            };
            let m = measure_memory(t, n, &pids).await?;
            eprintln!("memory {} n={n}: {m:?}", t.name);
            memory.push((t.name, n, m));
        }
    }

    if memory_only {
        print_memory(&memory);
        drop(haproxy);
        drop(redis_tls);
        emulator.shutdown().await;
        return Ok(());
    }

    // Throughput, interleaved.
    let mut results: Vec<(&str, u32, String, f64, f64)> = Vec::new();
    // Every round's requests per second, for the medians.
    let mut every: Vec<(&str, u32, String, f64)> = Vec::new();
    // CPU time of the process that terminates TLS (the emulator is this process), per request,
    // for each run: a figure that the machine's other load disturbs less than the rates.
    let mut cpu: Vec<(&str, u32, f64)> = Vec::new();
    // Read and write system calls per request (`/proc/PID/io`) of the same process and of
    // the redis-server behind it.
    let mut calls: Vec<(&str, u32, f64, f64)> = Vec::new();
    // CPU time per request of redis-benchmark (this process' reaped children) and of the
    // redis-server that executes the commands: what the target costs the rest of the machine.
    let mut others: Vec<(&str, u32, f64, f64)> = Vec::new();
    let server_pid = |name: &str| match name {
        "redis-tls" => redis_tls.0.id(),
        _ => backend_pid,
    };
    let ticks_per_sec = ticks_per_sec();
    let proxy_pid = |name: &str| match name {
        "gateway" => std::process::id(),
        "haproxy" => haproxy.0.id(),
        _ => redis_tls.0.id(),
    };
    for round in 0..rounds {
        for depth in depths() {
            for t in targets.iter().filter(|t| wanted(t.name)) {
                let before = cpu_ticks(proxy_pid(t.name))?;
                let calls_before = syscalls(proxy_pid(t.name))?;
                let client_before = children_ticks()?;
                let server_before = cpu_ticks(server_pid(t.name))?;
                let server_calls_before = syscalls(server_pid(t.name))?;
                let rows = redis_benchmark(t, depth)?;
                let client = children_ticks()?.saturating_sub(client_before);
                let server = cpu_ticks(server_pid(t.name))?.saturating_sub(server_before);
                let server_calls =
                    syscalls(server_pid(t.name))?.saturating_sub(server_calls_before);

                let ticks = cpu_ticks(proxy_pid(t.name))?.saturating_sub(before);
                let made = syscalls(proxy_pid(t.name))?.saturating_sub(calls_before);
                let requests = f64::from(requests(depth)) * rows.len() as f64;
                cpu.push((t.name, depth, ticks as f64 * 1e6 / ticks_per_sec / requests));
                calls.push((
                    t.name,
                    depth,
                    made as f64 / requests,
                    server_calls as f64 / requests,
                ));
                let per_request = |ticks: u64| ticks as f64 * 1e6 / ticks_per_sec / requests;
                others.push((t.name, depth, per_request(client), per_request(server)));
                for (test, rps, p50) in rows {
                    eprintln!(
                        "round {round} {} -P {depth} {test}: {rps:.0} rps p50 {p50} ms",
                        t.name
                    );
                    every.push((t.name, depth, test.clone(), rps));
                    match results
                        .iter_mut()
                        .find(|r| r.0 == t.name && r.1 == depth && r.2 == test)
                    {
                        Some(r) if r.3 < rps => {
                            r.3 = rps;
                            r.4 = p50;
                        }
                        Some(_) => {}
                        None => results.push((t.name, depth, test, rps, p50)),
                    }
                }
            }
        }
    }

    println!("\n## Results (best of {rounds} rounds)\n");
    println!("| pipeline | test | gateway rps (p50 ms) | haproxy rps (p50 ms) | redis-tls rps (p50 ms) | gateway / haproxy |");
    println!("|---|---|---|---|---|---|");
    for depth in depths() {
        for test in ["SET", "GET"] {
            let get = |name: &str| {
                results
                    .iter()
                    .find(|r| r.0 == name && r.1 == depth && r.2 == test)
                    .map(|r| (r.3, r.4))
                    .unwrap_or((0.0, 0.0))
            };
            let (g, h, r) = (get("gateway"), get("haproxy"), get("redis-tls"));
            println!(
                "| -P {depth} | {test} | {:.0} ({}) | {:.0} ({}) | {:.0} ({}) | {:.2} |",
                g.0,
                g.1,
                h.0,
                h.1,
                r.0,
                r.1,
                g.0 / h.0
            );
        }
    }
    println!("\n## Results (median of {rounds} rounds)\n");
    println!("| pipeline | test | gateway rps | haproxy rps | redis-tls rps | gateway / haproxy |");
    println!("|---|---|---|---|---|---|");
    for depth in depths() {
        for test in ["SET", "GET"] {
            let of = |name: &str| {
                median(
                    every
                        .iter()
                        .filter(|r| r.0 == name && r.1 == depth && r.2 == test)
                        .map(|r| r.3)
                        .collect(),
                )
            };
            let (g, h, r) = (of("gateway"), of("haproxy"), of("redis-tls"));
            println!(
                "| -P {depth} | {test} | {g:.0} | {h:.0} | {r:.0} | {:.2} |",
                g / h
            );
        }
    }
    println!(
        "\n## CPU time per request of the TLS-terminating process (median of {rounds} rounds)\n"
    );
    println!("| pipeline | gateway µs | haproxy µs | redis-tls µs | gateway / haproxy |");
    println!("|---|---|---|---|---|");
    for depth in depths() {
        let of = |name: &str| {
            median(
                cpu.iter()
                    .filter(|r| r.0 == name && r.1 == depth)
                    .map(|r| r.2)
                    .collect(),
            )
        };
        let (g, h, r) = (of("gateway"), of("haproxy"), of("redis-tls"));
        println!("| -P {depth} | {g:.2} | {h:.2} | {r:.2} | {:.2} |", g / h);
    }
    print_two_processes(
        &format!("read/write system calls per request (median of {rounds} rounds; `recv`/`send` are not counted)"),
        "",
        ["TLS-terminating", "redis-server behind"],
        &calls,
        3,
    );
    print_two_processes(
        &format!("CPU time per request of redis-benchmark and of the redis-server behind (median of {rounds} rounds)"),
        " µs",
        ["redis-benchmark", "redis-server"],
        &others,
        2,
    );
    print_memory(&memory);
    let png = plot(&results)?;
    println!("\nplot: {}", png.display());
    println!(
        "\nmachine: {}; {} cores; {}; fd limit {fd_limit}",
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem_total()
    );
    drop(haproxy);
    drop(redis_tls);
    emulator.shutdown().await;
    Ok(())
}

/// The median of `v` (the mean of the middle two for an even count; 0 for none).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
    if n % 2 == 1 {
        at(n / 2)
    } else {
        (at((n / 2).saturating_sub(1)) + at(n / 2)) / 2.0
    }
}

/// Prints a table of two figures per run (`rows`: target, depth, first, second), the median
/// of the rounds for each target, one line per depth and figure.
fn print_two_processes(
    title: &str,
    unit: &str,
    labels: [&str; 2],
    rows: &[(&str, u32, f64, f64)],
    decimals: usize,
) {
    println!("\n## {title}\n");
    println!("| pipeline | process | gateway{unit} | haproxy{unit} | redis-tls{unit} |");
    println!("|---|---|---|---|---|");
    for depth in depths() {
        for (i, process) in labels.iter().enumerate() {
            let of = |name: &str| {
                median(
                    rows.iter()
                        .filter(|r| r.0 == name && r.1 == depth)
                        .map(|r| if i == 0 { r.2 } else { r.3 })
                        .collect(),
                )
            };
            let (g, h, r) = (of("gateway"), of("haproxy"), of("redis-tls"));
            println!(
                "| -P {depth} | {process} | {g:.decimals$} | {h:.decimals$} | {r:.decimals$} |"
            );
        }
    }
}

/// A memory measurement: target, connections, and each process's RSS growth (KiB).
type MemoryRow<'a> = (&'a str, usize, Vec<(String, u64)>);

/// Prints the memory table: RSS growth per process and per connection.
fn print_memory(memory: &[MemoryRow]) {
    println!(
        "\n| target | idle authenticated TLS connections | process | RSS growth | per connection |"
    );
    println!("|---|---|---|---|---|");
    for (name, n, m) in memory {
        for (process, kib) in m {
            println!(
                "| {name} | {n} | {process} | {:.1} MiB | {:.1} KiB |",
                *kib as f64 / 1024.0,
                *kib as f64 / *n as f64
            );
        }
    }
}

/// Draws requests per second as grouped bars (gateway blue, haproxy orange, redis-tls grey;
/// groups: `-P 1` SET, `-P 1` GET, `-P 16` SET, `-P 16` GET), each group scaled to its own
/// highest bar, with a thin line at 100 % of haproxy. Primitives only: no text, so no fonts.
fn plot(results: &[(&str, u32, String, f64, f64)]) -> Result<PathBuf> {
    use plotters::prelude::*;
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/gateway-bench.png");
    let (w, h) = (800i32, 400i32);
    let root = BitMapBackend::new(&path, (w as u32, h as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(127, 127, 127),
    ];
    let groups: Vec<(u32, &str)> = DEPTHS
        .iter()
        .flat_map(|d| [(*d, "SET"), (*d, "GET")])
        .collect();
    let group_w = (w - 40) / groups.len() as i32;
    let bar_w = group_w / 4;
    let base = h - 20;
    for (g, (depth, test)) in groups.iter().enumerate() {
        let rps: Vec<f64> = ["gateway", "haproxy", "redis-tls"]
            .iter()
            .map(|name| {
                results
                    .iter()
                    .find(|r| r.0 == *name && r.1 == *depth && r.2 == *test)
                    .map_or(0.0, |r| r.3)
            })
            .collect();
        let top = rps.iter().cloned().fold(1.0, f64::max);
        let x0 = 20 + g as i32 * group_w + bar_w / 2;
        for (i, v) in rps.iter().enumerate() {
            let bar_h = ((h - 40) as f64 * v / top) as i32;
            let x = x0 + i as i32 * bar_w;
            root.draw(&Rectangle::new(
                [(x, base - bar_h), (x + bar_w - 4, base)],
                colors[i].filled(),
            ))?;
        }
        let y = base - ((h - 40) as f64 * rps[1] / top) as i32;
        root.draw(&PathElement::new(
            vec![(x0 - 4, y), (x0 + 3 * bar_w, y)],
            BLACK.stroke_width(1),
        ))?;
    }
    root.draw(&PathElement::new(vec![(10, base), (w - 10, base)], BLACK))?;
    root.present()?;
    drop(root);
    Ok(path)
}

/// Runs `redis-benchmark` once; returns (test, requests per second, p50 ms) per test.
fn redis_benchmark(t: &Target, depth: u32) -> Result<Vec<(String, f64, f64)>> {
    let out = Command::new("redis-benchmark")
        .arg("--tls")
        .arg("--cacert")
        .arg(&t.ca)
        .args(["-h", "127.0.0.1", "-p", &t.port.to_string()])
        .args(["--user", &t.user, "-a", &t.password])
        .args(["-t", "set,get", "-c", &CLIENTS.to_string()])
        .args([
            "-n",
            &requests(depth).to_string(),
            "-P",
            &depth.to_string(),
            "--csv",
        ])
        .stderr(Stdio::null())
        .output()
        .context("running redis-benchmark")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(',').map(|s| s.trim_matches('"')).collect();
        if f.len() >= 5 && (f[0] == "SET" || f[0] == "GET") {
            rows.push((f[0].to_string(), f[1].parse()?, f[4].parse()?));
        }
    }
    if rows.len() != 2 {
        bail!(
            "redis-benchmark against {}: unexpected output {text:?}",
            t.name
        );
    }
    Ok(rows)
}

/// Opens `n` idle authenticated connections from a child process and returns the RSS growth
/// (KiB) of each of `pids`.
async fn measure_memory(t: &Target, n: usize, pids: &[(&str, u32)]) -> Result<Vec<(String, u64)>> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before: Vec<u64> = pids
        .iter()
        .map(|(_, p)| rss_kib(*p))
        .collect::<Result<_>>()?;
    let mut child = Guard(
        Command::new(std::env::current_exe()?)
            .env("GATEWAY_BENCH_CLIENT", "1")
            .env("BENCH_PORT", t.port.to_string())
            .env("BENCH_CA", &t.ca)
            .env("BENCH_USER", &t.user)
            .env("BENCH_PASSWORD", &t.password)
            .env("BENCH_N", n.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let stdout = child.0.stdout.take().context("child stdout")?;
    let line = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        }),
    )
    .await
    .context("the client process did not report in 120 s")???;
    if line.trim() != format!("ready {n}") {
        bail!("client for {}: {line:?}", t.name);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: Vec<u64> = pids
        .iter()
        .map(|(_, p)| rss_kib(*p))
        .collect::<Result<_>>()?;
    // Closing stdin ends the child, which closes its connections.
    drop(child.0.stdin.take());
    let _ = child.0.wait();
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(pids
        .iter()
        .zip(before.iter().zip(after))
        .map(|((name, _), (b, a))| (name.to_string(), a.saturating_sub(*b)))
        .collect())
}

/// The child: opens `BENCH_N` TLS connections, authenticates each, reports, waits for stdin EOF.
fn client_main() -> Result<()> {
    let var = |k: &str| std::env::var(k).with_context(|| k.to_string());
    let port: u16 = var("BENCH_PORT")?.parse()?;
    let n: usize = var("BENCH_N")?.parse()?;
    let user = var("BENCH_USER")?;
    let password = var("BENCH_PASSWORD")?;
    let ca = std::fs::read(var("BENCH_CA")?)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca) {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let auth = format!(
        "*3\r\n$4\r\nAUTH\r\n${}\r\n{user}\r\n${}\r\n{password}\r\n",
        user.len(),
        password.len()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let conns = rt.block_on(async {
        futures::stream::iter(0..n)
            .map(|_| {
                let connector = connector.clone();
                let auth = auth.clone();
                async move {
                    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                    let mut tls = connector
                        .connect(ServerName::try_from("localhost")?, tcp)
                        .await?;
                    tls.write_all(auth.as_bytes()).await?;
                    tls.flush().await?;
                    let mut buf = [0u8; 64];
                    let k = tokio::time::timeout(Duration::from_secs(20), tls.read(&mut buf))
                        .await
                        .context("no reply to AUTH in 20 s")??;
                    if !buf[..k].starts_with(b"+OK") {
                        bail!("AUTH: {:?}", String::from_utf8_lossy(&buf[..k]));
                    }
                    Ok(tls)
                }
            })
            .buffer_unordered(64)
            .collect::<Vec<Result<_>>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()
    })?;
    println!("ready {}", conns.len());
    std::io::stdout().flush()?;
    let mut sink = String::new();
    let _ = std::io::stdin().read_line(&mut sink);
    drop(conns);
    Ok(())
}

/// Kills and reaps a child on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        let want = libc::rlimit {
            rlim_cur: 65_536,
            rlim_max: lim.rlim_max.max(65_536),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
            return want.rlim_cur;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        lim.rlim_cur
    }
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_port(port: u16) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..100 {
        if StdStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("nothing listens on {addr}")
}

/// User plus system CPU time of `pid` (all its threads), in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    stat_sum(&format!("/proc/{pid}/stat"), 14, 15)
}

/// User plus system CPU time of this process' children that were waited for, in clock ticks.
fn children_ticks() -> Result<u64> {
    stat_sum("/proc/self/stat", 16, 17)
}

/// Fields `a` plus `b` (numbered from 1, as in proc(5)) of a `/proc/PID/stat` file.
fn stat_sum(path: &str, a: usize, b: usize) -> Result<u64> {
    let stat = std::fs::read_to_string(path)?;
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let rest = stat.rsplit_once(')').context("/proc/PID/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .context("/proc/PID/stat field")?
            .parse()
            .context("/proc/PID/stat field")
    };
    Ok(field(a)? + field(b)?)
}

/// Read plus write system calls `pid` made so far (`syscr` + `syscw` of `/proc/PID/io`).
fn syscalls(pid: u32) -> Result<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
    let mut total = 0;
    for line in io.lines() {
        if let Some(("syscr" | "syscw", n)) = line.split_once(": ") {
            total += n.trim().parse::<u64>().context("/proc/PID/io")?;
        }
    }
    Ok(total)
}

/// Clock ticks per second (`getconf CLK_TCK`).
fn ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")
}

/// The pid of the process whose command line mentions `needle` (the backend's directory).
fn find_pid_by_cmdline(needle: &Path) -> Option<u32> {
    let needle = needle.to_string_lossy().into_owned();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        String::from_utf8_lossy(&cmd)
            .contains(&needle)
            .then_some(pid)
    })
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default()
}

fn mem_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_default()
}
