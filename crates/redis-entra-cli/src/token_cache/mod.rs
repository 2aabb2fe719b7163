//! The token cache between invocations: a shell loop of `redis-entra INCR n` asks Entra ID for
//! one token per token lifetime, not one per command (Entra throttles request loops, and a token
//! request costs more than the command).
//!
//! As the Azure CLI keeps its tokens, the cache is per user and owner-only:
//!
//! - the folder is `$XDG_RUNTIME_DIR/redis-entra` (a tmpfs private to the user, emptied at
//!   logout), else `$XDG_CACHE_HOME/redis-entra`, else `~/.cache/redis-entra`; it is created
//!   with mode 0700 and refused (with a warning, the cache then unused) when it is a symbolic
//!   link, is owned by another user, or is open to the group or others;
//! - one file per identity and scope (`token-<hash>.json`, the hash of [`CacheKey`]'s text:
//!   the credential kind, authority, tenant, client id or principal, a fingerprint of a client
//!   secret, and scope), mode 0600,
//!   written atomically (a new file, then a rename), so a reader sees the old entry or the new
//!   one, never half of one;
//! - a file is used only while the token has its refresh margin left: before the point at which
//!   a [`RefreshPolicy`] would refresh it (75 % of its lifetime, no later than 3 minutes before
//!   expiry); after that the credential is asked and the file replaced;
//! - a file that is corrupt, too large, not a regular file, owned by another user or readable
//!   by others is ignored with a warning (and replaced by the next token), never a panic.
//!
//! The trade-off: a token in the file is a bearer credential for the cache until it expires
//! (an hour or so); anyone who can read the file as this user, or as root, can use it. Entra's
//! own tools make the same choice (`~/.azure/msal_token_cache.json`). `--no-token-cache` or
//! `REDIS_ENTRA_NO_TOKEN_CACHE=1` turn it off.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use redis_entra::RefreshPolicy;

mod credential;
mod key;

pub use credential::{forget_refused, wrap};
pub use key::CacheKey;

/// The variable that turns the cache off (`1`, `true` or `yes`).
pub const DISABLE_VAR: &str = "REDIS_ENTRA_NO_TOKEN_CACHE";
/// The largest cache file read (a token is a few KiB).
const MAX_FILE: u64 = 64 * 1024;
/// A token claiming to live longer than this is not believed (Entra's live at most a day).
const MAX_LIFETIME_SECS: i64 = 48 * 3600;
/// How many entries of the folder are looked at for stale temporary files.
const MAX_ENTRIES_SCANNED: usize = 1000;

/// Whether `REDIS_ENTRA_NO_TOKEN_CACHE` asks for no cache.
pub fn disabled_by_env() -> bool {
    std::env::var(DISABLE_VAR).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// The cache's folder: `$XDG_RUNTIME_DIR/redis-entra`, else `$XDG_CACHE_HOME/redis-entra`, else
/// `$HOME/.cache/redis-entra` (relative paths in these variables are ignored, as XDG says).
pub fn default_dir() -> Option<PathBuf> {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    absolute("XDG_RUNTIME_DIR")
        .or_else(|| absolute("XDG_CACHE_HOME"))
        .or_else(|| absolute("HOME").map(|h| h.join(".cache")))
        .map(|base| base.join("redis-entra"))
}

/// A token read from the cache. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// The access token.
    pub token: String,
    /// When it expires, in seconds since the epoch.
    pub expires_on: i64,
    /// When it was received, in seconds since the epoch.
    pub received_at: i64,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("token", &"<redacted>")
            .field("expires_on", &self.expires_on)
            .field("received_at", &self.received_at)
            .finish()
    }
}

impl Entry {
    /// Whether the token may be used at `now` (seconds since the epoch): received in the past,
    /// living a plausible time, and with its refresh margin left (`now` is before the point
    /// at which `policy` would refresh it, taking no jitter).
    pub fn usable(&self, now: i64, policy: &RefreshPolicy) -> bool {
        let lifetime = self.expires_on - self.received_at;
        if now < self.received_at || lifetime <= 0 || lifetime > MAX_LIFETIME_SECS {
            return false;
        }
        let refresh_after = policy
            .refresh_after(std::time::Duration::from_secs(lifetime as u64), 0.0)
            .as_secs() as i64;
        now < self.received_at + refresh_after && now < self.expires_on
    }

    fn to_json(&self, key_text: &str) -> String {
        serde_json::json!({
            "key": key_text,
            "token": self.token,
            "expires_on": self.expires_on,
            "received_at": self.received_at,
        })
        .to_string()
    }

