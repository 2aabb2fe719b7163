//! Soak: every kind of connection across thousands of token rotations and identity outages.
//!
//! ```sh
//! cargo bench -p redis-entra-bench --bench soak
//! ```
//!
//! The emulators run in a child process (this binary again, `SOAK_ROLE=emulator`), one per kind
//! of connection (the cluster kind gets a 3-node cluster), so this process's RSS is the clients'
//! alone and each emulator's counters belong to one kind. Identity outages are switched in the
//! child through its stdin. Each kind has its own `TokenManager` (default policies); tokens live
//! `SOAK_TOKEN_SECS`, so they are refreshed at half their life.
//!
//! Knobs (environment): `SOAK_SECS` (measured phase, default 330), `SOAK_WARMUP_SECS` (45,
//! including one long outage when it fits), `SOAK_CONNS` (connections per kind, 100),
//! `SOAK_TOKEN_SECS` (6), `SOAK_INTERVAL_MS` (pause between a connection's rounds, 1000),
//! `SOAK_OUTAGE_EVERY_SECS` (20), `SOAK_SHORT_OUTAGE_MS` (0.7 × the token lifetime),
//! `SOAK_LONG_OUTAGE_SECS` (3 × the token lifetime), `SOAK_KINDS` (comma-separated subset),
//! `SOAK_PLOT` (default `docs/soak.png`), `SOAK_NO_TOKEN_RETRY_MS` (overrides
//! `RetryPolicy::max_delay_without_token`, to compare), `RUST_LOG` (default `off`: failures are
//! counted and sampled in the report instead).
//!
//! Figures and what they mean: `docs/RELIABILITY.md`, "Soak".

use std::collections::HashSet;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::StreamExt;
use redis::{AsyncCommands, Commands};
use redis_entra::credential::{client_secret, ClientSecretOptions};
use redis_entra::{
    BlockingTokenManager, ConnectOptions, EntraAsyncConnectionManager, EntraClusterConnection,
    EntraConnection, EntraConnectionManager, EntraPubSub, EntraSyncConnection, Protocol,
    TlsOptions, TokenEvent, TokenManager, TokenManagerOptions,
};
use redis_entra_bench::{docs_dir, ms, percentile, rss_kib, rss_kib_of};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const ALL_KINDS: [&str; 8] = [
    "multiplexed",
    "sync",
    "r2d2",
    "bb8",
    "fred",
    "pubsub-resp3",
    "pubsub-resp2",
    "cluster",
];

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn kinds() -> Vec<String> {
    match std::env::var("SOAK_KINDS") {
        Ok(v) if !v.trim().is_empty() => v.split(',').map(|s| s.trim().to_string()).collect(),
        _ => ALL_KINDS.iter().map(|s| s.to_string()).collect(),
    }
}

fn main() -> anyhow::Result<()> {
    raise_nofile();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if std::env::var("SOAK_ROLE").as_deref() == Ok("emulator") {
        return runtime.block_on(emulator_main());
    }
    runtime.block_on(run())
}

// ---------------------------------------------------------------------------------------------
// The child: one emulator per kind, faults switched on stdin.

async fn emulator_main() -> anyhow::Result<()> {
    use redis_entra_emulator::faults::IdentityFault;
    use redis_entra_emulator::stats::Stats;
    use redis_entra_emulator::{Emulator, EmulatorConfig};

    let lifetime = Duration::from_secs_f64(env_f64("SOAK_TOKEN_SECS", 6.0));
    let mut emulators: Vec<(String, Emulator)> = Vec::new();
    for kind in kinds() {
        let emulator = Emulator::start(EmulatorConfig {
            token_lifetime: lifetime,
            cluster: (kind == "cluster").then_some(3),
            ..EmulatorConfig::default()
        })
        .await
        .with_context(|| format!("starting the {kind} emulator"))?;
        emulators.push((kind, emulator));
    }
    let info: Vec<Value> = emulators
        .iter()
        .map(|(kind, e)| {
            let sp = e.service_principal();
            json!({
                "kind": kind,
                "port": e.gateway_addr().port(),
                "ca_pem": e.ca_pem(),
                "authority": e.authority(),
                "tenant": e.tenant_id(),
                "client_id": sp.client_id,
                "secret": sp.secret.clone().unwrap_or_default(),
            })
        })
        .collect();
    let mut out = std::io::stdout();
    writeln!(out, "{}", Value::Array(info))?;
    out.flush()?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let reply = match line.trim() {
            "on" => {
                for (_, e) in &emulators {
                    e.faults().set_identity(IdentityFault::Unavailable);
                }
                json!("ok")
            }
            "off" => {
                for (_, e) in &emulators {
                    e.faults().set_identity(IdentityFault::None);
                }
                json!("ok")
            }
            "stats" => Value::Array(
                emulators
                    .iter()
                    .map(|(kind, e)| {
                        let s = e.stats();
                        json!({
                            "kind": kind,
                            "token_requests": Stats::get(&s.token_requests),
                            "tokens_issued": Stats::get(&s.tokens_issued),
                            "connections_accepted": Stats::get(&s.connections_accepted),
                            "auth_succeeded": Stats::get(&s.auth_succeeded),
                            "auth_failed": Stats::get(&s.auth_failed),
                            "closed_at_expiry": Stats::get(&s.closed_at_expiry),
                        })
                    })
                    .collect(),
            ),
            "quit" => break,
            other => json!(format!("unknown command {other}")),
        };
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    for (_, e) in emulators {
        e.shutdown().await;
    }
    Ok(())
}

/// The parent's handle on the child.
struct Child {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Child {
    async fn spawn() -> anyhow::Result<(Self, Vec<Value>)> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .env("SOAK_ROLE", "emulator")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().context("child stdin")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = lines
            .next_line()
            .await?
            .context("the emulator process ended before it was ready")?;
        let info: Vec<Value> = serde_json::from_str(&first)?;
        Ok((
            Self {
                child,
                stdin,
                lines,
            },
            info,
        ))
    }

