//! The real Redis behind the gateway: a `redis-server` the emulator spawns (reached over a unix
//! socket) or one it is given. Access policies become real ACL users there, so permission
//! errors come from Redis itself.
//!
//! The users, each with a random password only the gateway knows:
//!
//! - `entra-data-owner`, `entra-data-contributor`, `entra-data-reader`: the built-in policies,
//!   created at start;
//! - `entra-access-key`: clients that authenticated with an access key (`+@all allkeys
//!   allchannels`, as Azure's keys give full access), created at start;
//! - `entra-custom-<name>`: one per custom policy, created or updated with `ACL SETUSER` by
//!   [`Backend::ensure_policy`].

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf,
};
use tokio::net::{TcpStream, UnixStream};
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::directory::AccessPolicy;
use crate::Error;

/// Where the backend listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendAddr {
    /// `host:port` over plain TCP.
    Tcp(String, u16),
    /// A unix socket.
    Unix(PathBuf),
}

impl std::fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(h, p) => write!(f, "redis://{h}:{p}"),
            Self::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

/// A byte stream to the backend.
#[derive(Debug)]
pub enum BackendStream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix socket.
    Unix(UnixStream),
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
}

/// The backend ACL user of access-key connections.
pub const ACCESS_KEY_USER: &str = "entra-access-key";
/// The rules of [`ACCESS_KEY_USER`]: full access, as Azure's access keys give.
pub const ACCESS_KEY_RULES: &str = "+@all allkeys allchannels";

/// A backend ACL user and its password (a secret: `Debug` redacts it).
#[derive(Clone, PartialEq, Eq)]
pub struct BackendUser {
    /// The ACL user name.
    pub name: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for BackendUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendUser")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The backend user of a custom policy.
struct CustomUser {
    password: String,
    /// Whether the rules let a client run `SUBSCRIBE` (on some channel).
    pubsub: bool,
}

/// A backend Redis with one ACL user per access policy.
pub struct Backend {
    addr: BackendAddr,
    admin: Option<(String, String)>,
    policy_passwords: HashMap<AccessPolicy, String>,
    access_key_password: String,
    /// Custom policies' users, by policy name.
    custom: RwLock<HashMap<String, CustomUser>>,
    /// Serialises `ACL SETUSER`s, so that concurrent updates of one policy agree on its
    /// password.
    acl: tokio::sync::Mutex<()>,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("addr", &self.addr)
            .field("spawned", &self.child.is_some())
            .finish_non_exhaustive()
    }
}

fn random_password() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