    /// Parses a file's text; the key written in it must be `key_text`.
    fn from_json(text: &[u8], key_text: &str) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_slice(text).map_err(|_| "it is not valid JSON".to_string())?;
        if v["key"].as_str() != Some(key_text) {
            return Err("it belongs to another identity or format".into());
        }
        let token = v["token"]
            .as_str()
            .filter(|t| !t.is_empty() && t.len() < MAX_FILE as usize)
            .ok_or("it has no token")?;
        let expires_on = v["expires_on"].as_i64().ok_or("it has no expires_on")?;
        let received_at = v["received_at"].as_i64().ok_or("it has no received_at")?;
        Ok(Self {
            token: token.to_string(),
            expires_on,
            received_at,
        })
    }
}

/// Seconds since the epoch, now.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Why a file or folder may not hold tokens, if it may not: not owned by `uid`, or open to the
/// group or others (`mode` holds the permission bits).
pub fn ownership_problem(owner: u32, mode: u32, uid: u32) -> Option<String> {
    if owner != uid {
        return Some(format!(
            "it is owned by user {owner}, not by this user ({uid})"
        ));
    }
    if mode & 0o077 != 0 {
        return Some(format!(
            "its permissions ({:o}) let other users in; the cache needs it private to you",
            mode & 0o777
        ));
    }
    None
}

fn warn(path: &Path, reason: &str, fix: &str) {
    eprintln!(
        "warning: token cache: ignoring {}: {reason}; {fix}",
        path.display()
    );
}

/// A checked, private cache folder.
#[derive(Debug, Clone)]
pub struct TokenCache {
    dir: PathBuf,
}