    async fn ask(&mut self, command: &str) -> anyhow::Result<Value> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        let line = self
            .lines
            .next_line()
            .await?
            .context("the emulator process ended")?;
        Ok(serde_json::from_str(&line)?)
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

// ---------------------------------------------------------------------------------------------
// What is counted.

/// Global clock: when the run started, outages, heals.
#[derive(Default)]
struct Clock {
    start: Mutex<Option<Instant>>,
    in_outage: AtomicBool,
    /// Bumped at every heal.
    heal_epoch: AtomicU64,
    /// When the last heal was, in ns since start.
    heal_at_ns: AtomicU64,
    ok_total: AtomicU64,
}

impl Clock {
    fn now_ns(&self) -> u64 {
        let start = *self.start.lock().unwrap_or_else(|p| p.into_inner());
        start.map_or(0, |s| s.elapsed().as_nanos() as u64)
    }
    fn epoch(&self) -> u64 {
        self.heal_epoch.load(Ordering::SeqCst)
    }
    fn since_heal(&self) -> Duration {
        Duration::from_nanos(
            self.now_ns()
                .saturating_sub(self.heal_at_ns.load(Ordering::SeqCst)),
        )
    }
}

#[derive(Default)]
struct KindStats {
    commands: AtomicU64,
    ok: AtomicU64,
    failed_valid: AtomicU64,
    failed_no_token: AtomicU64,
    /// Of `failed_no_token`: a valid token at one end of the command only.
    failed_token_changed: AtomicU64,
    reauths: AtomicU64,
    reauth_took_ns: AtomicU64,
    reauth_max_ns: AtomicU64,
    reconnects: AtomicU64,
    reauth_failed: AtomicU64,
    refreshes: AtomicU64,
    refresh_failed: AtomicU64,
    lagged: AtomicU64,
    // pub/sub
    published: AtomicU64,
    publish_failed: AtomicU64,
    published_unsubscribed: AtomicU64,
    received: AtomicU64,
    lost: AtomicU64,
    lost_unsubscribed: AtomicU64,
    duplicated: AtomicU64,
    flagged_duplicate: AtomicU64,
    /// (heal epoch, time from heal to a connection's first success after it).
    recoveries: Mutex<Vec<(u64, Duration)>>,
    /// (heal epoch, time from heal to the manager's first token after it).
    token_recoveries: Mutex<Vec<(u64, Duration)>>,
    samples: Mutex<Vec<String>>,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn valid(manager: &TokenManager) -> bool {
    manager.current().is_some_and(|c| !c.is_expired())
}

/// Records the outcome of each command of one kind.
#[derive(Clone)]
struct Probe {
    kind: &'static str,
    stats: Arc<KindStats>,
    manager: TokenManager,
    clock: Arc<Clock>,
}

impl Probe {
    /// Whether the manager holds a valid token now (taken when a command is issued).
    fn valid(&self) -> bool {
        valid(&self.manager)
    }

    /// A command's outcome; `started_valid`: whether the manager held a valid token when it was
    /// issued. A failure counts as "with a valid token" when the manager held one both when the
    /// command was issued and when it failed.
    fn record(
        &self,
        conn: usize,
        seen_epoch: &mut u64,
        started_valid: bool,
        result: Result<(), String>,
    ) {
        bump(&self.stats.commands);
        match result {
            Ok(()) => {
                bump(&self.stats.ok);
                bump(&self.clock.ok_total);
                self.recovered(seen_epoch);
            }
            Err(e) => {
                let valid_now = valid(&self.manager);
                let valid = started_valid && valid_now;
                bump(if valid {
                    &self.stats.failed_valid
                } else {
                    &self.stats.failed_no_token
                });
                if !valid && (started_valid || valid_now) {
                    bump(&self.stats.failed_token_changed);
                }
                self.sample(conn, valid, &e);
            }
        }
    }

    /// A success (command or message) after a heal: how long after the heal it came.
    fn recovered(&self, seen_epoch: &mut u64) {
        let epoch = self.clock.epoch();
        if epoch > *seen_epoch {
            *seen_epoch = epoch;
            self.stats
                .recoveries
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((epoch, self.clock.since_heal()));
        }
    }

