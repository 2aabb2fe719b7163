//! Throughput of valkey-server with the module (clients authenticated with an Entra token) and
//! without it (a password), same binary, same run, interleaved; and `AUTH`s per second for a
//! fleet re-authenticating with one fresh token. Run through `scripts/bench-module`.
//!
//! ```text
//! cargo run -p redis-entra-module --example bench_module -- MODULE.so [ROUNDS]
//! ```

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use support::{Minter, Server};

/// `redis-benchmark` against `port`; the requests per second of each test, by name.
fn benchmark(port: u16, user: &str, password: &str, extra: &[&str]) -> Result<Vec<(String, f64)>> {
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--user",
            user,
            "-a",
            password,
        ])
        .args(["-c", "50", "--csv"])
        .args(extra)
        .output()
        .context("running redis-benchmark (Debian: redis-tools)")?;
    if !out.status.success() {
        bail!("redis-benchmark: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = Vec::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split(',').map(|c| c.trim_matches('"')).collect();
        if let (Some(name), Some(rps)) = (cols.first(), cols.get(1).and_then(|r| r.parse().ok())) {
            rows.push((name.to_string(), rps));
        }
    }
    if rows.is_empty() {
        bail!("redis-benchmark printed no figures: {text}");
    }
    Ok(rows)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let module = PathBuf::from(
        args.next()
            .context("usage: bench_module MODULE.so [ROUNDS]")?,
    );
    let rounds: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(3);
    std::env::set_var("REDIS_ENTRA_MODULE_SO", &module);
    let emulator = support::emulator(Duration::from_secs(3600)).await;
    let valkey = support::valkey_server();
    let version = Command::new(&valkey).arg("--version").output()?;
    println!(
        "server: {}",
        String::from_utf8_lossy(&version.stdout).trim()
    );
    println!("module: {}", module.display());
    let with = Server::start_with_module(
        &valkey,
        &module,
        &emulator.ca_file(),
        &[
            "authority",
            emulator.authority(),
            "tenant",
            emulator.tenant_id(),
        ],
    )?;
    let without = Server::start_plain(&valkey)?;
    let sp = emulator.service_principal();
    with.create_user(&sp.object_id)?;
    for server in [&with, &without] {
        let mut admin = server.connect()?;
        admin
            .cmd(&[
                "ACL",
                "SETUSER",
                "bench",
                "on",
                ">bench-password",
                "+@all",
                "allkeys",
            ])
            .map_err(anyhow::Error::msg)?;
    }
    let token = Minter {
        emulator: &emulator,
    }
    .token(sp, 3600, |_| {});

    for depth in ["1", "16"] {
        let mut module_rps: Vec<(String, Vec<f64>)> = Vec::new();
        let mut plain_rps: Vec<(String, Vec<f64>)> = Vec::new();
        for _ in 0..rounds {
            let common = ["-t", "set,get", "-n", "200000", "-P", depth];
            for (target, rows) in [
                (
                    &mut module_rps,
                    benchmark(with.port, &sp.object_id, &token, &common)?,
                ),
                (
                    &mut plain_rps,
                    benchmark(without.port, "bench", "bench-password", &common)?,
                ),
            ] {
                for (name, rps) in rows {
                    match target.iter_mut().find(|(n, _)| *n == name) {
                        Some((_, v)) => v.push(rps),
                        None => target.push((name, vec![rps])),
                    }
                }
            }
        }
        for ((name, m), (_, p)) in module_rps.into_iter().zip(plain_rps) {
            let (m, p) = (median(m), median(p));
            println!(
                "-P {depth:>2} {name:<4} module+token {m:>10.0} req/s   no module+password {p:>10.0} req/s   ratio {:.3}",
                m / p
            );
        }
    }
    // A fleet re-authenticating with one fresh token: AUTH <oid> <token> over 50 connections.
    let auth_token = benchmark(
        with.port,
        &sp.object_id,
        &token,
        &["-n", "50000", "AUTH", &sp.object_id, &token],
    )?;
    let auth_password = benchmark(
        without.port,
        "bench",
        "bench-password",
        &["-n", "50000", "AUTH", "bench", "bench-password"],
    )?;
    println!(
        "AUTH <oid> <token> (one token, remembered after its first verification): {:.0}/s; AUTH <user> <password> without the module: {:.0}/s",
        auth_token[0].1, auth_password[0].1
    );
    println!(
        "refused: {}, accepted: {}",
        with.stat("refused")?,
        with.stat("accepted")?
    );
    Ok(())
}