impl Backend {
    /// Spawns `redis-server` (from `PATH`) listening only on a unix socket in a private
    /// temporary directory, with the default user disabled.
    pub async fn spawn() -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix("redis-entra-backend-")
            .tempdir()
            .map_err(|e| Error::io("creating the backend's directory", e))?;
        let socket = dir.path().join("redis.sock");
        let admin_password = random_password();
        let config = format!(
            "port 0\nunixsocket {sock}\nunixsocketperm 700\nsave \"\"\nappendonly no\ndir {dir}\n\
             daemonize no\nloglevel warning\nlogfile \"\"\nmaxclients 20000\n\
             user default off\nuser emulator-admin on >{admin_password} ~* &* +@all\n",
            sock = socket.display(),
            dir = dir.path().display(),
        );
        let config_path = dir.path().join("redis.conf");
        std::fs::write(&config_path, config)
            .map_err(|e| Error::io("writing the backend's configuration", e))?;
        let child = Command::new("redis-server")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                Error::Backend(format!(
                    "could not run `redis-server` ({e}): install it (Debian: apt-get install redis-server) or pass --backend redis://HOST:PORT"
                ))
            })?;
        let mut backend = Self {
            addr: BackendAddr::Unix(socket),
            admin: Some(("emulator-admin".into(), admin_password)),
            policy_passwords: HashMap::new(),
            access_key_password: random_password(),
            custom: RwLock::new(HashMap::new()),
            acl: tokio::sync::Mutex::new(()),
            child: Some(child),
            _dir: Some(dir),
        };
        backend.wait_ready().await?;
        backend.create_policy_users().await?;
        Ok(backend)
    }

    /// Uses an existing Redis at `url` (`redis://[user:password@]host:port` or
    /// `unix:///path/to/socket`). The credentials given must be allowed to run `ACL SETUSER`.
    pub async fn external(url: &str) -> Result<Self, Error> {
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::Config(format!("--backend {url:?} is not a URL: {e}")))?;
        let addr = match parsed.scheme() {
            "redis" => BackendAddr::Tcp(
                parsed.host_str().unwrap_or("127.0.0.1").to_string(),
                parsed.port().unwrap_or(6379),
            ),
            "unix" | "redis+unix" => BackendAddr::Unix(PathBuf::from(parsed.path())),
            other => {
                return Err(Error::Config(format!(
                    "--backend scheme {other:?} is not supported: use redis://host:port or unix:///path"
                )))
            }
        };
        let admin = parsed.password().map(|p| {
            let user = if parsed.username().is_empty() {
                "default".to_string()
            } else {
                parsed.username().to_string()
            };
            (user, p.to_string())
        });
        let mut backend = Self {
            addr,
            admin,
            policy_passwords: HashMap::new(),
            access_key_password: random_password(),
            custom: RwLock::new(HashMap::new()),
            acl: tokio::sync::Mutex::new(()),
            child: None,
            _dir: None,
        };
        backend.wait_ready().await?;
        backend.create_policy_users().await?;
        Ok(backend)
    }

    /// Where the backend listens.
    pub fn addr(&self) -> &BackendAddr {
        &self.addr
    }

    /// Opens a new unauthenticated stream to the backend.
    pub async fn connect(&self) -> io::Result<BackendStream> {
        match &self.addr {
            BackendAddr::Tcp(h, p) => {
                let s = TcpStream::connect((h.as_str(), *p)).await?;
                s.set_nodelay(true)?;
                Ok(BackendStream::Tcp(s))
            }
            BackendAddr::Unix(path) => Ok(BackendStream::Unix(UnixStream::connect(path).await?)),
        }
    }

    /// The backend ACL user and password that carry a built-in `policy` (`None` for a custom
    /// one: see [`user_for`](Self::user_for)).
    pub fn credentials(&self, policy: &AccessPolicy) -> Option<(&'static str, &str)> {
        let user = match policy {
            AccessPolicy::DataOwner => "entra-data-owner",
            AccessPolicy::DataContributor => "entra-data-contributor",
            AccessPolicy::DataReader => "entra-data-reader",
            _ => return None,
        };
        self.policy_passwords
            .get(policy)
            .map(|pw| (user, pw.as_str()))
    }

    /// The backend user that carries `policy`, built-in or custom; `None` when a custom
    /// policy's user was never created ([`ensure_policy`](Self::ensure_policy)).
    pub fn user_for(&self, policy: &AccessPolicy) -> Option<BackendUser> {
        let password = match policy {
            AccessPolicy::Custom { name, .. } => self
                .custom
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(name)
                .map(|u| u.password.clone())?,
            builtin => self.policy_passwords.get(builtin)?.clone(),
        };
        Some(BackendUser {
            name: policy.backend_user().into_owned(),
            password,
        })
    }

    /// The backend user of access-key connections ([`ACCESS_KEY_USER`]).
    pub fn access_key_user(&self) -> BackendUser {
        BackendUser {
            name: ACCESS_KEY_USER.to_string(),
            password: self.access_key_password.clone(),
        }
    }

    /// Whether `policy` lets a client subscribe (the gateway tracks subscriptions only when
    /// Redis makes them). For a custom policy this is whether its rules allow `SUBSCRIBE` at
    /// all; one limited to some channels counts as allowing it.
    pub fn allows_pubsub(&self, policy: &AccessPolicy) -> bool {
        match policy {
            AccessPolicy::DataReader => false,
            AccessPolicy::Custom { name, .. } => self
                .custom
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(name)
                .is_some_and(|u| u.pubsub),
            _ => true,
        }
    }

    /// Creates or updates the backend user of a custom policy (`ACL SETUSER
    /// entra-custom-<name> reset on >password <rules>`); built-in policies' users exist from
    /// the start, so for them this does nothing.
    ///
    /// An update keeps the user's password, so connections already in stay in and get the new
    /// rules at once. Rules Redis refuses leave the user as it was and give
    /// [`Error::InvalidPolicy`] with Redis' own text.
    pub async fn ensure_policy(&self, policy: &AccessPolicy) -> Result<(), Error> {
        let AccessPolicy::Custom { name, rules } = policy else {
            return Ok(());
        };
        // Built directly, the variant skipped the checks: run them.
        let _ = AccessPolicy::custom(name, rules)?;
        let _guard = self.acl.lock().await;
        let existing = self
            .custom
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .map(|u| u.password.clone());
        let password = existing.unwrap_or_else(random_password);
        let user = policy.backend_user();
        let mut s = self.admin_connection().await?;
        let mut args = vec![
            "ACL".to_string(),
            "SETUSER".into(),
            user.to_string(),
            "reset".into(),
            "on".into(),
            format!(">{password}"),
        ];
        args.extend(rules.split_whitespace().map(String::from));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        match command(&mut s, &refs).await? {
            Reply::Error(text) => return Err(Error::InvalidPolicy(text)),
            Reply::Other(_) => {}
        }
        // Can a client of this policy subscribe at all? (`ACL DRYRUN` exists since Redis 7.)
        let probe = [
            "ACL",
            "DRYRUN",
            user.as_ref(),
            "SUBSCRIBE",
            "entra-emulator-probe",
        ];
        let pubsub = match command(&mut s, &probe).await? {
            Reply::Other(text) => !text.contains("command"),
            // An older Redis: assume it can, as for the built-ins that allow pub/sub.
            Reply::Error(_) => true,
        };
        self.custom
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.clone(), CustomUser { password, pubsub });
        Ok(())
    }

    /// Opens a stream authenticated as the emulator's administrator.
    pub async fn admin_connection(&self) -> Result<BackendStream, Error> {
        let mut s = self
            .connect()
            .await
            .map_err(|e| Error::Backend(format!("connecting to {}: {e}", self.addr)))?;
        if let Some((user, pw)) = &self.admin {
            simple_command(&mut s, &["AUTH", user, pw]).await?;
        }
        Ok(s)
    }

    async fn wait_ready(&self) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let attempt = async {
                let mut s = self.admin_connection().await?;
                simple_command(&mut s, &["PING"]).await
            };
            match attempt.await {
                Ok(_) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(Error::Backend(format!(
                        "redis-server at {} did not become ready in 10 s: {e}",
                        self.addr
                    )))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    async fn create_policy_users(&mut self) -> Result<(), Error> {
        let mut s = self.admin_connection().await?;
        for policy in AccessPolicy::all() {
            let password = random_password();
            let mut args = vec![
                "ACL".to_string(),
                "SETUSER".into(),
                policy.backend_user().into(),
                "reset".into(),
                "on".into(),
                format!(">{password}"),
            ];
            args.extend(policy.acl_rules().split_whitespace().map(String::from));
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            simple_command(&mut s, &refs).await?;
            self.policy_passwords.insert(policy, password);
        }
        let mut args = vec![
            "ACL".to_string(),
            "SETUSER".into(),
            ACCESS_KEY_USER.into(),
            "reset".into(),
            "on".into(),
            format!(">{}", self.access_key_password),
        ];
        args.extend(ACCESS_KEY_RULES.split_whitespace().map(String::from));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        simple_command(&mut s, &refs).await?;
        Ok(())
    }

    /// Stops a spawned `redis-server` (a given backend is left running).
    pub async fn shutdown(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(mut s) = self.admin_connection().await {
                let _ = simple_command(&mut s, &["SHUTDOWN", "NOSAVE"]).await;
            }
            let waited = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
            if waited.is_err() {
                let _ = child.kill().await;
            }
        }
    }
}