    fn sample(&self, conn: usize, valid: bool, error: &str) {
        let mut samples = self.stats.samples.lock().unwrap_or_else(|p| p.into_inner());
        // Keep the first failures with a valid token, and a few without.
        let with_valid = samples.iter().filter(|s| s.contains("valid token")).count();
        if (valid && with_valid < 20) || (!valid && samples.len() - with_valid < 5) {
            let t = self.clock.now_ns() as f64 / 1e9;
            let state = if valid { "valid token" } else { "no token" };
            let outage = if self.clock.in_outage.load(Ordering::SeqCst) {
                "in outage".to_string()
            } else {
                format!("{:.0} ms after heal", ms(self.clock.since_heal()))
            };
            let mut error = error.to_string();
            error.truncate(200);
            samples.push(format!(
                "t={t:.3}s {} conn {conn} ({state}, {outage}): {error}",
                self.kind
            ));
        }
    }
}

async fn count_events(
    mut events: tokio::sync::broadcast::Receiver<TokenEvent>,
    stats: Arc<KindStats>,
    clock: Arc<Clock>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut seen_epoch = 0;
    // A refresh failed since the last token: the next token after a heal is a recovery (and not
    // just the next scheduled refresh of a manager the outage never touched).
    let mut failing = false;
    loop {
        match events.recv().await {
            Ok(TokenEvent::Refreshed { .. }) => {
                bump(&stats.refreshes);
                let epoch = clock.epoch();
                let was_failing = std::mem::replace(&mut failing, false);
                if epoch > seen_epoch && was_failing {
                    seen_epoch = epoch;
                    stats
                        .token_recoveries
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((epoch, clock.since_heal()));
                }
            }
            Ok(TokenEvent::RefreshFailed { .. }) => {
                bump(&stats.refresh_failed);
                failing = true;
            }
            Ok(TokenEvent::ConnectionReauthenticated { took, .. }) => {
                bump(&stats.reauths);
                let ns = took.as_nanos() as u64;
                stats.reauth_took_ns.fetch_add(ns, Ordering::Relaxed);
                stats.reauth_max_ns.fetch_max(ns, Ordering::Relaxed);
            }
            Ok(TokenEvent::ReauthenticationFailed { .. }) => bump(&stats.reauth_failed),
            Ok(TokenEvent::Reconnected { .. }) => bump(&stats.reconnects),
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => {
                stats.lagged.fetch_add(n, Ordering::Relaxed);
            }
            Err(RecvError::Closed) => return,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The parent.

struct Settings {
    conns: usize,
    interval: Duration,
    lifetime: Duration,
}

const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

async fn timed<T, E: std::fmt::Display>(
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(COMMAND_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out after 10 s".into()),
    }
}

fn check(v: Result<u64, String>, want: u64) -> Result<(), String> {
    match v {
        Ok(got) if got == want => Ok(()),
        Ok(got) => Err(format!("read {got}, wrote {want}")),
        Err(e) => Err(e),
    }
}

/// Pause after a round: the interval after a success, 100 ms after a failure.
fn pause(ok: bool, interval: Duration) -> Duration {
    if ok {
        interval
    } else {
        Duration::from_millis(100)
    }
}

type Tasks = Vec<tokio::task::JoinHandle<()>>;
type Threads = Vec<std::thread::JoinHandle<()>>;

/// Things that must live until the end of the run.
#[derive(Default)]
struct Keep {
    tasks: Tasks,
    threads: Threads,
    guards: Vec<Box<dyn std::any::Any + Send>>,
}

async fn run() -> anyhow::Result<()> {
    let kinds = kinds();
    for k in &kinds {
        if !ALL_KINDS.contains(&k.as_str()) {
            bail!("unknown kind {k}; kinds: {ALL_KINDS:?}");
        }
    }
    let settings = Settings {
        conns: env_f64("SOAK_CONNS", 100.0) as usize,
        interval: Duration::from_millis(env_f64("SOAK_INTERVAL_MS", 1000.0) as u64),
        lifetime: Duration::from_secs_f64(env_f64("SOAK_TOKEN_SECS", 6.0)),
    };
    let soak = Duration::from_secs_f64(env_f64("SOAK_SECS", 330.0));
    let warmup = Duration::from_secs_f64(env_f64("SOAK_WARMUP_SECS", 45.0));
    let every = Duration::from_secs_f64(env_f64("SOAK_OUTAGE_EVERY_SECS", 20.0));
    let short = Duration::from_secs_f64(
        env_f64(
            "SOAK_SHORT_OUTAGE_MS",
            settings.lifetime.as_secs_f64() * 700.0,
        ) / 1000.0,
    );
    let long = Duration::from_secs_f64(env_f64(
        "SOAK_LONG_OUTAGE_SECS",
        settings.lifetime.as_secs_f64() * 3.0,
    ));

    println!(
        "soak: kinds {kinds:?}, {} connections each, tokens living {:?}, rounds every {:?}, warm-up {:?}, measured {:?}, outages of {:?} every {:?} and one of {:?}",
        settings.conns, settings.lifetime, settings.interval, warmup, soak, short, every, long
    );
    let started_setup = Instant::now();
    let (mut child, info) = Child::spawn().await?;
    let child_pid = child.pid().map(|p| p.to_string());
    println!(
        "emulators ready in {:?} (child pid {:?})",
        started_setup.elapsed(),
        child_pid
    );

    let clock = Arc::new(Clock::default());
    *clock.start.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    let stop = Arc::new(AtomicBool::new(false));
    let mut keep = Keep::default();
    let mut all: Vec<(&'static str, Arc<KindStats>, TokenManager)> = Vec::new();

    for entry in &info {
        let kind: &'static str = ALL_KINDS
            .iter()
            .copied()
            .find(|k| Some(*k) == entry["kind"].as_str())
            .context("kind")?;
        let tls = {
            let mut o = TlsOptions::default();
            o.extra_ca_pem = entry["ca_pem"].as_str().map(str::to_string);
            o.danger_accept_invalid_certs = false;
            o
        };
        let credential = || {
            client_secret({
                let mut o = ClientSecretOptions::default();
                o.tenant_id = entry["tenant"].as_str().unwrap_or_default().to_string();
                o.client_id = entry["client_id"].as_str().unwrap_or_default().to_string();
                o.secret = entry["secret"].as_str().unwrap_or_default().to_string();
                o.authority_host = entry["authority"].as_str().map(str::to_string);
                o.tls = tls.clone();
                o
            })
        };
        let port = entry["port"].as_u64().context("port")? as u16;
        let mut options = ConnectOptions::new("localhost", port);
        options.tls = tls.clone();
        options.response_timeout = Some(COMMAND_TIMEOUT);
        let mut manager_options = TokenManagerOptions::default();
        if let Ok(v) = std::env::var("SOAK_NO_TOKEN_RETRY_MS") {
            manager_options.retry.max_delay_without_token =
                Duration::from_millis(v.trim().parse().context("SOAK_NO_TOKEN_RETRY_MS")?);
        }
        let manager = TokenManager::new(credential()?, manager_options.clone());
        let stats = Arc::new(KindStats::default());
        keep.tasks.push(tokio::spawn(count_events(
            manager.events(),
            stats.clone(),
            clock.clone(),
        )));
        manager.credentials().await?;
        let probe = Probe {
            kind,
            stats: stats.clone(),
            manager: manager.clone(),
            clock: clock.clone(),
        };
        let t = Instant::now();
        match kind {
            "multiplexed" => {
                start_multiplexed(&settings, options, &probe, &stop, &mut keep).await?
            }
            "sync" => start_sync(&settings, options, &probe, &stop, &mut keep).await?,
            "r2d2" => start_r2d2(&settings, options, &probe, &stop, &mut keep).await?,
            "bb8" => start_bb8(&settings, options, &probe, &stop, &mut keep).await?,
            "fred" => start_fred(&settings, options, &probe, &stop, &mut keep).await?,
            "pubsub-resp3" | "pubsub-resp2" => {
                options.protocol = if kind == "pubsub-resp3" {
                    Protocol::Resp3
                } else {
                    Protocol::Resp2
                };
                let publisher = TokenManager::new(credential()?, manager_options.clone());
                start_pubsub(&settings, options, &probe, publisher, &stop, &mut keep).await?
            }
            "cluster" => start_cluster(&settings, options, &probe, &stop, &mut keep).await?,
            _ => bail!("unknown kind {kind}"),
        }
        println!(
            "{kind}: {} connections up in {:?}",
            settings.conns,
            t.elapsed()
        );
        all.push((kind, stats, manager));
    }

    // Sampling: RSS of both processes and commands per second, once a second.
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    {
        let (clock, samples, stop, child_pid) = (
            clock.clone(),
            samples.clone(),
            stop.clone(),
            child_pid.clone(),
        );
        keep.tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut last_ok = get(&clock.ok_total);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let ok = get(&clock.ok_total);
                let s = Sample {
                    t: clock.now_ns() as f64 / 1e9,
                    rss: rss_kib().unwrap_or(0),
                    child_rss: child_pid.as_deref().and_then(rss_kib_of).unwrap_or(0),
                    ok_per_s: ok - last_ok,
                };
                last_ok = ok;
                samples.lock().unwrap_or_else(|p| p.into_inner()).push(s);
            }
        }));
    }

    let setup_end = clock.now_ns() as f64 / 1e9;
    println!("all connections up at t={setup_end:.1}s; warm-up {warmup:?}");
    // The warm-up goes through one long outage too, so that every path (reconnecting with a
    // fresh token after expiry) has run once before the baseline RSS is taken: the first
    // reconnect wave raises the heap's high-water mark once (see docs/RELIABILITY.md).
    let warm_phase = Instant::now();
    let mut warmup_outage = None;
    if warmup >= long + Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let begin = clock.now_ns() as f64 / 1e9;
        clock.in_outage.store(true, Ordering::SeqCst);
        child.ask("on").await?;
        tokio::time::sleep(long).await;
        clock.heal_at_ns.store(clock.now_ns(), Ordering::SeqCst);
        clock.heal_epoch.fetch_add(1, Ordering::SeqCst);
        child.ask("off").await?;
        clock.in_outage.store(false, Ordering::SeqCst);
        let end = clock.now_ns() as f64 / 1e9;
        println!(
            "warm-up outage: t={begin:.1}s..{end:.1}s; RSS {} KiB",
            rss_kib().unwrap_or(0)
        );
        warmup_outage = Some(Outage {
            begin,
            end,
            long: false,
            epoch: clock.epoch(),
        });
    }
    tokio::time::sleep_until((warm_phase + warmup).into()).await;
    let rss_warm = rss_kib().unwrap_or(0);
    let child_rss_warm = child_pid.as_deref().and_then(rss_kib_of).unwrap_or(0);
    let warm_end = clock.now_ns() as f64 / 1e9;
    println!(
        "after warm-up (t={warm_end:.1}s): RSS {rss_warm} KiB (emulators {child_rss_warm} KiB)"
    );

