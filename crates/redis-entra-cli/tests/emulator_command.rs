//! `redis-entra emulator` as a user runs it (DESIGN.md §4.1, §4.2): it writes the env file and
//! prints `ready`, and `redis-entra` run with nothing but that file's variables reaches the cache.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Instant;

use common::{
    alive, assert_no_secrets, children_named, cmdline, jwt_claims, redis_entra, EmulatorProcess,
    COMMAND_TIMEOUT,
};

/// Variables every env file has (DESIGN.md §4.2).
const ALWAYS: &[&str] = &[
    "AZURE_REDIS_HOST",
    "AZURE_REDIS_PORT",
    "AZURE_AUTHORITY_HOST",
    "AZURE_TENANT_ID",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
];

const SERVICE_PRINCIPAL: &[&str] = &[
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_REDIS_CLIENTID",
    "AZURE_REDIS_CLIENTSECRET",
    "AZURE_REDIS_TENANTID",
];

const MANAGED_IDENTITY: &[&str] = &["IDENTITY_ENDPOINT", "IDENTITY_HEADER"];

/// Checks what every env file must hold, whatever the identity.
fn check_common_env(emulator: &EmulatorProcess, identity_vars: &[&str]) {
    let text = &emulator.env_text;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let rest = line
            .strip_prefix("export ")
            .unwrap_or_else(|| panic!("env file line {line:?} is not `export NAME=VALUE`"));
        let (name, _) = rest
            .split_once('=')
            .unwrap_or_else(|| panic!("env file line {line:?} is not `export NAME=VALUE`"));
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
            "env file line {line:?} has a bad variable name"
        );
    }
    let vars = emulator.var_map();
    for name in ALWAYS.iter().chain(identity_vars) {
        let value = vars
            .get(*name)
            .unwrap_or_else(|| panic!("the env file lacks {name}:\n{text}"));
        assert!(!value.is_empty(), "{name} is empty in the env file");
    }

    assert_eq!(emulator.var("AZURE_REDIS_HOST"), "localhost");
    let port: u16 = emulator
        .var("AZURE_REDIS_PORT")
        .parse()
        .expect("AZURE_REDIS_PORT is a port number");
    assert_ne!(port, 0);

    let authority = emulator.var("AZURE_AUTHORITY_HOST");
    let authority_port = authority
        .strip_prefix("https://localhost:")
        .unwrap_or_else(|| panic!("AZURE_AUTHORITY_HOST={authority} is not https://localhost:PORT"))
        .trim_end_matches('/');
    let authority_port: u16 = authority_port
        .parse()
        .unwrap_or_else(|_| panic!("AZURE_AUTHORITY_HOST={authority} has no port number"));
    assert_ne!(authority_port, 0);

    let ca = emulator.var("SSL_CERT_FILE");
    assert_eq!(emulator.var("REQUESTS_CA_BUNDLE"), ca);
    assert_eq!(emulator.var("NODE_EXTRA_CA_CERTS"), ca);
    let pem = std::fs::read_to_string(&ca).unwrap_or_else(|e| panic!("reading {ca}: {e}"));
    assert!(
        pem.contains("-----BEGIN CERTIFICATE-----"),
        "{ca} is not a PEM certificate"
    );

    // It holds secrets: readable by its owner only.
    let mode = std::fs::metadata(&emulator.env_file)
        .expect("the env file exists")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "the env file is readable by others (mode {mode:o})"
    );
}

/// Runs `redis-entra ARGS` with the env file's variables and returns its stdout, trimmed;
/// panics unless it exits 0.
fn cli(emulator: &EmulatorProcess, args: &[&str]) -> String {
    let run = redis_entra(args, &emulator.vars);
    run.assert_success(&format!("redis-entra {}", args.join(" ")));
    run.stdout.trim().to_string()
}

#[test]
fn service_principal_env_file_drives_the_command() {
    let emulator =
        EmulatorProcess::start(&["--token-lifetime", "30s", "--identity", "service-principal"]);
    check_common_env(&emulator, SERVICE_PRINCIPAL);
    let vars = emulator.var_map();
    assert_eq!(vars["AZURE_CLIENT_ID"], vars["AZURE_REDIS_CLIENTID"]);
    assert_eq!(
        vars["AZURE_CLIENT_SECRET"],
        vars["AZURE_REDIS_CLIENTSECRET"]
    );
    assert_eq!(vars["AZURE_TENANT_ID"], vars["AZURE_REDIS_TENANTID"]);
    for name in MANAGED_IDENTITY {
        assert!(
            !vars.contains_key(*name),
            "a service principal's env file has {name}"
        );
    }
    let secret = emulator.var("AZURE_CLIENT_SECRET");

    assert_eq!(cli(&emulator, &["PING"]), "PONG");
    assert_eq!(cli(&emulator, &["SET", "k", "v"]), "OK");
    assert_eq!(cli(&emulator, &["GET", "k"]), "v");

    // --raw prints the token: a JWT whose oid is the username.
    let raw = cli(&emulator, &["token", "--raw"]);
    assert_eq!(raw.lines().count(), 1, "token --raw prints one line: {raw}");
    let claims = jwt_claims(&raw);
    let oid = claims["oid"]
        .as_str()
        .unwrap_or_else(|| panic!("the token has no oid claim: {claims}"))
        .to_string();
    assert_eq!(
        claims["tid"].as_str(),
        Some(vars["AZURE_TENANT_ID"].as_str())
    );

    // Without --raw: the claims and the username, never the token or the secret.
    let run = redis_entra(&["token"], &emulator.vars);
    run.assert_success("redis-entra token");
    assert!(
        run.stdout
            .lines()
            .any(|l| l.contains("username") && l.contains(&oid)),
        "redis-entra token does not show the username {oid}:\n{}",
        run.stdout
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("oid") && l.contains(&oid)),
        "redis-entra token does not show the oid {oid}:\n{}",
        run.stdout
    );
    assert_no_secrets(
        "redis-entra token",
        &run.all(),
        &[secret.clone(), raw.clone()],
    );

    assert_no_secrets("the emulator", &emulator.stderr(), &[secret, raw]);
}