impl TokenCache {
    /// Opens (creating it with mode 0700 if needed) the cache folder `dir`; `None`, after a
    /// warning, when it cannot hold tokens safely.
    pub fn open(dir: PathBuf) -> Option<Self> {
        if let Some(parent) = dir.parent() {
            // The parent (e.g. ~/.cache) with the user's usual permissions; the cache's own
            // folder below is private whatever the umask.
            let _ = fs::create_dir_all(parent);
        }
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                warn(
                    &dir,
                    &format!("it cannot be created ({e})"),
                    "tokens are not cached (pass --no-token-cache to say so)",
                );
                return None;
            }
        }
        let meta = match fs::symlink_metadata(&dir) {
            Ok(meta) => meta,
            Err(e) => {
                warn(
                    &dir,
                    &format!("it cannot be read ({e})"),
                    "tokens are not cached",
                );
                return None;
            }
        };
        if !meta.file_type().is_dir() {
            warn(
                &dir,
                "it is not a folder (a symbolic link or a file)",
                "remove it; tokens are not cached meanwhile",
            );
            return None;
        }
        if let Some(problem) = ownership_problem(meta.uid(), meta.mode(), effective_uid()) {
            warn(
                &dir,
                &problem,
                &format!(
                    "run `chmod 700 {}` if it is yours, or remove it; tokens are not cached meanwhile",
                    dir.display()
                ),
            );
            return None;
        }
        let cache = Self { dir };
        cache.remove_stale_temporaries();
        Some(cache)
    }

    /// Removes temporary files that a process which died while writing left behind (older than
    /// a minute; a look at the first [`MAX_ENTRIES_SCANNED`] entries), so the folder stays
    /// bounded.
    fn remove_stale_temporaries(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let minute_ago = SystemTime::now() - std::time::Duration::from_secs(60);
        for entry in entries.take(MAX_ENTRIES_SCANNED).flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !(name.starts_with('.') && name.ends_with(".tmp")) {
                continue;
            }
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < minute_ago);
            if old {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file for `key` and `scopes`.
    pub fn path(&self, key: &CacheKey, scopes: &[&str]) -> PathBuf {
        self.dir.join(key.file_name(scopes))
    }

    /// The entry for `key` and `scopes`, if there is one that is safe to read and well formed
    /// (a bad file is reported and skipped). Whether it is still usable is the caller's call
    /// ([`Entry::usable`]).
    pub fn load(&self, key: &CacheKey, scopes: &[&str]) -> Option<Entry> {
        let path = self.path(key, scopes);
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                warn(
                    &path,
                    &format!("it cannot be opened ({e})"),
                    "a new token is requested and the file replaced",
                );
                return None;
            }
        };
        let meta = file.metadata().ok()?;
        let fix = "a new token is requested and the file replaced";
        if !meta.file_type().is_file() {
            warn(&path, "it is not a regular file", fix);
            return None;
        }
        if let Some(problem) = ownership_problem(meta.uid(), meta.mode(), effective_uid()) {
            warn(&path, &problem, fix);
            return None;
        }
        if meta.len() > MAX_FILE {
            warn(&path, &format!("it is larger than {MAX_FILE} bytes"), fix);
            return None;
        }
        let mut text = Vec::with_capacity(meta.len() as usize);
        if let Err(e) = file.take(MAX_FILE).read_to_end(&mut text) {
            warn(&path, &format!("it cannot be read ({e})"), fix);
            return None;
        }
        match Entry::from_json(&text, &key.text(scopes)) {
            Ok(entry) => Some(entry),
            Err(reason) => {
                warn(&path, &format!("it is corrupt ({reason})"), fix);
                None
            }
        }
    }

    /// Writes `entry` for `key` and `scopes`: a new 0600 file in the folder, then renamed over
    /// the old one.
    pub fn store(&self, key: &CacheKey, scopes: &[&str], entry: &Entry) -> std::io::Result<()> {
        let path = self.path(key, scopes);
        let temp = self.dir.join(format!(
            ".{}.{}.{:016x}.tmp",
            key.file_name(scopes),
            std::process::id(),
            rand::random::<u64>()
        ));
        let write = || -> std::io::Result<()> {
            let mut file: File = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&temp)?;
            file.write_all(entry.to_json(&key.text(scopes)).as_bytes())?;
            file.flush()?;
            fs::rename(&temp, &path)
        };
        let result = write();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// Removes the entry for `key` and `scopes` (a token the server refused).
    pub fn remove(&self, key: &CacheKey, scopes: &[&str]) {
        let _ = fs::remove_file(self.path(key, scopes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(received_at: i64, lifetime: i64) -> Entry {
        Entry {
            token: "t".into(),
            expires_on: received_at + lifetime,
            received_at,
        }
    }

    #[test]
    fn a_token_is_used_until_its_refresh_point() {
        let p = RefreshPolicy::default();
        // An hour: refreshed at 45 minutes.
        let e = entry(1000, 3600);
        assert!(e.usable(1000, &p));
        assert!(e.usable(1000 + 2699, &p));
        assert!(!e.usable(1000 + 2700, &p));
        assert!(!e.usable(1000 + 3600, &p));
        // 20 s: at half its life.
        let e = entry(1000, 20);
        assert!(e.usable(1009, &p));
        assert!(!e.usable(1010, &p));
    }

    #[test]
    fn implausible_entries_are_not_used() {
        let p = RefreshPolicy::default();
        assert!(!entry(1000, 3600).usable(999, &p), "received in the future");
        assert!(!entry(1000, 0).usable(1000, &p));
        assert!(!entry(1000, -5).usable(1000, &p));
        assert!(!entry(1000, 30 * 24 * 3600).usable(1001, &p));
    }

    #[test]
    fn parsing_checks_the_key_and_fields() {
        let e = entry(1, 3600);
        let text = e.to_json("k");
        assert_eq!(Entry::from_json(text.as_bytes(), "k"), Ok(e.clone()));
        assert!(Entry::from_json(text.as_bytes(), "other").is_err());
        assert!(Entry::from_json(b"{", "k").is_err());
        assert!(Entry::from_json(b"[]", "k").is_err());
        assert!(Entry::from_json(
            br#"{"key":"k","token":"","expires_on":1,"received_at":0}"#,
            "k"
        )
        .is_err());
        assert!(!format!("{e:?}").contains("\"t\""));
    }

    #[test]
    fn ownership_and_permissions() {
        assert_eq!(ownership_problem(5, 0o600, 5), None);
        assert_eq!(ownership_problem(5, 0o40700, 5), None);
        assert!(ownership_problem(6, 0o600, 5)
            .unwrap()
            .contains("owned by user 6"));
        assert!(ownership_problem(5, 0o644, 5).unwrap().contains("644"));
        assert!(ownership_problem(5, 0o710, 5).is_some());
    }

    #[test]
    fn stores_privately_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TokenCache::open(dir.path().join("redis-entra")).unwrap();
        let meta = fs::metadata(cache.dir()).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
        let key = CacheKey::new("k");
        let s = ["scope"];
        assert_eq!(cache.load(&key, &s), None);
        let e = entry(now_unix(), 3600);
        cache.store(&key, &s, &e).unwrap();
        let meta = fs::metadata(cache.path(&key, &s)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(cache.load(&key, &s), Some(e));
        // No temporary file left behind; a stale one (a writer died) is removed at the next open.
        assert_eq!(fs::read_dir(cache.dir()).unwrap().count(), 1);
        let stale = cache.dir().join(".token-x.json.1.0.tmp");
        let fresh = cache.dir().join(".token-y.json.1.0.tmp");
        fs::write(&stale, b"{").unwrap();
        fs::write(&fresh, b"{").unwrap();
        let long_ago = SystemTime::now() - std::time::Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let cache = TokenCache::open(cache.dir().to_path_buf()).unwrap();
        assert!(!stale.exists() && fresh.exists());
        fs::remove_file(&fresh).unwrap();
        cache.remove(&key, &s);
        assert_eq!(cache.load(&key, &s), None);
    }

    #[test]
    fn a_folder_open_to_others_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("redis-entra");
        fs::create_dir(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(TokenCache::open(path.clone()).is_none());
        fs::remove_dir(&path).unwrap();
        std::os::unix::fs::symlink(dir.path(), &path).unwrap();
        assert!(TokenCache::open(path).is_none(), "a symbolic link");
    }
}