    // The outages: short ones every `every`, one long one in the middle.
    let mut plan = Vec::new();
    let mut at = every;
    while at + long.max(short) + Duration::from_secs(10) < soak {
        plan.push((at, short));
        at += every;
    }
    let long_index = plan.len() / 2;
    if let Some(p) = plan.get_mut(long_index) {
        p.1 = long;
    }
    // Keep the spacing after the long outage.
    let mut shift = Duration::ZERO;
    for (i, p) in plan.iter_mut().enumerate() {
        p.0 += shift;
        if i == long_index {
            shift = long.saturating_sub(short);
        }
    }
    plan.retain(|p| p.0 + p.1 + Duration::from_secs(8) < soak);

    let phase = Instant::now();
    let mut outages: Vec<Outage> = warmup_outage.into_iter().collect();
    for (i, (offset, duration)) in plan.iter().enumerate() {
        tokio::time::sleep_until((phase + *offset).into()).await;
        let begin = clock.now_ns() as f64 / 1e9;
        clock.in_outage.store(true, Ordering::SeqCst);
        child.ask("on").await?;
        tokio::time::sleep(*duration).await;
        // The heal instant is taken before the child is told, so recovery includes the pipe.
        clock.heal_at_ns.store(clock.now_ns(), Ordering::SeqCst);
        clock.heal_epoch.fetch_add(1, Ordering::SeqCst);
        child.ask("off").await?;
        clock.in_outage.store(false, Ordering::SeqCst);
        let end = clock.now_ns() as f64 / 1e9;
        let is_long = i == long_index;
        println!(
            "outage {} ({}): t={begin:.1}s..{end:.1}s; RSS {} KiB",
            i + 1,
            if is_long { "long" } else { "short" },
            rss_kib().unwrap_or(0)
        );
        outages.push(Outage {
            begin,
            end,
            long: is_long,
            epoch: clock.epoch(),
        });
    }
    tokio::time::sleep_until((phase + soak).into()).await;
    let rss_end = rss_kib().unwrap_or(0);
    let child_rss_end = child_pid.as_deref().and_then(rss_kib_of).unwrap_or(0);
    let end_t = clock.now_ns() as f64 / 1e9;
    println!("end of the measured phase (t={end_t:.1}s): RSS {rss_end} KiB (emulators {child_rss_end} KiB)");