/// A reply to an administrative command: an error's text, or anything else as text.
enum Reply {
    Error(String),
    Other(String),
}

/// Sends one command and reads its reply: a simple string, an error, an integer or a bulk
/// string (whose text is returned). The connection's own failures are `Err`.
async fn command(s: &mut BackendStream, args: &[&str]) -> Result<Reply, Error> {
    let mut frame = format!("*{}\r\n", args.len());
    for a in args {
        frame.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(frame.as_bytes())
        .await
        .map_err(|e| Error::Backend(format!("writing to the backend: {e}")))?;
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .await
        .map_err(|e| Error::Backend(format!("reading from the backend: {e}")))?;
    let line = line.trim_end().to_string();
    let mut chars = line.chars();
    match chars.next() {
        Some('-') => Ok(Reply::Error(chars.as_str().to_string())),
        Some('$') => {
            let len: i64 = chars.as_str().parse().map_err(|_| {
                Error::Backend(format!("the backend sent a bad bulk length: {line:?}"))
            })?;
            let Ok(len) = usize::try_from(len) else {
                return Ok(Reply::Other(String::new()));
            };
            let mut body = vec![0u8; len + 2];
            reader
                .read_exact(&mut body)
                .await
                .map_err(|e| Error::Backend(format!("reading from the backend: {e}")))?;
            body.truncate(len);
            Ok(Reply::Other(String::from_utf8_lossy(&body).into_owned()))
        }
        Some(_) => Ok(Reply::Other(line)),
        None => Err(Error::Backend("the backend closed the connection".into())),
    }
}

/// Sends one command and reads a one-line reply (`+…`, `-…`, `:…`); errors become `Err`.
pub(crate) async fn simple_command(s: &mut BackendStream, args: &[&str]) -> Result<String, Error> {
    match command(s, args).await? {
        Reply::Other(text) => Ok(text),
        Reply::Error(text) => Err(Error::Backend(format!(
            "`{}` failed: {text}",
            args.first().copied().unwrap_or("")
        ))),
    }
}
