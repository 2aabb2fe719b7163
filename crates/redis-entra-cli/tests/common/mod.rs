//! Helpers shared by the command's integration tests: run `redis-entra` as a user would, start
//! `redis-entra emulator` as a child process, and wait on processes without sleeping.
#![allow(dead_code)]

pub mod side;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long any single command may take before the test gives up on it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the emulator may take to print `ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the emulator may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The `redis-entra` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_redis-entra")
}

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists")
}

/// A command with an empty environment apart from PATH and HOME, then `vars`.
pub fn clean_command(program: impl AsRef<std::ffi::OsStr>, vars: &[(String, String)]) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for name in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    // A managed identity's IMDS probe goes to a closed local port, never to 169.254.169.254.
    cmd.env("REDIS_ENTRA_IMDS_ADDR", "127.0.0.1:9");
    // The token cache lives in a folder of this test process, never in the user's own.
    cmd.env("XDG_RUNTIME_DIR", runtime_dir());
    cmd.envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    cmd
}

/// A folder private to this test process, given to every command as `XDG_RUNTIME_DIR` (where
/// `redis-entra` keeps its token cache).
pub fn runtime_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let mut perms = std::fs::metadata(dir.path())
            .expect("metadata")
            .permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o700);
        std::fs::set_permissions(dir.path(), perms).expect("chmod 700");
        dir
    })
    .path()
}

/// What a finished command printed, as text.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The exit code (`None` when a signal ended the process).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics with both streams unless the command exited 0; returns the run.
    pub fn ok(self, what: &str) -> Self {
        self.assert_success(what);
        self
    }

    /// Both streams, for messages and for "never printed" checks.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Panics with both streams unless the command exited 0.
    pub fn assert_success(&self, what: &str) -> &Self {
        assert!(
            self.status.success(),
            "{what} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `cmd` to completion (stdin closed, output captured), killing it and panicking if it
/// takes longer than `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Run {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let description = format!("{cmd:?}");
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {description}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel::<std::io::Result<Output>>();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(out)) => Run {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Ok(Err(e)) => panic!("waiting for {description}: {e}"),
        Err(_) => {
            signal(pid, "KILL");
            panic!("{description} did not finish within {timeout:?}");
        }
    }
}

/// Runs `redis-entra ARGS` with exactly `vars` (plus PATH and HOME) in its environment.
pub fn redis_entra(args: &[&str], vars: &[(String, String)]) -> Run {
    let mut cmd = clean_command(bin(), vars);
    cmd.args(args);
    run_with_timeout(cmd, COMMAND_TIMEOUT)
}

/// Sends `SIG` (a name such as `TERM`) to `pid` with kill(1).
pub fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A process's parent pid, command name and state letter, from /proc.
pub fn proc_stat(pid: u32) -> Option<(u32, String, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let mut rest = stat[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((ppid, comm, state))
}

/// The pids of `parent`'s children named `name`.
pub fn children_named(parent: u32, name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            matches!(proc_stat(pid), Some((ppid, comm, _)) if ppid == parent && comm == name)
        })
        .collect()
}

/// A process's command line, arguments joined by spaces.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Whether `pid` is a live process (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((_, _, state)) if state != 'Z')
}

/// `redis-entra emulator`, running as a child process.
pub struct EmulatorProcess {
    child: Option<Child>,
    pub pid: u32,
    /// The env file's variables, in the order written.
    pub vars: Vec<(String, String)>,
    /// The env file's text as written.
    pub env_text: String,
    pub env_file: PathBuf,
    stderr: Arc<Mutex<String>>,
    stdout_rest: mpsc::Receiver<String>,
    // Keeps the env file's folder alive.
    _dir: tempfile::TempDir,
}