    stop.store(true, Ordering::SeqCst);
    // Let the publishers stop, then the subscribers drain.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (kind, stats, _) in &all {
        if kind.starts_with("pubsub") {
            drain_wait(kind, stats).await;
        }
    }
    let server = child.ask("stats").await?;
    report(
        &settings,
        &all,
        &server,
        &outages,
        rss_warm,
        rss_end,
        child_rss_warm,
        child_rss_end,
        warm_end,
        end_t,
    );
    let samples = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let plot = std::env::var("SOAK_PLOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| docs_dir().join("soak.png"));
    match draw(&plot, &samples, &outages, warm_end, end_t) {
        Ok(()) => println!("plot: {}", plot.display()),
        Err(e) => println!("plot failed: {e}"),
    }

    let _ = tokio::time::timeout(Duration::from_secs(5), child.ask("quit")).await;
    for t in &keep.tasks {
        t.abort();
    }
    // Threads end at the stop flag; pools and connections are dropped with `keep`, off the runtime.
    let Keep {
        threads, guards, ..
    } = keep;
    tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
        drop(guards);
    })
    .await?;
    Ok(())
}

#[derive(Clone)]
struct Sample {
    t: f64,
    rss: u64,
    child_rss: u64,
    ok_per_s: u64,
}

struct Outage {
    begin: f64,
    end: f64,
    long: bool,
    epoch: u64,
}

// ---------------------------------------------------------------------------------------------
// The kinds.

/// One connection's load: `SET` then `GET` of its own key every `interval`, each recorded.
async fn set_get_loop<C: redis::aio::ConnectionLike + Send + Sync>(
    mut conn: C,
    key: String,
    i: usize,
    probe: Probe,
    stop: Arc<AtomicBool>,
    interval: Duration,
) {
    let (mut n, mut epoch) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let v = probe.valid();
        let set = timed(conn.set::<_, _, ()>(&key, n)).await;
        let ok = set.is_ok();
        probe.record(i, &mut epoch, v, set);
        let ok = ok && {
            let v = probe.valid();
            let r = check(timed(conn.get::<_, u64>(&key)).await, n);
            let ok = r.is_ok();
            probe.record(i, &mut epoch, v, r);
            ok
        };
        tokio::time::sleep(pause(ok, interval)).await;
    }
}

async fn start_multiplexed(
    s: &Settings,
    options: ConnectOptions,
    probe: &Probe,
    stop: &Arc<AtomicBool>,
    keep: &mut Keep,
) -> anyhow::Result<()> {
    for i in 0..s.conns {
        let conn = EntraConnection::connect(options.clone(), probe.manager.clone()).await?;
        let (probe, stop, interval) = (probe.clone(), stop.clone(), s.interval);
        keep.tasks.push(tokio::spawn(set_get_loop(
            conn,
            format!("m:{i}"),
            i,
            probe,
            stop,
            interval,
        )));
    }
    Ok(())
}

async fn start_sync(
    s: &Settings,
    options: ConnectOptions,
    probe: &Probe,
    stop: &Arc<AtomicBool>,
    keep: &mut Keep,
) -> anyhow::Result<()> {
    const THREADS: usize = 4;
    let tokens = BlockingTokenManager::with_manager(probe.manager.clone())?;
    let conns = {
        let (options, tokens, n) = (options.clone(), tokens.clone(), s.conns);
        tokio::task::spawn_blocking(move || {
            (0..n)
                .map(|_| EntraSyncConnection::connect(options.clone(), tokens.clone()))
                .collect::<Result<Vec<_>, _>>()
        })
        .await??
    };
    let mut groups: Vec<Vec<(usize, EntraSyncConnection)>> =
        (0..THREADS).map(|_| Vec::new()).collect();
    for (i, c) in conns.into_iter().enumerate() {
        groups[i % THREADS].push((i, c));
    }
    for mut group in groups {
        let (probe, stop, interval) = (probe.clone(), stop.clone(), s.interval);
        keep.threads.push(std::thread::spawn(move || {
            let mut state: Vec<(u64, u64)> = vec![(0, 0); group.len()];
            while !stop.load(Ordering::Relaxed) {
                let mut all_ok = true;
                for ((i, conn), (n, epoch)) in group.iter_mut().zip(state.iter_mut()) {
                    *n += 1;
                    let key = format!("s:{i}");
                    let v = probe.valid();
                    let set: Result<(), String> = conn.set(&key, *n).map_err(|e| e.to_string());
                    let ok = set.is_ok();
                    probe.record(*i, epoch, v, set);
                    if ok {
                        let v = probe.valid();
                        let r = check(conn.get::<_, u64>(&key).map_err(|e| e.to_string()), *n);
                        all_ok &= r.is_ok();
                        probe.record(*i, epoch, v, r);
                    } else {
                        all_ok = false;
                    }
                }
                std::thread::sleep(pause(all_ok, interval));
            }
            drop(group);
        }));
    }
    keep.guards.push(Box::new(tokens));
    Ok(())
}

async fn start_r2d2(
    s: &Settings,
    options: ConnectOptions,
    probe: &Probe,
    stop: &Arc<AtomicBool>,
    keep: &mut Keep,
) -> anyhow::Result<()> {
    const BORROWERS: usize = 4;
    let tokens = BlockingTokenManager::with_manager(probe.manager.clone())?;
    let n = s.conns as u32;
    let pool = tokio::task::spawn_blocking(move || {
        r2d2::Pool::builder()
            .max_size(n)
            .min_idle(Some(n))
            .connection_timeout(Duration::from_secs(5))
            .build(EntraConnectionManager::new(options, tokens))
    })
    .await??;
    // Borrowers pause so that the kind makes about as many rounds as the others.
    let pause_ok = s.interval * BORROWERS as u32 / s.conns.max(1) as u32;
    for b in 0..BORROWERS {
        let (pool, probe, stop) = (pool.clone(), probe.clone(), stop.clone());
        keep.threads.push(std::thread::spawn(move || {
            let (mut n, mut epoch) = (0u64, 0u64);
            let key = format!("r2d2:{b}");
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let v = probe.valid();
                let ok = match pool.get() {
                    Ok(mut conn) => {
                        let v = probe.valid();
                        let set: Result<(), String> = conn.set(&key, n).map_err(|e| e.to_string());
                        let ok = set.is_ok();
                        probe.record(b, &mut epoch, v, set);
                        ok && {
                            let v = probe.valid();
                            let r = check(conn.get::<_, u64>(&key).map_err(|e| e.to_string()), n);
                            let ok = r.is_ok();
                            probe.record(b, &mut epoch, v, r);
                            ok
                        }
                    }
                    Err(e) => {
                        probe.record(b, &mut epoch, v, Err(format!("checkout: {e}")));
                        false
                    }
                };
                std::thread::sleep(pause(ok, pause_ok));
            }
        }));
    }
    keep.guards.push(Box::new(pool));
    Ok(())
}

