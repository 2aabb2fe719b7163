//! The auth callback: `AUTH <user> <password>` and `HELLO … AUTH <user> <password>` pass here
//! first. A password that is not a JWT is not the module's ([`AUTH_NOT_HANDLED`]: the
//! server's own password check runs). A token is checked; when valid, the client becomes the
//! ACL user named by its `oid` and its deadline is recorded; otherwise it is refused
//! ([`AUTH_HANDLED`] without authenticating: the server replies with its own `WRONGPASS`
//! text). A token whose `kid` no tenant has blocks the client (outside a transaction or a
//! script, which cannot block: there it is refused)
//! while the keys are fetched (when a fetch may help), then is checked again.

use std::ffi::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_entra_jwt::Rejection;

use crate::fetch::Request;
use crate::ffi::{self, Ctx, RString, AUTH_HANDLED, AUTH_NOT_HANDLED};
use crate::stats::Stats;
use crate::verify::{self, Refusal, Valid, MAX_TOKEN_BYTES};
use crate::{state, State};

/// What to do with a password.
enum Decision {
    NotMine,
    Accept(Valid),
    Refuse(Refusal),
    WaitForKeys,
}

fn decide(state: &State, username: &[u8], password: &[u8], may_wait: bool) -> Decision {
    if !password.starts_with(b"eyJ") {
        return Decision::NotMine;
    }
    if password.len() > MAX_TOKEN_BYTES {
        return Decision::Refuse(Refusal::Oversized);
    }
    if !verify::looks_like_jwt(password) {
        return Decision::NotMine;
    }
    // The epoch is read before verifying: keys replaced meanwhile make the entry stale.
    let epoch = state.keys.epoch();
    let rules = state.settings.rules();
    let remembered = state.remembered().lookup(password, username, epoch, &rules);
    let checked = remembered.unwrap_or_else(|| {
        let checked = verify::check(&state.keys, &rules, &state.app_ids, username, password);
        if let Ok(valid) = &checked {
            state.remembered().remember(password, valid, epoch, &rules);
        }
        checked
    });
    match checked {
        Ok(valid) => Decision::Accept(valid),
        Err(Rejection::UnknownKey) if may_wait && state.fetcher.would_help() => {
            Decision::WaitForKeys
        }
        Err(r) => Decision::Refuse(Refusal::Token(r)),
    }
}

/// Refuses: counted, logged at debug level with the reason (never the token).
fn refuse(ctx: *mut Ctx, state: &State, refusal: Refusal) -> c_int {
    state.stats.refused(refusal);
    ffi::log(
        ctx,
        "verbose",
        &format!("entra: AUTH refused: {}", refusal.name()),
    );
    AUTH_HANDLED
}

/// Makes the client the ACL user `valid.oid` until the token expires.
fn accept(ctx: *mut Ctx, state: &State, valid: Valid) -> c_int {
    // The server calls `user_changed` for the client's previous module session (if any)
    // inside this call: the sessions lock must not be held here.
    let Some(client) = ffi::authenticate_as(ctx, &valid.oid, user_changed) else {
        return refuse(ctx, state, Refusal::NoUser);
    };
    let deadline_ms = valid
        .exp
        .saturating_mul(1000)
        .saturating_add(state.settings.rules().skew.as_millis() as u64);
    if !state.sessions().insert(client, deadline_ms) {
        // Full: this connection would never be closed at expiry. Close it now.
        ffi::close_client(ctx, client);
        return refuse(ctx, state, Refusal::Busy);
    }
    Stats::bump(&state.stats.accepted);
    AUTH_HANDLED
}

fn handle(ctx: *mut Ctx, username: *mut RString, password: *mut RString, may_wait: bool) -> c_int {
    let Some(state) = state() else {
        return AUTH_NOT_HANDLED;
    };
    // SAFETY: the strings the server passed to this callback, read during it.
    let (username, password) = unsafe { (ffi::bytes(username), ffi::bytes(password)) };
    match decide(state, username, password, may_wait) {
        Decision::NotMine => {
            Stats::bump(&state.stats.passed_through);
            AUTH_NOT_HANDLED
        }
        Decision::Accept(valid) => accept(ctx, state, valid),
        Decision::Refuse(refusal) => refuse(ctx, state, refusal),
        Decision::WaitForKeys => match ffi::block_on_auth(ctx, after_fetch) {
            None => refuse(ctx, state, Refusal::Token(Rejection::UnknownKey)),
            Some(waiter) => {
                Stats::bump(&state.stats.blocked_auths);
                // A full queue gives the client back; dropping it unblocks it at once, and
                // `after_fetch` refuses it (the key is still unknown).
                let _ = state.fetcher.submit(Request { waiter });
                AUTH_HANDLED
            }
        },
    }
}

/// The auth callback the server calls for `AUTH` and `HELLO … AUTH`.
///
/// # Safety
/// Called by the server with its own arguments.
pub unsafe extern "C" fn on_auth(
    ctx: *mut Ctx,
    username: *mut RString,
    password: *mut RString,
    _err: *mut *mut RString,
) -> c_int {
    // A panic must never cross into the server: refuse instead.
    catch_unwind(AssertUnwindSafe(|| handle(ctx, username, password, true))).unwrap_or(AUTH_HANDLED)
}

/// The reply callback of a client that waited for keys: decides with the keys known now.
unsafe extern "C" fn after_fetch(
    ctx: *mut Ctx,
    username: *mut RString,
    password: *mut RString,
    _err: *mut *mut RString,
) -> c_int {
    catch_unwind(AssertUnwindSafe(|| handle(ctx, username, password, false)))
        .unwrap_or(AUTH_HANDLED)
}

/// The server's notice that a client the module authenticated is no longer that user.
unsafe extern "C" fn user_changed(client_id: u64, _privdata: *mut c_void) {
    let _ = catch_unwind(|| {
        if let Some(state) = state() {
            state.sessions().remove(client_id);
        }
    });
}