impl EmulatorProcess {
    /// Starts `redis-entra emulator --env-file DIR/env ARGS` and waits for its `ready` line;
    /// checks that the env file exists by then.
    pub fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let env_file = dir.path().join("emulator.env");
        let mut cmd = clean_command(bin(), &[]);
        cmd.arg("emulator")
            .arg("--env-file")
            .arg(&env_file)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("redis-entra emulator starts");
        let pid = child.id();

        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let mut pipe = child.stderr.take().expect("stderr is piped");
            let sink = stderr.clone();
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => sink
                            .lock()
                            .unwrap()
                            .push_str(&String::from_utf8_lossy(&buf[..n])),
                    }
                }
            });
        }
        let (tx, lines) = mpsc::channel::<String>();
        {
            let pipe = child.stdout.take().expect("stdout is piped");
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }

        let mut process = Self {
            child: Some(child),
            pid,
            vars: Vec::new(),
            env_text: String::new(),
            env_file: env_file.clone(),
            stderr,
            stdout_rest: lines,
            _dir: dir,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut before_ready = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match process.stdout_rest.recv_timeout(left) {
                Ok(line) if line.trim() == "ready" => break,
                Ok(line) => before_ready.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "the emulator did not print `ready` within {READY_TIMEOUT:?}; stdout so far {before_ready:?}; stderr:\n{}",
                    process.stderr()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = process.wait_exit(STOP_TIMEOUT);
                    panic!(
                        "the emulator exited ({status}) before printing `ready`; stdout {before_ready:?}; stderr:\n{}",
                        process.stderr()
                    )
                }
            }
        }
        // `ready` comes after the env file is in place.
        process.env_text = std::fs::read_to_string(&env_file).unwrap_or_else(|e| {
            panic!(
                "the emulator printed `ready` but {} cannot be read: {e}",
                env_file.display()
            )
        });
        process.vars = redis_entra_emulator::env_file::parse(&process.env_text);
        process
    }

    /// The env file's variables by name.
    pub fn var_map(&self) -> BTreeMap<String, String> {
        self.vars.iter().cloned().collect()
    }

    /// One variable of the env file; panics if it is missing.
    pub fn var(&self, name: &str) -> String {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("the env file has no {name}:\n{}", self.env_text))
    }

    /// What the emulator has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Lines the emulator printed on stdout after `ready`, as far as printed now.
    pub fn stdout_after_ready(&self) -> Vec<String> {
        self.stdout_rest.try_iter().collect()
    }

    /// Waits for the emulator to exit, killing it and panicking after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .expect("the emulator has not been waited for");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(timeout) {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("waiting for the emulator: {e}"),
            Err(_) => {
                signal(self.pid, "KILL");
                panic!(
                    "the emulator did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
        }
    }

    /// Sends `SIG` (`TERM`, `INT`) and waits for the exit.
    pub fn stop_with(&mut self, sig: &str) -> ExitStatus {
        assert!(signal(self.pid, sig), "kill -{sig} {} failed", self.pid);
        self.wait_exit(STOP_TIMEOUT)
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        // Stop it the way a user does, so it stops its redis-server too; kill it if it hangs.
        if let Some(mut child) = self.child.take() {
            signal(self.pid, "TERM");
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                let _ = tx.send(child.wait());
            });
            if rx.recv_timeout(STOP_TIMEOUT).is_err() {
                signal(self.pid, "KILL");
            }
        }
    }
}

/// Asserts that `text` holds nothing shaped like a JWT (`eyJ…`) and none of `secrets`.
pub fn assert_no_secrets(what: &str, text: &str, secrets: &[String]) {
    assert!(
        !text.contains("eyJ"),
        "{what} printed something shaped like a token (eyJ…):\n{text}"
    );
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        assert!(
            !text.contains(secret.as_str()),
            "{what} printed a secret:\n{text}"
        );
    }
}

/// The claims of a JWT, decoded from its base64url payload.
pub fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has 3 dot-separated parts: {token:?}");
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1].trim_end_matches('='))
        .expect("the JWT payload is base64url");
    serde_json::from_slice(&payload).expect("the JWT payload is JSON")
}

/// A local Azure in this process, with its own runtime (for tests that run the binary against
/// an emulator they can also reach into: unassign a policy, read counters).
pub struct Cache {
    rt: tokio::runtime::Runtime,
    emulator: Option<redis_entra_emulator::Emulator>,
}

impl Cache {
    /// An emulator whose tokens live an hour.
    pub fn start() -> Self {
        Self::with_tokens_living(Duration::from_secs(3600))
    }

    /// An emulator whose tokens live `lifetime`.
    pub fn with_tokens_living(lifetime: Duration) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let emulator = rt
            .block_on(redis_entra_emulator::Emulator::start(
                redis_entra_emulator::EmulatorConfig {
                    token_lifetime: lifetime,
                    ..Default::default()
                },
            ))
            .expect("the emulator starts (is redis-server installed? scripts/setup installs it)");
        Self {
            rt,
            emulator: Some(emulator),
        }
    }

    /// The running emulator.
    pub fn emulator(&self) -> &redis_entra_emulator::Emulator {
        self.emulator.as_ref().expect("running")
    }

    /// The emulator's variables, with `changes` applied (`None` removes a variable).
    pub fn env_with(&self, changes: &[(&str, Option<&str>)]) -> Vec<(String, String)> {
        let mut vars = self.emulator().env();
        for (name, value) in changes {
            vars.retain(|(k, _)| k != name);
            if let Some(v) = value {
                vars.push((name.to_string(), v.to_string()));
            }
        }
        vars
    }

    /// The service principal's client secret.
    pub fn secret(&self) -> String {
        self.emulator()
            .service_principal()
            .secret
            .clone()
            .unwrap_or_default()
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        if let Some(emulator) = self.emulator.take() {
            self.rt.block_on(emulator.shutdown());
        }
    }
}
