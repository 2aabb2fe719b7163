//! Entra ID inside Valkey (≥ 8) and Redis (≥ 7.2): a server module that accepts Microsoft
//! Entra access tokens as passwords, as Azure Cache for Redis does.
//!
//! ```text
//! valkey-server --loadmodule libredis_entra_module.so authority https://login.microsoftonline.com tenant <tenant id>
//! ACL SETUSER <object id> on resetpass +@all allkeys
//! AUTH <object id> <access token for https://redis.azure.com>
//! ```
//!
//! - **Who**: `AUTH <user> <token>` and `HELLO … AUTH <user> <token>` where the password is a
//!   JWT (`auth.rs`). The token is checked with the checks the emulator's gateway uses
//!   (`redis-entra-jwt`): RS256 with a key of a configured tenant, `aud`, `iss` for the
//!   token's `ver` as the tenant's metadata names it, `tid`, `exp`/`nbf` with the skew, the
//!   maximum lifetime, optionally the application (`app-id`), and the username equal to
//!   `oid`. The client becomes the ACL user named by the `oid`, which the operator creates;
//!   none (or disabled): `WRONGPASS`. A password that is not a JWT goes to the server's own
//!   check.
//! - **Keys** (`fetch.rs`): the tenants' OIDC metadata and JWKS are fetched over HTTPS on the
//!   module's own thread, at load, periodically, and on an unknown `kid` (rate-limited); an
//!   `AUTH` that needs them waits (blocked module auth), the server never does.
//! - **Expiry** (`sessions.rs`): a connection is closed when its token expires (plus the skew)
//!   unless it sent a newer token with `AUTH`; a timer on the main thread closes it.
//! - **Settings**: module arguments at load; `skew`, `max-lifetime`, `refresh-interval` and
//!   `unknown-kid-interval` also as `CONFIG SET entra.<name>` ([`settings`]).
//! - **Counters**: `INFO entra`. **Logs**: the server's log; never a token.
//!
//! The module refuses to load on servers without module authentication callbacks (Redis 7.0
//! and older), saying so in the server's log.

mod auth;
pub mod config;
mod configs;
mod fetch;
mod ffi;
mod keys;
mod remembered;
mod sessions;
pub mod settings;
mod stats;
mod tls;
pub mod verify;

use std::ffi::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use config::Config;
use fetch::Fetcher;
use ffi::{Ctx, InfoCtx, RString, ERR, OK};
use keys::KeyStore;
use remembered::Remembered;
use sessions::Sessions;
use settings::Settings;
use stats::Stats;

/// The module's name: its `INFO` section is `entra_stats`, its log lines start with `entra:`.
pub const MODULE_NAME: &str = "entra";

/// How often expired connections are looked for, in milliseconds.
pub const EXPIRY_CHECK_MS: i64 = 100;

/// Everything the callbacks share.
pub struct State {
    settings: Arc<Settings>,
    /// If not empty, the only application ids accepted (fixed at load).
    app_ids: Vec<String>,
    keys: Arc<KeyStore>,
    stats: Arc<Stats>,
    sessions: Mutex<Sessions>,
    remembered: Mutex<Remembered>,
    fetcher: Fetcher,
}

impl State {
    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remembered(&self) -> MutexGuard<'_, Remembered> {
        self.remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

static STATE: OnceLock<State> = OnceLock::new();

fn state() -> Option<&'static State> {
    STATE.get()
}

/// The module's arguments as strings.
///
/// # Safety
/// `argv` holds `argc` server strings.
unsafe fn arguments(argv: *mut *mut RString, argc: c_int) -> Result<Vec<String>, String> {
    let count = usize::try_from(argc).unwrap_or(0);
    if argv.is_null() || count == 0 {
        return Ok(Vec::new());
    }
    std::slice::from_raw_parts(argv, count)
        .iter()
        .map(|s| {
            String::from_utf8(ffi::bytes(*s).to_vec())
                .map_err(|_| "an argument is not UTF-8".to_string())
        })
        .collect()
}

