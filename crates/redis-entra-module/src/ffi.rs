//! The few server functions the module calls, each behind a safe wrapper that returns an error
//! (never panics) when the server does not provide it. The pointers are the ones
//! `RedisModule_Init` filled in (Valkey serves the `RedisModule_*` names too).

use std::ffi::{c_char, c_int, c_void, CString};
use std::ptr;

use valkey_module::raw;
pub use valkey_module::raw::{
    RedisModuleBlockedClient as BlockedClient, RedisModuleCtx as Ctx,
    RedisModuleInfoCtx as InfoCtx, RedisModuleString as RString,
};

/// `REDISMODULE_OK`.
pub const OK: c_int = 0;
/// `REDISMODULE_ERR`.
pub const ERR: c_int = 1;
/// `REDISMODULE_AUTH_HANDLED`: the module decided (authenticated the client, or refused it).
pub const AUTH_HANDLED: c_int = 0;
/// `REDISMODULE_AUTH_NOT_HANDLED`: not the module's password; the next check runs.
pub const AUTH_NOT_HANDLED: c_int = 1;

/// An auth callback, as the server calls it.
pub type AuthCallback =
    unsafe extern "C" fn(*mut Ctx, *mut RString, *mut RString, *mut *mut RString) -> c_int;

/// Logs one line through the server's log at `level` (`debug`, `verbose`, `notice`,
/// `warning`). `ctx` may be null (from the module's own thread). Never pass a token.
pub fn log(ctx: *mut Ctx, level: &str, message: &str) {
    // SAFETY: reading a function pointer the server set at load time.
    let Some(log) = (unsafe { raw::RedisModule_Log }) else {
        return;
    };
    let (Ok(level), Ok(message)) = (
        CString::new(level),
        CString::new(message.replace('\0', " ")),
    ) else {
        return;
    };
    // SAFETY: valid C strings; "%s" consumes exactly one string argument.
    unsafe { log(ctx, level.as_ptr(), c"%s".as_ptr(), message.as_ptr()) };
}

/// The bytes of a server string (empty for a null pointer).
///
/// # Safety
/// `s` must be null or a string the server passed to the current callback; the slice must not
/// outlive that callback.
pub unsafe fn bytes<'a>(s: *const RString) -> &'a [u8] {
    let Some(ptr_len) = raw::RedisModule_StringPtrLen else {
        return &[];
    };
    if s.is_null() {
        return &[];
    }
    let mut len = 0usize;
    let p = ptr_len(s, &mut len);
    if p.is_null() {
        return &[];
    }
    std::slice::from_raw_parts(p.cast::<u8>(), len)
}

/// Whether the server filled in `RedisModule_<name>`.
macro_rules! present {
    ($name:ident) => {{
        // SAFETY: copying a function pointer the server set at load time.
        let f = unsafe { raw::$name };
        (
            stringify!($name).trim_start_matches("RedisModule_"),
            f.is_some(),
        )
    }};
}

/// The functions the module needs that only module-authentication servers (Redis ≥ 7.2,
/// Valkey ≥ 7.2) have: the names of those missing.
pub fn missing_functions() -> Vec<&'static str> {
    [
        present!(RedisModule_RegisterAuthCallback),
        present!(RedisModule_BlockClientOnAuth),
        present!(RedisModule_UnblockClient),
        present!(RedisModule_AuthenticateClientWithACLUser),
        present!(RedisModule_DeauthenticateAndCloseClient),
        present!(RedisModule_CreateTimer),
        present!(RedisModule_RegisterInfoFunc),
        present!(RedisModule_InfoAddSection),
        present!(RedisModule_InfoAddFieldULongLong),
        present!(RedisModule_StringPtrLen),
    ]
    .into_iter()
    .filter(|(_, ok)| !ok)
    .map(|(name, _)| name)
    .collect()
}

/// Registers `callback` as a module auth callback.
pub fn register_auth_callback(ctx: *mut Ctx, callback: AuthCallback) -> Result<(), &'static str> {
    // SAFETY: a function pointer the server set; `ctx` is the load context.
    unsafe {
        let register = raw::RedisModule_RegisterAuthCallback.ok_or("no RegisterAuthCallback")?;
        register(ctx, Some(callback));
    }
    Ok(())
}

/// Registers the `INFO` callback.
pub fn register_info(
    ctx: *mut Ctx,
    callback: unsafe extern "C" fn(*mut InfoCtx, c_int),
) -> Result<(), &'static str> {
    // SAFETY: a function pointer the server set; `ctx` is the load context.
    unsafe {
        let register = raw::RedisModule_RegisterInfoFunc.ok_or("no RegisterInfoFunc")?;
        if register(ctx, Some(callback)) != OK {
            return Err("RegisterInfoFunc failed");
        }
    }
    Ok(())
}

/// Adds an `INFO` section named `<module>_<name>`.
pub fn info_section(ctx: *mut InfoCtx, name: &str) {
    let Ok(name) = CString::new(name) else { return };
    // SAFETY: a function pointer the server set; `ctx` is the INFO callback's.
    unsafe {
        if let Some(add) = raw::RedisModule_InfoAddSection {
            add(ctx, name.as_ptr());
        }
    }
}

/// Adds a numeric `INFO` field.
pub fn info_field(ctx: *mut InfoCtx, name: &str, value: u64) {
    let Ok(name) = CString::new(name) else { return };
    // SAFETY: as above.
    unsafe {
        if let Some(add) = raw::RedisModule_InfoAddFieldULongLong {
            add(ctx, name.as_ptr(), value);
        }
    }
}

/// Called by the server when a client the module authenticated stops being that user (it
/// authenticates again, `RESET`s, is closed, or its user is deleted).
pub type UserChanged = unsafe extern "C" fn(client_id: u64, privdata: *mut c_void);