async fn start_bb8(
    s: &Settings,
    options: ConnectOptions,
    probe: &Probe,
    stop: &Arc<AtomicBool>,
    keep: &mut Keep,
) -> anyhow::Result<()> {
    const BORROWERS: usize = 8;
    let n = s.conns as u32;
    let pool = bb8::Pool::builder()
        .max_size(n)
        .min_idle(Some(n))
        .connection_timeout(Duration::from_secs(5))
        .build(EntraAsyncConnectionManager::new(
            options,
            probe.manager.clone(),
        ))
        .await?;
    // bb8 fills to min_idle in the background: wait for it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while pool.state().connections < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pause_ok = s.interval * BORROWERS as u32 / s.conns.max(1) as u32;
    for b in 0..BORROWERS {
        let (pool, probe, stop) = (pool.clone(), probe.clone(), stop.clone());
        keep.tasks.push(tokio::spawn(async move {
            let (mut n, mut epoch) = (0u64, 0u64);
            let key = format!("bb8:{b}");
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let v = probe.valid();
                let ok = match pool.get().await {
                    Ok(mut conn) => {
                        let v = probe.valid();
                        let set = timed(conn.set::<_, _, ()>(&key, n)).await;
                        let ok = set.is_ok();
                        probe.record(b, &mut epoch, v, set);
                        ok && {
                            let v = probe.valid();
                            let r = check(timed(conn.get::<_, u64>(&key)).await, n);
                            let ok = r.is_ok();
                            probe.record(b, &mut epoch, v, r);
                            ok
                        }
                    }
                    Err(e) => {
                        probe.record(b, &mut epoch, v, Err(format!("checkout: {e}")));
                        false
                    }
                };
                tokio::time::sleep(pause(ok, pause_ok)).await;
            }
        }));
    }
    keep.guards.push(Box::new(pool));
    Ok(())
}

async fn start_fred(
    s: &Settings,
    options: ConnectOptions,
    probe: &Probe,
    stop: &Arc<AtomicBool>,
    keep: &mut Keep,
) -> anyhow::Result<()> {
    use fred::prelude::*;
    use redis_entra::connect::fred::{builder, keep_authenticated};
    for i in 0..s.conns {
        let client = builder(&options, &probe.manager)?.build()?;
        client.init().await?;
        let guard = keep_authenticated(&client, probe.manager.clone()).expect("in a runtime");
        keep.guards.push(Box::new(guard));
        let (probe, stop, interval) = (probe.clone(), stop.clone(), s.interval);
        keep.tasks.push(tokio::spawn(async move {
            let key = format!("f:{i}");
            let (mut n, mut epoch) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let v = probe.valid();
                let set = timed(client.set::<(), _, _>(&key, n, None, None, false)).await;
                let ok = set.is_ok();
                probe.record(i, &mut epoch, v, set);
                let ok = ok && {
                    let v = probe.valid();
                    let r = check(timed(client.get::<u64, _>(&key)).await, n);
                    let ok = r.is_ok();
                    probe.record(i, &mut epoch, v, r);
                    ok
                };
                tokio::time::sleep(pause(ok, interval)).await;
            }
            let _ = client.quit().await;
        }));
    }
    Ok(())
}

async fn start_cluster(
    s: &Settings,
    options: ConnectOptions,
    probe: &Probe,
    stop: &Arc<AtomicBool>,
    keep: &mut Keep,
) -> anyhow::Result<()> {
    for i in 0..s.conns {
        let conn = EntraClusterConnection::connect(options.clone(), probe.manager.clone()).await?;
        let (probe, stop, interval) = (probe.clone(), stop.clone(), s.interval);
        keep.tasks.push(tokio::spawn(set_get_loop(
            conn,
            format!("c:{i}"),
            i,
            probe,
            stop,
            interval,
        )));
    }
    Ok(())
}

/// Per subscriber: the next number expected, the last one published, and the numbers published
/// while no connection was subscribed (PUBLISH answered 0 receivers).
#[derive(Default)]
struct Channel {
    expected: AtomicU64,
    last_published: AtomicU64,
    unsubscribed: Mutex<HashSet<u64>>,
}

