//! `CONFIG GET/SET entra.skew`, `entra.max-lifetime`, `entra.refresh-interval` and
//! `entra.unknown-kid-interval` (seconds): the server's module configs over [`Settings`]. The
//! module arguments give the values at load; `entra.*` lines in the configuration file, then
//! `CONFIG SET`, change them.

use std::ffi::{c_char, c_int, c_longlong, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::ffi::{self, Ctx, RString, ERR, OK};
use crate::settings::{Setting, Settings, MAX_SECONDS};

fn setting_of(name: *const c_char) -> Option<Setting> {
    if name.is_null() {
        return None;
    }
    // SAFETY: the server passes the config's NUL-terminated name.
    let name = unsafe { CStr::from_ptr(name) }.to_str().ok()?;
    let name = name.strip_prefix("entra.").unwrap_or(name);
    Setting::ALL.into_iter().find(|s| s.name() == name)
}

/// # Safety
/// `privdata` is the `Arc<Settings>` leaked in [`register`].
unsafe fn settings<'a>(privdata: *mut c_void) -> Option<&'a Settings> {
    (privdata as *const Settings).as_ref()
}

unsafe extern "C" fn get(name: *const c_char, privdata: *mut c_void) -> c_longlong {
    catch_unwind(AssertUnwindSafe(|| {
        match (setting_of(name), settings(privdata)) {
            (Some(setting), Some(settings)) => settings.get(setting) as c_longlong,
            _ => 0,
        }
    }))
    .unwrap_or(0)
}

unsafe extern "C" fn set(
    name: *const c_char,
    value: c_longlong,
    privdata: *mut c_void,
    err: *mut *mut RString,
) -> c_int {
    catch_unwind(AssertUnwindSafe(|| {
        let (Some(setting), Some(settings)) = (setting_of(name), settings(privdata)) else {
            ffi::set_error(err, "unknown entra config");
            return ERR;
        };
        match settings.set(setting, u64::try_from(value).unwrap_or(u64::MAX)) {
            Ok(()) => OK,
            Err(e) => {
                ffi::set_error(err, &e);
                ERR
            }
        }
    }))
    .unwrap_or(ERR)
}

/// Registers every setting as `entra.<name>`, then applies the configuration file's values.
pub fn register(ctx: *mut Ctx, settings: &Arc<Settings>) -> Result<(), String> {
    // One reference lives as long as the server (the module cannot be unloaded).
    let privdata = Arc::into_raw(settings.clone()) as *mut c_void;
    for setting in Setting::ALL {
        ffi::register_numeric_config(
            ctx,
            setting.name(),
            settings.get(setting) as i64,
            setting.min() as i64,
            MAX_SECONDS as i64,
            get,
            set,
            privdata,
        )?;
    }
    ffi::load_configs(ctx)
}
