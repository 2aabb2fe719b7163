//! The fetch thread: each tenant's OIDC metadata (v2 and v1) and JWKS over HTTPS, off the
//! server's main thread. It fetches at start, every `refresh-interval`, and when an `AUTH`
//! brings a `kid` no tenant has (at most once per `unknown-kid-interval`); it then unblocks the
//! clients that waited for it. Requests wait in a bounded queue; every HTTP exchange is bounded
//! in time and size, so a stuck or hostile authority delays only the `AUTH`s that wait for
//! keys, never the server.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis_entra_jwt::DecodingKey;
use serde::Deserialize;

use crate::config::Config;
use crate::ffi::{self, Blocked};
use crate::keys::{KeyStore, TenantKeys, MAX_KEYS_PER_TENANT};
use crate::settings::Settings;
use crate::stats::Stats;

/// How many `AUTH`s may wait for a fetch at once; more are refused as busy.
pub const QUEUE_CAPACITY: usize = 1024;
/// The longest one HTTP exchange may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a whole fetch round (every tenant, in parallel) may take.
pub const ROUND_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest metadata or JWKS document read.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// What an `AUTH` asks of the fetch thread.
pub struct Request {
    /// The client to unblock once the fetch is done.
    pub waiter: Blocked,
}

/// The main thread's side: whether a fetch can help, and the queue.
pub struct Fetcher {
    queue: SyncSender<Request>,
    shared: Arc<Shared>,
    settings: Arc<Settings>,
}