async fn start_pubsub(
    s: &Settings,
    options: ConnectOptions,
    probe: &Probe,
    publisher: TokenManager,
    stop: &Arc<AtomicBool>,
    keep: &mut Keep,
) -> anyhow::Result<()> {
    let channels: Arc<Vec<Channel>> = Arc::new((0..s.conns).map(|_| Channel::default()).collect());
    let prefix = probe.kind;
    for i in 0..s.conns {
        let pubsub = EntraPubSub::connect(options.clone(), probe.manager.clone()).await?;
        let (sink, mut messages) = pubsub.split();
        sink.subscribe(format!("{prefix}:{i}")).await?;
        keep.guards.push(Box::new(sink));
        channels[i].expected.store(1, Ordering::SeqCst);
        let (probe, channels) = (probe.clone(), channels.clone());
        keep.tasks.push(tokio::spawn(async move {
            let mut epoch = 0u64;
            let ch = &channels[i];
            while let Some(msg) = messages.next().await {
                let stats = &probe.stats;
                bump(&stats.received);
                if msg.possible_duplicate() {
                    bump(&stats.flagged_duplicate);
                }
                let Some(n) = msg.payload_str().and_then(|p| p.parse::<u64>().ok()) else {
                    continue;
                };
                let expected = ch.expected.load(Ordering::SeqCst);
                if n < expected {
                    bump(&stats.duplicated);
                    continue;
                }
                if n > expected {
                    let unsubscribed = ch.unsubscribed.lock().unwrap_or_else(|p| p.into_inner());
                    for m in expected..n {
                        bump(if unsubscribed.contains(&m) {
                            &stats.lost_unsubscribed
                        } else {
                            &stats.lost
                        });
                    }
                }
                ch.expected.store(n + 1, Ordering::SeqCst);
                probe.recovered(&mut epoch);
            }
        }));
    }
    // The publisher: one multiplexed connection with its own token manager; each round publishes
    // the next number on every channel. A failed PUBLISH is retried with the same number.
    let mut conn = EntraConnection::connect(options.clone(), publisher.clone()).await?;
    let (stats, stop, interval) = (probe.stats.clone(), stop.clone(), s.interval);
    let registered = channels.clone();
    keep.tasks.push(tokio::spawn(async move {
        let mut next: Vec<u64> = vec![1; channels.len()];
        while !stop.load(Ordering::Relaxed) {
            let mut all_ok = true;
            for (i, n) in next.iter_mut().enumerate() {
                match timed(conn.publish::<_, _, i64>(format!("{prefix}:{i}"), *n)).await {
                    Ok(receivers) => {
                        bump(&stats.published);
                        if receivers == 0 {
                            bump(&stats.published_unsubscribed);
                            channels[i]
                                .unsubscribed
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(*n);
                        }
                        channels[i].last_published.store(*n, Ordering::SeqCst);
                        *n += 1;
                    }
                    Err(_) => {
                        bump(&stats.publish_failed);
                        all_ok = false;
                        break;
                    }
                }
            }
            tokio::time::sleep(pause(all_ok, interval)).await;
        }
    }));
    keep.guards.push(Box::new(publisher));
    PUBSUB
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((prefix, registered));
    Ok(())
}

