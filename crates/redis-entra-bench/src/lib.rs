//! Shared helpers of the benchmarks in `benches/`: percentiles, reports, process memory and plots.
//! The figures they print go to `docs/PERFORMANCE.md` and `docs/RELIABILITY.md`.

use std::time::Duration;

/// The `p` quantile (0..=1) of sorted samples, nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The resident set size of this process, in KiB (from `/proc/self/status`).
pub fn rss_kib() -> Option<u64> {
    rss_kib_of("self")
}

/// The resident set size of a process (`"self"` or a pid), in KiB.
pub fn rss_kib_of(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The `docs/` folder of this repository, where benches write their plots.
pub fn docs_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

/// Where the plots' font is read from at run time (Debian's `fonts-dejavu-core`, which
/// `scripts/bench-setup` installs); no font file is part of this repository.
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Registers [`FONT`] as plotters' `sans-serif`. Returns false (and says so) when the file is
/// missing, in which case the benches skip their plots.
pub fn fonts_ready() -> bool {
    static READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *READY.get_or_init(|| match std::fs::read(FONT) {
        Ok(bytes) => {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, bytes)
                .is_ok()
        }
        Err(_) => {
            eprintln!("no {FONT}: plots skipped (scripts/bench-setup installs fonts-dejavu-core)");
            false
        }
    })
}

/// Raises this process's soft limit on open files to the hard limit; returns the limit now in
/// force.
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read or write the struct passed.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        // `rlim_t` is u64 on Linux but not everywhere.
        #[allow(clippy::unnecessary_cast)]
        let limit = lim.rlim_cur as u64;
        limit
    }
}

/// Sorts samples and prints `name: n, p50, p90, p99, max` in milliseconds.
pub fn report(name: &str, samples: &mut [Duration]) -> String {
    samples.sort();
    let line = format!(
        "{name}: n={} p50={:.3} ms p90={:.3} ms p99={:.3} ms max={:.3} ms",
        samples.len(),
        ms(percentile(samples, 0.5)),
        ms(percentile(samples, 0.9)),
        ms(percentile(samples, 0.99)),
        ms(samples.last().copied().unwrap_or_default())
    );
    println!("{line}");
    line
}

/// The emulator's TLS settings for a client: its CA, nothing insecure.
pub fn tls(emulator: &redis_entra_emulator::Emulator) -> redis_entra::TlsOptions {
    redis_entra::TlsOptions::with_ca_pem(emulator.ca_pem().to_string())
        .expect("the emulator's CA is PEM")
}

/// Connection options for the emulator's gateway (`localhost`, real TLS).
pub fn connect_options(emulator: &redis_entra_emulator::Emulator) -> redis_entra::ConnectOptions {
    let mut options = redis_entra::ConnectOptions::new("localhost", emulator.gateway_addr().port());
    options.tls = tls(emulator);
    options
}

/// The emulator's service principal as a client-secret credential (HTTPS token endpoint).
pub fn secret_credential(
    emulator: &redis_entra_emulator::Emulator,
) -> std::sync::Arc<dyn azure_core::credentials::TokenCredential> {
    let sp = emulator.service_principal().clone();
    redis_entra::credential::client_secret(
        redis_entra::credential::ClientSecretOptions::new(
            emulator.tenant_id().to_string(),
            sp.client_id,
            sp.secret.expect("the service principal has a secret"),
        )
        .with_authority_host(emulator.authority().to_string())
        .with_tls(tls(emulator)),
    )
    .expect("client secret credential")
}

/// Points the App Service managed-identity variables (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`) at
/// the emulator, as App Service sets them; credentials built afterwards use it.
pub fn set_managed_identity_env(emulator: &redis_entra_emulator::Emulator) {
    std::env::set_var("IDENTITY_ENDPOINT", emulator.managed_identity_endpoint());
    std::env::set_var("IDENTITY_HEADER", emulator.identity_header());
}

/// The redis crate's own `EntraIdCredentialsProvider` (system-assigned managed identity, read
/// from the App Service variables), started with its default retry configuration.
pub fn redis_rs_provider(
    emulator: &redis_entra_emulator::Emulator,
) -> redis::EntraIdCredentialsProvider {
    set_managed_identity_env(emulator);
    let mut provider = redis::EntraIdCredentialsProvider::new_system_assigned_managed_identity()
        .expect("redis-rs managed identity provider");
    provider.start(redis::RetryConfig::default());
    provider
}

/// A redis-rs client for the emulator's gateway with a username (or none) and a password.
pub fn redis_client(
    emulator: &redis_entra_emulator::Emulator,
    username: Option<&str>,
    password: &str,
) -> redis::Client {
    connect_options(emulator)
        .client_with_password(username, password)
        .expect("redis client")
}

/// Counts the open file descriptors of a process (`"self"` or a pid).
pub fn open_fds(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}