/// Authenticates the calling client as the ACL user `name`; the client's id, or `None` when
/// no such user exists or it is disabled.
pub fn authenticate_as(ctx: *mut Ctx, name: &str, on_change: UserChanged) -> Option<u64> {
    let mut id: u64 = 0;
    // SAFETY: a function pointer the server set; `ctx` is an auth callback's; `name` outlives
    // the call.
    let status = unsafe {
        let auth = raw::RedisModule_AuthenticateClientWithACLUser?;
        auth(
            ctx,
            name.as_ptr().cast::<c_char>(),
            name.len(),
            Some(on_change),
            ptr::null_mut(),
            &mut id,
        )
    };
    (status == OK).then_some(id)
}

/// Closes client `id` (at its next turn of the event loop): `false` when it no longer exists.
pub fn close_client(ctx: *mut Ctx, id: u64) -> bool {
    // SAFETY: a function pointer the server set; main thread.
    unsafe {
        match raw::RedisModule_DeauthenticateAndCloseClient {
            Some(close) => close(ctx, id) == OK,
            None => false,
        }
    }
}

/// Calls `callback` on the main thread in `period_ms` milliseconds.
pub fn timer(
    ctx: *mut Ctx,
    period_ms: i64,
    callback: unsafe extern "C" fn(*mut Ctx, *mut c_void),
) -> bool {
    // SAFETY: a function pointer the server set; main thread.
    unsafe {
        match raw::RedisModule_CreateTimer {
            Some(create) => {
                create(ctx, period_ms, Some(callback), ptr::null_mut());
                true
            }
            None => false,
        }
    }
}

/// A client blocked in authentication, to unblock from any thread (exactly once).
pub struct Blocked(*mut BlockedClient);

// SAFETY: `UnblockClient` is documented as callable from any thread.
unsafe impl Send for Blocked {}

impl Blocked {
    /// Lets the server run the reply callback given to [`block_on_auth`] on its main thread
    /// (dropping a `Blocked` does the same, so no client stays blocked for ever).
    pub fn unblock(self) {
        drop(self);
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        // SAFETY: a function pointer the server set; called once, as `self` goes.
        unsafe {
            if let Some(unblock) = raw::RedisModule_UnblockClient {
                unblock(self.0, ptr::null_mut());
            }
        }
    }
}

/// Blocks the client of an auth callback until [`Blocked::unblock`]; then the server calls
/// `reply` on the main thread, which decides as an auth callback does. `None` when the client
/// cannot block (inside `MULTI`, a script, …).
pub fn block_on_auth(ctx: *mut Ctx, reply: AuthCallback) -> Option<Blocked> {
    // SAFETY: function pointers the server set; `ctx` is an auth callback's.
    unsafe {
        // In a transaction or a script the server would "block" the client only to answer
        // "Blocking module command called from transaction": not blocking at all is the answer.
        let flags = raw::RedisModule_GetContextFlags.map_or(0, |flags| flags(ctx));
        if flags & raw::REDISMODULE_CTX_FLAGS_DENY_BLOCKING as c_int != 0 {
            return None;
        }
        let block = raw::RedisModule_BlockClientOnAuth?;
        let bc = block(ctx, Some(reply), None);
        (!bc.is_null()).then_some(Blocked(bc))
    }
}

/// A numeric config's getter, as the server calls it.
pub type GetNumeric = unsafe extern "C" fn(*const c_char, *mut c_void) -> std::ffi::c_longlong;
/// A numeric config's setter, as the server calls it.
pub type SetNumeric = unsafe extern "C" fn(
    *const c_char,
    std::ffi::c_longlong,
    *mut c_void,
    *mut *mut RString,
) -> c_int;

/// Registers the numeric config `<module>.<name>` (`CONFIG GET/SET`), with `privdata` passed
/// to the callbacks.
#[allow(clippy::too_many_arguments)]
pub fn register_numeric_config(
    ctx: *mut Ctx,
    name: &str,
    default: i64,
    min: i64,
    max: i64,
    get: GetNumeric,
    set: SetNumeric,
    privdata: *mut c_void,
) -> Result<(), String> {
    let cname = CString::new(name).map_err(|_| format!("bad config name {name:?}"))?;
    // SAFETY: a function pointer the server set; load context; the name is copied by the
    // server.
    let status = unsafe {
        let register =
            raw::RedisModule_RegisterNumericConfig.ok_or("this server has no module configs")?;
        register(
            ctx,
            cname.as_ptr(),
            default,
            0, // REDISMODULE_CONFIG_DEFAULT
            min,
            max,
            Some(get),
            Some(set),
            None,
            privdata,
        )
    };
    if status == OK {
        Ok(())
    } else {
        Err(format!("registering the config {name} failed"))
    }
}

/// Applies the `<module>.<name>` lines of the server's configuration file to the registered
/// configs.
pub fn load_configs(ctx: *mut Ctx) -> Result<(), String> {
    // SAFETY: a function pointer the server set; load context.
    let status = unsafe {
        let load = raw::RedisModule_LoadConfigs.ok_or("this server has no module configs")?;
        load(ctx)
    };
    if status == OK {
        Ok(())
    } else {
        Err("loading the module's configs failed (see the lines above)".into())
    }
}

/// Makes an error string for a config setter's `err`.
pub fn set_error(err: *mut *mut RString, message: &str) {
    if err.is_null() {
        return;
    }
    // SAFETY: a function pointer the server set; `err` is the setter's out-parameter; the
    // server frees the string.
    unsafe {
        if let Some(create) = raw::RedisModule_CreateString {
            *err = create(
                ptr::null_mut(),
                message.as_ptr().cast::<c_char>(),
                message.len(),
            );
        }
    }
}