#[derive(Default)]
struct Shared {
    /// When the last fetch round started, in ms since the Unix epoch (0: never).
    last_round_ms: AtomicU64,
    /// Whether a round is running now.
    fetching: AtomicBool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Fetcher {
    /// Starts the fetch thread, which fetches every tenant's keys at once.
    pub fn start(
        config: &Config,
        settings: Arc<Settings>,
        store: Arc<KeyStore>,
        stats: Arc<Stats>,
    ) -> Result<Self, String> {
        let (tls, roots) = crate::tls::client_config()?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(HTTP_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting the fetch runtime: {e}"))?;
        let (queue, requests) = sync_channel(QUEUE_CAPACITY);
        let shared = Arc::new(Shared::default());
        let worker = Worker {
            config: config.clone(),
            settings: settings.clone(),
            store,
            stats,
            http,
            shared: shared.clone(),
        };
        ffi::log(
            std::ptr::null_mut(),
            "notice",
            &format!(
                "entra: fetching signing keys from {} for {} tenant(s), trusting {roots} CA \
                 certificate(s)",
                config.authority,
                config.tenants.len()
            ),
        );
        std::thread::Builder::new()
            .name("entra-keys".into())
            .spawn(move || runtime.block_on(worker.run(requests)))
            .map_err(|e| format!("starting the fetch thread: {e}"))?;
        Ok(Self {
            queue,
            shared,
            settings,
        })
    }

    /// Whether an `AUTH` with an unknown `kid` should wait for a fetch: one is running, or the
    /// last started at least `unknown-kid-interval` ago.
    pub fn would_help(&self) -> bool {
        if self.shared.fetching.load(Ordering::Acquire) {
            return true;
        }
        let last = self.shared.last_round_ms.load(Ordering::Acquire);
        last == 0
            || now_ms().saturating_sub(last)
                >= self.settings.unknown_kid_interval().as_millis() as u64
    }

    /// Queues a waiting client; gives it back when the queue is full.
    pub fn submit(&self, request: Request) -> Result<(), Request> {
        self.queue.try_send(request).map_err(|e| match e {
            TrySendError::Full(r) | TrySendError::Disconnected(r) => r,
        })
    }
}

struct Worker {
    config: Config,
    settings: Arc<Settings>,
    store: Arc<KeyStore>,
    stats: Arc<Stats>,
    http: reqwest::Client,
    shared: Arc<Shared>,
}

impl Worker {
    async fn run(self, requests: Receiver<Request>) {
        let mut last_round: Option<Instant> = None;
        loop {
            let wait = match last_round {
                None => Duration::ZERO,
                Some(t) => self.settings.refresh_interval().saturating_sub(t.elapsed()),
            };
            // The queue is a std channel: waiting on it blocks this thread, which has nothing
            // else to do between rounds.
            let first = match requests.recv_timeout(wait) {
                Ok(r) => Some(r),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut waiters: Vec<Blocked> = first.into_iter().map(|r| r.waiter).collect();
            waiters.extend(requests.try_iter().map(|r| r.waiter));
            let due = last_round.is_none_or(|t| {
                let since = t.elapsed();
                since >= self.settings.refresh_interval()
                    || (!waiters.is_empty() && since >= self.settings.unknown_kid_interval())
            });
            if due {
                last_round = Some(Instant::now());
                self.round().await;
                // Those who queued during the round get its keys too.
                waiters.extend(requests.try_iter().map(|r| r.waiter));
            }
            for waiter in waiters {
                waiter.unblock();
            }
        }
    }

    /// Fetches every tenant, in parallel, within [`ROUND_TIMEOUT`].
    async fn round(&self) {
        self.shared.fetching.store(true, Ordering::Release);
        self.shared.last_round_ms.store(now_ms(), Ordering::Release);
        let mut tasks = tokio::task::JoinSet::new();
        for tenant in self.config.tenants.clone() {
            let http = self.http.clone();
            let authority = self.config.authority.clone();
            tasks.spawn(async move {
                let keys = fetch_tenant(&http, &authority, &tenant).await;
                (tenant, keys)
            });
        }
        let deadline = tokio::time::Instant::now() + ROUND_TIMEOUT;
        while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
            let Ok((tenant, result)) = joined else {
                continue;
            };
            match result {
                Ok(keys) => {
                    let count = keys.keys.len();
                    self.store.set(&tenant, keys);
                    Stats::bump(&self.stats.key_refreshes);
                    ffi::log(
                        std::ptr::null_mut(),
                        "verbose",
                        &format!("entra: tenant {tenant}: {count} signing key(s)"),
                    );
                }
                Err(e) => {
                    Stats::bump(&self.stats.key_refresh_failures);
                    ffi::log(
                        std::ptr::null_mut(),
                        "warning",
                        &format!(
                            "entra: tenant {tenant}: fetching the signing keys failed ({e}); \
                             the keys fetched before stay trusted"
                        ),
                    );
                }
            }
        }
        if !tasks.is_empty() {
            Stats::bump(&self.stats.key_refresh_failures);
            ffi::log(
                std::ptr::null_mut(),
                "warning",
                &format!(
                    "entra: {} tenant(s) did not answer within {ROUND_TIMEOUT:?}",
                    tasks.len()
                ),
            );
            tasks.abort_all();
        }
        self.shared.fetching.store(false, Ordering::Release);
    }
}

#[derive(Deserialize)]
struct Metadata {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

/// GETs `url` as JSON, at most [`MAX_DOCUMENT_BYTES`].
async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, String> {
    let mut response = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("GET {url}: larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not the expected JSON: {e}"))
}

/// One tenant's issuers (v2 and v1 metadata) and the RSA keys of their JWKS. Succeeds when at
/// least one version's metadata and keys were fetched.
async fn fetch_tenant(
    http: &reqwest::Client,
    authority: &str,
    tenant: &str,
) -> Result<TenantKeys, String> {
    let mut out = TenantKeys::default();
    let mut errors = Vec::new();
    let mut jwks_uris: Vec<String> = Vec::new();
    for (v2, url) in [
        (
            true,
            format!("{authority}/{tenant}/v2.0/.well-known/openid-configuration"),
        ),
        (
            false,
            format!("{authority}/{tenant}/.well-known/openid-configuration"),
        ),
    ] {
        let metadata: Metadata = match get_json(http, &url).await {
            Ok(m) => m,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if !jwks_uris.contains(&metadata.jwks_uri) {
            match get_json::<Jwks>(http, &metadata.jwks_uri).await {
                Ok(jwks) => {
                    for jwk in jwks.keys {
                        if out.keys.len() >= MAX_KEYS_PER_TENANT {
                            break;
                        }
                        if let Some((kid, key)) = rsa_key(jwk) {
                            out.keys.insert(kid, key);
                        }
                    }
                    jwks_uris.push(metadata.jwks_uri.clone());
                }
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            }
        }
        if v2 {
            out.v2_issuers.push(metadata.issuer);
        } else {
            out.v1_issuers.push(metadata.issuer);
        }
    }
    if out.v1_issuers.is_empty() && out.v2_issuers.is_empty() {
        return Err(errors.join("; "));
    }
    Ok(out)
}

/// An RSA signing key of a JWKS.
fn rsa_key(jwk: Jwk) -> Option<(String, DecodingKey)> {
    if jwk.kty != "RSA" || jwk.usage.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    let key = DecodingKey::from_rsa_components(jwk.n.as_deref()?, jwk.e.as_deref()?).ok()?;
    Some((jwk.kid?, key))
}