#[test]
fn managed_identity_env_file_drives_the_command() {
    let emulator =
        EmulatorProcess::start(&["--token-lifetime", "30s", "--identity", "managed-identity"]);
    check_common_env(&emulator, MANAGED_IDENTITY);
    let vars = emulator.var_map();
    for name in SERVICE_PRINCIPAL {
        assert!(
            !vars.contains_key(*name),
            "a system-assigned managed identity's env file has {name}:\n{}",
            emulator.env_text
        );
    }
    let endpoint = emulator.var("IDENTITY_ENDPOINT");
    assert!(
        endpoint.starts_with("http://") || endpoint.starts_with("https://"),
        "IDENTITY_ENDPOINT={endpoint} is not a URL"
    );
    let header = emulator.var("IDENTITY_HEADER");

    assert_eq!(cli(&emulator, &["PING"]), "PONG");
    assert_eq!(cli(&emulator, &["SET", "mi", "works"]), "OK");
    assert_eq!(cli(&emulator, &["GET", "mi"]), "works");

    let raw = cli(&emulator, &["token", "--raw"]);
    let claims = jwt_claims(&raw);
    let oid = claims["oid"].as_str().expect("the token has an oid claim");
    let run = redis_entra(&["token"], &emulator.vars);
    run.assert_success("redis-entra token");
    assert!(
        run.stdout.contains(oid),
        "redis-entra token does not show the oid {oid}:\n{}",
        run.stdout
    );
    assert_no_secrets(
        "redis-entra token",
        &run.all(),
        &[raw.clone(), header.clone()],
    );
    assert_no_secrets("the emulator", &emulator.stderr(), &[raw, header]);
}

/// The emulator's redis-server works in `redis-entra-backend-*` (its `dir`): take that folder
/// from the process's working directory, or from its command line.
fn backend_dir(pid: u32) -> Option<PathBuf> {
    if let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) {
        if cwd.to_string_lossy().contains("redis-entra-backend-") {
            return Some(cwd);
        }
    }
    let line = cmdline(pid)?;
    let word = line
        .split_whitespace()
        .find(|w| w.contains("redis-entra-backend-"))?;
    let start = word.find('/')?;
    let path = PathBuf::from(&word[start..]);
    path.ancestors()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("redis-entra-backend-"))
        })
        .map(PathBuf::from)
}

/// A `redis-entra SUBSCRIBE` left running while the emulator stops: it holds a gateway
/// connection, and so a backend connection, open across the signal.
struct Subscriber {
    child: std::process::Child,
}

