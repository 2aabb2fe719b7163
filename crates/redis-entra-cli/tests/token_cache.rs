//! The token cache between invocations: one token request per token lifetime for a shell loop,
//! owner-only files, expired, corrupt, foreign or too-open files never used, and a way out.

mod common;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use common::{assert_no_secrets, redis_entra, Cache, Run};
use redis_entra_emulator::stats::Stats;

/// An emulator, and a private runtime folder standing in for the user's `XDG_RUNTIME_DIR`.
struct Setup {
    cache: Cache,
    runtime: tempfile::TempDir,
    vars: Vec<(String, String)>,
}

impl Setup {
    fn start() -> Self {
        let cache = Cache::start();
        let runtime = tempfile::tempdir().expect("a temporary folder");
        std::fs::set_permissions(runtime.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod 700");
        let mut vars = cache.env_with(&[]);
        vars.push((
            "XDG_RUNTIME_DIR".into(),
            runtime.path().display().to_string(),
        ));
        Self {
            cache,
            runtime,
            vars,
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        redis_entra(args, &self.vars)
    }

    fn run_with(&self, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let mut vars = self.vars.clone();
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        redis_entra(args, &vars)
    }

    fn token_requests(&self) -> u64 {
        Stats::get(&self.cache.emulator().stats().token_requests)
    }

    fn dir(&self) -> PathBuf {
        self.runtime.path().join("redis-entra")
    }

    /// The cache's token files.
    fn files(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.dir()) {
            Ok(entries) => entries.filter_map(|e| Some(e.ok()?.path())).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The one token file.
    fn file(&self) -> PathBuf {
        let files = self.files();
        assert_eq!(files.len(), 1, "one file in the cache: {files:?}");
        files[0].clone()
    }
}

fn edit_json(path: &Path, change: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).expect("the file is JSON");
    change(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn a_shell_loop_of_100_commands_asks_for_one_token() {
    let s = Setup::start();
    let before = s.token_requests();
    for i in 1..=100 {
        let run = s.run(&["INCR", "n"]).ok("INCR n");
        assert_eq!(run.stdout.trim(), i.to_string());
        assert_eq!(run.stderr, "", "no warning on a normal run");
    }
    assert_eq!(
        s.token_requests() - before,
        1,
        "100 runs with a token living an hour: one token request"
    );
    // Owner-only: the file 0600, its folder 0700.
    let file = s.file();
    assert_eq!(
        std::fs::metadata(&file).unwrap().mode() & 0o777,
        0o600,
        "{file:?}"
    );
    assert_eq!(std::fs::metadata(s.dir()).unwrap().mode() & 0o777, 0o700);
}

#[test]
fn a_token_past_its_refresh_point_or_expired_is_not_used() {
    let s = Setup::start();
    s.run(&["PING"]).ok("PING");
    let file = s.file();
    let before = s.token_requests();
    s.run(&["PING"]).ok("PING, cached");
    assert_eq!(s.token_requests(), before);

    // Received an hour ago, expiring in 10 minutes: past the 75 % refresh point.
    edit_json(&file, |v| {
        v["received_at"] = (now() - 3000).into();
        v["expires_on"] = (now() + 600).into();
    });
    s.run(&["PING"]).ok("PING, cached token due for refresh");
    assert_eq!(s.token_requests(), before + 1, "a new token was requested");

    // Expired.
    edit_json(&file, |v| {
        v["received_at"] = (now() - 7200).into();
        v["expires_on"] = (now() - 3600).into();
    });
    s.run(&["PING"]).ok("PING, cached token expired");
    assert_eq!(s.token_requests(), before + 2, "a new token was requested");
    // ... and the new one replaced it.
    s.run(&["PING"]).ok("PING");
    assert_eq!(s.token_requests(), before + 2);
}

#[test]
fn bad_files_are_ignored_with_a_warning_and_replaced() {
    let s = Setup::start();
    s.run(&["PING"]).ok("PING");
    let file = s.file();
    let mut requests = s.token_requests();
    let mut expect_ignored = |what: &str, fix: &dyn Fn(&Path), needle: &str| {
        fix(&file);
        let run = s.run(&["PING"]).ok(what);
        assert_eq!(run.stdout, "PONG\n", "{what}");
        assert!(
            run.stderr.contains("warning: token cache: ignoring") && run.stderr.contains(needle),
            "{what}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("panicked"), "{what}");
        requests += 1;
        assert_eq!(
            s.token_requests(),
            requests,
            "{what}: a token was requested"
        );
        // Replaced by a good one: the next run uses it, silently.
        let run = s.run(&["PING"]).ok(what);
        assert_eq!(run.stderr, "", "{what}");
        assert_eq!(s.token_requests(), requests, "{what}: the new file is used");
    };
    expect_ignored(
        "corrupt",
        &|f| std::fs::write(f, b"{\"key\": tru").unwrap(),
        "corrupt",
    );
    expect_ignored("empty", &|f| std::fs::write(f, b"").unwrap(), "corrupt");
    expect_ignored(
        "readable by others",
        &|f| std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap(),
        "644",
    );
    expect_ignored(
        "huge",
        &|f| std::fs::write(f, vec![b' '; 100_000]).unwrap(),
        "larger than",
    );
    // Owned by someone else (the tests may run as root, who can give a file away).
    let me = std::fs::metadata(&file).unwrap().uid();
    if std::os::unix::fs::chown(&file, Some(me + 1), None).is_ok() {
        expect_ignored("foreign-owned", &|_| {}, "owned by user");
    }
}

#[test]
fn a_folder_open_to_others_is_not_used() {
    let s = Setup::start();
    std::fs::create_dir(s.dir()).unwrap();
    std::fs::set_permissions(s.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = s.token_requests();
    for _ in 0..2 {
        let run = s.run(&["PING"]).ok("PING");
        assert!(run.stderr.contains("chmod 700"), "{}", run.stderr);
    }
    assert_eq!(s.token_requests(), before + 2, "no cache: a token per run");
    assert!(s.files().is_empty(), "nothing written to an open folder");
}

#[test]
fn no_token_cache_by_flag_or_variable() {
    let s = Setup::start();
    let before = s.token_requests();
    s.run(&["--no-token-cache", "PING"]).ok("PING");
    s.run(&["--no-token-cache", "PING"]).ok("PING");
    s.run_with(&["PING"], &[("REDIS_ENTRA_NO_TOKEN_CACHE", "1")])
        .ok("PING");
    assert_eq!(s.token_requests(), before + 3);
    assert!(s.files().is_empty(), "nothing written: {:?}", s.files());
    let help = s.run(&["--help"]).ok("--help");
    assert!(help.stdout.contains("--no-token-cache"));
    assert!(help.stdout.contains("REDIS_ENTRA_NO_TOKEN_CACHE"));
}

#[test]
fn identities_have_their_own_entries_and_no_secret_is_logged() {
    let s = Setup::start();
    let secret = s.cache.secret();
    let run = s.run(&["--log", "debug", "PING"]).ok("PING");
    assert_no_secrets(
        "a debug log (token requested)",
        &run.stderr,
        std::slice::from_ref(&secret),
    );
    let run = s.run(&["--log", "debug", "PING"]).ok("PING");
    assert!(
        run.stderr.contains("token from the cache"),
        "{}",
        run.stderr
    );
    assert_no_secrets("a debug log (cached token)", &run.stderr, &[secret]);

    // Another identity (the user-assigned managed identity): its own token and file.
    let emulator = s.cache.emulator();
    let mut mi = emulator.env_for(redis_entra_emulator::IdentityKind::UserAssignedIdentity);
    mi.push((
        "XDG_RUNTIME_DIR".into(),
        s.runtime.path().display().to_string(),
    ));
    let before = s.token_requests();
    let who = redis_entra(&["ACL", "WHOAMI"], &mi).ok("ACL WHOAMI as the managed identity");
    assert_eq!(
        who.stdout.trim(),
        emulator.user_assigned_identity().object_id
    );
    redis_entra(&["ACL", "WHOAMI"], &mi).ok("again");
    assert_eq!(s.token_requests(), before + 1);
    assert_eq!(s.files().len(), 2, "{:?}", s.files());
    let who = s
        .run(&["ACL", "WHOAMI"])
        .ok("ACL WHOAMI as the service principal");
    assert_eq!(who.stdout.trim(), emulator.service_principal().object_id);
}

#[test]
fn token_serves_the_cached_token_as_az_does() {
    let s = Setup::start();
    let before = s.token_requests();
    let first = s.run(&["token", "--raw-token"]).ok("token");
    let second = s.run(&["token", "--raw-token"]).ok("token again");
    assert_eq!(first.stdout, second.stdout);
    s.run(&["GET", "k"]).ok("GET with the same token");
    assert_eq!(s.token_requests(), before + 1);
    s.run(&["--no-token-cache", "token"]).ok("token, no cache");
    assert_eq!(s.token_requests(), before + 2);
}