fn load(ctx: *mut Ctx, args: Vec<String>) -> Result<(), String> {
    let missing = ffi::missing_functions();
    if !missing.is_empty() {
        return Err(format!(
            "this server has no module authentication callbacks (missing {}): the module needs \
             Valkey >= 8 or Redis >= 7.2; not loaded",
            missing.join(", ")
        ));
    }
    let config = Config::parse(&args).map_err(|e| format!("{e}; not loaded"))?;
    if STATE.get().is_some() {
        return Err("already loaded in this process".into());
    }
    let keys = Arc::new(KeyStore::default());
    let stats = Arc::new(Stats::default());
    let settings = Arc::new(Settings::new(&config));
    configs::register(ctx, &settings)?;
    let fetcher = Fetcher::start(&config, settings.clone(), keys.clone(), stats.clone())?;
    let summary = format!(
        "entra: accepting tokens of tenant(s) {} from {} (audiences {}; applications {}; skew \
         {}s; max lifetime {}s)",
        config.tenants.join(", "),
        config.authority,
        config.rules.audiences.join(", "),
        if config.app_ids.is_empty() {
            "any".to_string()
        } else {
            config.app_ids.join(", ")
        },
        config.rules.skew.as_secs(),
        config.rules.max_lifetime.as_secs()
    );
    let _ = STATE.set(State {
        settings,
        app_ids: config.app_ids.clone(),
        keys,
        stats,
        sessions: Mutex::new(Sessions::default()),
        remembered: Mutex::new(Remembered::default()),
        fetcher,
    });
    ffi::register_auth_callback(ctx, auth::on_auth)?;
    ffi::register_info(ctx, on_info)?;
    if !ffi::timer(ctx, EXPIRY_CHECK_MS, on_timer) {
        return Err("cannot create the expiry timer".into());
    }
    ffi::log(ctx, "notice", &summary);
    Ok(())
}

/// Entry point: the server calls it on `--loadmodule` / `MODULE LOAD`.
///
/// # Safety
/// Called by the server with its load context and the module's arguments.
#[no_mangle]
pub unsafe extern "C" fn RedisModule_OnLoad(
    ctx: *mut Ctx,
    argv: *mut *mut RString,
    argc: c_int,
) -> c_int {
    let loaded = catch_unwind(AssertUnwindSafe(|| {
        let name = c"entra";
        // SAFETY: the load context; fills in the API's function pointers.
        let status = unsafe {
            valkey_module::raw::Export_RedisModule_Init(
                ctx,
                name.as_ptr(),
                1,
                valkey_module::raw::REDISMODULE_APIVER_1 as c_int,
            )
        };
        if status != OK {
            return Err("RedisModule_Init failed".to_string());
        }
        // SAFETY: the server's argument vector.
        let args = unsafe { arguments(argv, argc) }?;
        load(ctx, args)
    }));
    match loaded {
        Ok(Ok(())) => OK,
        Ok(Err(e)) => {
            ffi::log(ctx, "warning", &format!("entra: {e}"));
            ERR
        }
        Err(_) => ERR,
    }
}

/// Refuses `MODULE UNLOAD`: the fetch thread and the auth callback live as long as the server.
///
/// # Safety
/// Called by the server.
#[no_mangle]
pub unsafe extern "C" fn RedisModule_OnUnload(_ctx: *mut Ctx) -> c_int {
    ERR
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Every [`EXPIRY_CHECK_MS`]: closes the connections whose token expired.
unsafe extern "C" fn on_timer(ctx: *mut Ctx, _data: *mut c_void) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if let Some(state) = state() {
            let due = state.sessions().take_due(now_ms());
            // Closing may call back (`user_changed`): the lock is released by now.
            for client in due {
                if ffi::close_client(ctx, client) {
                    Stats::bump(&state.stats.expired_closes);
                    ffi::log(
                        ctx,
                        "verbose",
                        &format!("entra: client {client} closed: its token expired"),
                    );
                }
            }
        }
    }));
    ffi::timer(ctx, EXPIRY_CHECK_MS, on_timer);
}

/// `INFO entra` (section `entra_stats`).
unsafe extern "C" fn on_info(ctx: *mut InfoCtx, _for_crash_report: c_int) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let Some(state) = state() else { return };
        let s = &state.stats;
        ffi::info_section(ctx, "stats");
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        ffi::info_field(ctx, "accepted", load(&s.accepted));
        ffi::info_field(ctx, "refused", s.refused_total());
        for (reason, n) in s.refusals() {
            ffi::info_field(ctx, &format!("refused_{reason}"), n);
        }
        ffi::info_field(ctx, "passed_through", load(&s.passed_through));
        ffi::info_field(ctx, "expired_closes", load(&s.expired_closes));
        ffi::info_field(ctx, "blocked_auths", load(&s.blocked_auths));
        ffi::info_field(ctx, "key_refreshes", load(&s.key_refreshes));
        ffi::info_field(ctx, "key_refresh_failures", load(&s.key_refresh_failures));
        ffi::info_field(ctx, "signing_keys", state.keys.key_count() as u64);
        ffi::info_field(ctx, "sessions", state.sessions().len() as u64);
    }));
}