impl Subscriber {
    fn start(emulator: &EmulatorProcess, channel: &str) -> Self {
        let mut cmd = common::clean_command(common::bin(), &emulator.vars);
        cmd.args(["SUBSCRIBE", channel])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("redis-entra SUBSCRIBE starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // redis-cli --raw prints `subscribe`, the channel, then the subscription count.
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let mut seen = Vec::new();
        while seen.last().map(String::as_str) != Some("1") {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => seen.push(line.trim().to_string()),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("redis-entra SUBSCRIBE did not confirm ({e:?}); printed {seen:?}");
                }
            }
        }
        assert_eq!(seen, ["subscribe", channel, "1"]);
        Self { child }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stops the emulator with `sig` and checks that it exits 0 and leaves nothing behind: no
/// redis-server, no backend folder, no folder with the CA and keys.
fn stops_cleanly(sig: &str, with_subscriber: bool) {
    let mut emulator = EmulatorProcess::start(&["--token-lifetime", "30s"]);
    let backends = children_named(emulator.pid, "redis-server");
    assert_eq!(
        backends.len(),
        1,
        "the emulator should have one redis-server child, has {backends:?}"
    );
    let backend = backends[0];
    let dir = backend_dir(backend);
    assert!(
        dir.as_ref().is_some_and(|d| d.exists()),
        "cannot find the backend's redis-entra-backend-* folder (cmdline {:?}, found {dir:?})",
        cmdline(backend)
    );
    // It serves before the signal.
    assert_eq!(cli(&emulator, &["PING"]), "PONG");
    let ca_dir = PathBuf::from(emulator.var("SSL_CERT_FILE"))
        .parent()
        .expect("the CA file is in a folder")
        .to_path_buf();
    let subscriber = with_subscriber.then(|| Subscriber::start(&emulator, "news"));

    let status = emulator.stop_with(sig);
    assert!(
        status.success(),
        "the emulator exited with {status} on SIG{sig}; stderr:\n{}",
        emulator.stderr()
    );
    assert!(
        !alive(backend),
        "redis-server (pid {backend}) is still running after the emulator exited on SIG{sig}"
    );
    let dir = dir.unwrap();
    assert!(
        !dir.exists(),
        "the backend's folder {} is left behind",
        dir.display()
    );
    assert!(
        !ca_dir.exists(),
        "the emulator's folder {} (CA, keys) is left behind",
        ca_dir.display()
    );
    assert!(
        !emulator.stderr().contains("panicked"),
        "the emulator panicked while stopping:\n{}",
        emulator.stderr()
    );
    // It says what it did: the PING above was one connection and one accepted AUTH.
    assert!(
        emulator
            .stderr()
            .lines()
            .any(|l| l.starts_with("redis-entra emulator: stopping: ")
                && l.contains(" AUTHs accepted")
                && !l.contains(" 0 connections")),
        "no summary at shutdown:\n{}",
        emulator.stderr()
    );
    drop(subscriber);
}

#[test]
fn sigterm_stops_the_emulator_and_its_redis_server() {
    stops_cleanly("TERM", false);
}

#[test]
fn sigterm_with_a_client_connected_stops_everything() {
    stops_cleanly("TERM", true);
}

#[test]
fn sigint_stops_the_emulator_and_its_redis_server() {
    stops_cleanly("INT", false);
}

/// Runs the emulator with a bad flag and checks the error: non-zero, names the flag and the
/// value, no panic, and no env file.
fn rejects(flag: &str, value: &str) {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("env");
    let env_file_arg = env_file.to_str().unwrap();
    let run = redis_entra(&["emulator", flag, value, "--env-file", env_file_arg], &[]);
    assert!(
        !run.status.success(),
        "`emulator {flag} {value}` succeeded:\n{}",
        run.all()
    );
    assert!(
        run.stderr.contains(flag) && run.stderr.contains(value),
        "the error for `{flag} {value}` does not name the flag and the value:\n{}",
        run.stderr
    );
    assert!(
        !run.all().contains("panicked") && !run.all().contains("RUST_BACKTRACE"),
        "`emulator {flag} {value}` panicked:\n{}",
        run.all()
    );
    assert!(
        !run.stdout.contains("ready"),
        "`emulator {flag} {value}` printed ready"
    );
    assert!(
        !env_file.exists(),
        "`emulator {flag} {value}` wrote the env file"
    );
}

#[test]
fn bad_flag_values_are_clear_errors() {
    rejects("--token-lifetime", "soon");
    rejects("--identity", "somebody");
}

#[test]
fn every_env_file_kind_alone_drives_the_command() {
    for kind in [
        "service-principal",
        "managed-identity",
        "user-assigned-identity",
        "workload-identity",
        "certificate",
        "access-key",
    ] {
        let emulator = EmulatorProcess::start(&["--token-lifetime", "30s", "--identity", kind]);
        let key = format!("kind:{kind}");
        assert_eq!(cli(&emulator, &["PING"]), "PONG", "{kind}");
        assert_eq!(cli(&emulator, &["SET", &key, kind]), "OK", "{kind}");
        assert_eq!(cli(&emulator, &["GET", &key]), kind, "{kind}");
        let whoami = cli(&emulator, &["ACL", "WHOAMI"]);
        if kind == "access-key" {
            assert_eq!(whoami, "entra-access-key", "{kind}");
        } else {
            // The identity's own ACL user, named by its object id (a GUID), as on Azure.
            let groups: Vec<usize> = whoami.split('-').map(str::len).collect();
            assert_eq!(groups, [8, 4, 4, 4, 12], "{kind}: {whoami}");
        }
    }
}

/// `emulator --help` lists the emulator's own options, not the client's; a client flag is an
/// error there (exit 2) rather than silently ignored.
#[test]
fn emulator_help_lists_only_its_own_options() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_redis-entra"))
        .args(["emulator", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for own in [
        "--token-lifetime",
        "--identity",
        "--redis-server",
        "--max-connections",
    ] {
        assert!(help.contains(own), "{own} missing from:\n{help}");
    }
    for client in [
        "--raw",
        "--json",
        "--cacert",
        "--credential",
        "--scan",
        "--no-token-cache",
    ] {
        assert!(!help.contains(client), "the client's {client} in:\n{help}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_redis-entra"))
        .args(["emulator", "--raw"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