type PubSubRegistry = Mutex<Vec<(&'static str, Arc<Vec<Channel>>)>>;
static PUBSUB: PubSubRegistry = Mutex::new(Vec::new());

/// After the publisher stopped: waits (up to 15 s) until every subscriber has the last number
/// published to it; what is still missing then counts as lost.
async fn drain_wait(kind: &str, stats: &Arc<KindStats>) {
    let registry: Vec<Arc<Vec<Channel>>> = PUBSUB
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(k, _)| *k == kind)
        .map(|(_, c)| c.clone())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let missing: u64 = registry
            .iter()
            .flat_map(|chs| chs.iter())
            .map(|c| {
                (c.last_published.load(Ordering::SeqCst) + 1)
                    .saturating_sub(c.expected.load(Ordering::SeqCst))
            })
            .sum();
        if missing == 0 {
            return;
        }
        if Instant::now() >= deadline {
            // What never arrived: lost, unless PUBLISH found no subscriber for it.
            let (mut lost, mut unsubscribed) = (0u64, 0u64);
            for c in registry.iter().flat_map(|chs| chs.iter()) {
                let none = c.unsubscribed.lock().unwrap_or_else(|p| p.into_inner());
                for m in c.expected.load(Ordering::SeqCst)..=c.last_published.load(Ordering::SeqCst)
                {
                    if none.contains(&m) {
                        unsubscribed += 1;
                    } else {
                        lost += 1;
                    }
                }
            }
            println!(
                "{kind}: {missing} messages never arrived by the end: {lost} lost, {unsubscribed} published to no subscriber"
            );
            stats.lost.fetch_add(lost, Ordering::Relaxed);
            stats
                .lost_unsubscribed
                .fetch_add(unsubscribed, Ordering::Relaxed);
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Report and plot.

#[allow(clippy::too_many_arguments)]
fn report(
    s: &Settings,
    all: &[(&'static str, Arc<KindStats>, TokenManager)],
    server: &Value,
    outages: &[Outage],
    rss_warm: u64,
    rss_end: u64,
    child_rss_warm: u64,
    child_rss_end: u64,
    warm_end: f64,
    end_t: f64,
) {
    let long_epoch = outages.iter().find(|o| o.long).map(|o| o.epoch);
    // The warm-up's outage is the first heal; it is left out of the recovery columns.
    let warmup_epoch = outages
        .first()
        .filter(|o| !o.long && o.begin < warm_end)
        .map(|o| o.epoch);
    let server_of = |kind: &str| -> Value {
        server
            .as_array()
            .and_then(|a| a.iter().find(|v| v["kind"] == kind).cloned())
            .unwrap_or(Value::Null)
    };
    println!();
    println!("| kind | connections | rotations (re-AUTH / reconnect) | token refreshes | commands | failed, valid token | failed, no token | messages received / lost / lost unsubscribed / duplicated | first token after long outage | first command after long outage | all connections after long outage | worst first token after a short outage |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut total_rotations = 0;
    for (kind, st, _) in all {
        let reauths = get(&st.reauths);
        let reconnects = get(&st.reconnects);
        total_rotations += reauths + reconnects;
        let recov: Vec<Duration> = {
            let r = st.recoveries.lock().unwrap_or_else(|p| p.into_inner());
            let mut v: Vec<Duration> = r
                .iter()
                .filter(|(e, _)| Some(*e) == long_epoch)
                .map(|(_, d)| *d)
                .collect();
            v.sort();
            v
        };
        let tok = st
            .token_recoveries
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let long_tok = tok
            .iter()
            .find(|(e, _)| Some(*e) == long_epoch)
            .map(|(_, d)| format!("{:.0} ms", ms(*d)))
            .unwrap_or_else(|| "—".into());
        let short_tok = tok
            .iter()
            .filter(|(e, _)| Some(*e) != long_epoch && Some(*e) != warmup_epoch)
            .map(|(_, d)| *d)
            .max()
            .map(|d| format!("{:.0} ms", ms(d)))
            .unwrap_or_else(|| "—".into());
        let msgs = if kind.starts_with("pubsub") {
            format!(
                "{} / {} / {} / {} (published {}, {} to no subscriber; flagged possible duplicates {})",
                get(&st.received),
                get(&st.lost),
                get(&st.lost_unsubscribed),
                get(&st.duplicated),
                get(&st.published),
                get(&st.published_unsubscribed),
                get(&st.flagged_duplicate),
            )
        } else {
            "—".into()
        };
        let first = recov
            .first()
            .map(|d| format!("{:.0} ms", ms(*d)))
            .unwrap_or_else(|| "—".into());
        let last = recov
            .last()
            .map(|d| {
                format!(
                    "{:.0} ms ({} conns, median {:.0} ms)",
                    ms(*d),
                    recov.len(),
                    ms(percentile(&recov, 0.5))
                )
            })
            .unwrap_or_else(|| "—".into());
        let commands = if kind.starts_with("pubsub") {
            format!(
                "{} PUBLISH ({} failed)",
                get(&st.published) + get(&st.publish_failed),
                get(&st.publish_failed)
            )
        } else {
            get(&st.commands).to_string()
        };
        let conns = if *kind == "cluster" {
            format!("{} ({} node connections)", s.conns, s.conns * 3)
        } else {
            s.conns.to_string()
        };
        println!(
            "| {kind} | {conns} | {} ({reauths} / {reconnects}) | {} | {commands} | {} | {} ({} with a token at one end only) | {msgs} | {long_tok} | {first} | {last} | {short_tok} |",
            reauths + reconnects,
            get(&st.refreshes),
            get(&st.failed_valid),
            get(&st.failed_no_token),
            get(&st.failed_token_changed),
        );
    }
    println!();
    println!("| kind | refresh failures | re-AUTH failures | events lagged | mean / max re-AUTH | server: token requests, connections accepted, AUTH ok / refused, closed at expiry |");
    println!("|---|---|---|---|---|---|");
    for (kind, st, _) in all {
        let n = get(&st.reauths).max(1);
        let sv = server_of(kind);
        println!(
            "| {kind} | {} | {} | {} | {:.2} ms / {:.1} ms | {}, {}, {} / {}, {} |",
            get(&st.refresh_failed),
            get(&st.reauth_failed),
            get(&st.lagged),
            get(&st.reauth_took_ns) as f64 / n as f64 / 1e6,
            get(&st.reauth_max_ns) as f64 / 1e6,
            sv["token_requests"],
            sv["connections_accepted"],
            sv["auth_succeeded"],
            sv["auth_failed"],
            sv["closed_at_expiry"],
        );
    }
    println!();
    println!("total rotations (re-AUTH in place, RESP2 handovers, reconnects with a newer token): {total_rotations}");
    let growth = (rss_end as f64 - rss_warm as f64) / rss_warm.max(1) as f64 * 100.0;
    println!(
        "RSS (this process, the clients): {rss_warm} KiB after warm-up (t={warm_end:.0}s), {rss_end} KiB at the end (t={end_t:.0}s): {growth:+.1} %"
    );
    println!(
        "RSS (emulator process, for information): {child_rss_warm} KiB -> {child_rss_end} KiB"
    );
    for (kind, st, _) in all {
        let samples = st.samples.lock().unwrap_or_else(|p| p.into_inner());
        for s in samples.iter() {
            println!("  failure: {s}");
        }
        let _ = kind;
    }
}

fn draw(
    path: &std::path::Path,
    samples: &[Sample],
    outages: &[Outage],
    warm_end: f64,
    end_t: f64,
) -> anyhow::Result<()> {
    use plotters::prelude::*;
    const W: i32 = 1200;
    const H: i32 = 600;
    const PAD: i32 = 20;
    let root = BitMapBackend::new(path, (W as u32, H as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let t_max = samples.last().map_or(end_t, |s| s.t).max(end_t).max(1.0);
    let x = |t: f64| PAD + ((t / t_max) * (W - 2 * PAD) as f64) as i32;
    let half = H / 2;
    // Warm-up in light grey; outages in pink, the long one in a darker red.
    root.draw(&Rectangle::new(
        [(x(0.0), PAD), (x(warm_end), H - PAD)],
        RGBColor(230, 230, 230).filled(),
    ))?;
    for o in outages {
        let colour = if o.long {
            RGBColor(240, 150, 150)
        } else {
            RGBColor(255, 215, 215)
        };
        root.draw(&Rectangle::new(
            [(x(o.begin), PAD), (x(o.end).max(x(o.begin) + 1), H - PAD)],
            colour.filled(),
        ))?;
    }
    // Panels: top RSS, bottom commands per second; each scaled from 0 to its maximum.
    let panel = |top: i32, values: Vec<(f64, f64)>, colour: RGBColor| -> anyhow::Result<()> {
        let bottom = top + half - 2 * PAD;
        let max = values.iter().map(|v| v.1).fold(1.0, f64::max);
        let points: Vec<(i32, i32)> = values
            .iter()
            .map(|(t, v)| (x(*t), bottom - ((v / max) * (bottom - top) as f64) as i32))
            .collect();
        root.draw(&PathElement::new(points, colour.stroke_width(2)))?;
        root.draw(&PathElement::new(
            vec![(PAD, bottom), (W - PAD, bottom)],
            BLACK.stroke_width(1),
        ))?;
        root.draw(&PathElement::new(
            vec![(PAD, top), (PAD, bottom)],
            BLACK.stroke_width(1),
        ))?;
        Ok(())
    };
    panel(
        PAD,
        samples.iter().map(|s| (s.t, s.rss as f64)).collect(),
        BLUE,
    )?;
    panel(
        PAD,
        samples.iter().map(|s| (s.t, s.child_rss as f64)).collect(),
        RGBColor(128, 128, 128),
    )?;
    panel(
        half + PAD,
        samples.iter().map(|s| (s.t, s.ok_per_s as f64)).collect(),
        RGBColor(0, 150, 0),
    )?;
    root.present()?;
    Ok(())
}
