//! The real Redis behind the gateway: a `redis-server` the emulator spawns (reached over a unix
//! socket), one it is given, or one node of a [cluster](crate::cluster) the emulator spawns.
//! Access policies become real ACL users there, so permission errors come from Redis itself.
//! Every node of a cluster holds the same users with the same passwords, and each change
//! ([`Backend::ensure_policy`]) is made on every node.
//!
//! The users, each with a random password only the gateway knows:
//!
//! - `entra-data-owner`, `entra-data-contributor`, `entra-data-reader`: the built-in policies,
//!   created at start;
//! - `entra-access-key`: clients that authenticated with an access key (`+@all allkeys
//!   allchannels`, as Azure's keys give full access), created at start;
//! - `entra-custom-<name>`: one per custom policy, created or updated with `ACL SETUSER` by
//!   [`Backend::ensure_policy`] (which checks the rules with Redis);
//! - `<object id>`: one per identity, with its policy's rules, the user the gateway substitutes
//!   (as on Azure, `ACL WHOAMI`, `CLIENT LIST` and `NOPERM` name the object id): created at the
//!   identity's first `AUTH` or assignment ([`Backend::ensure_identity`]), updated in place
//!   when its assignment or custom policy changes (Redis applies ACL changes to authenticated
//!   connections at once), deleted when it is revoked ([`Backend::remove_identity`]: Redis
//!   closes the connections of a deleted user).
//!
//! Every user also loses Azure's unsupported commands
//! ([`acl_removals`](crate::unsupported::acl_removals)), so scripts cannot run them
//! either. With `--backend`, the emulator refuses a server whose `default` user lets
//! unauthenticated connections run commands.
//!
//! A spawned standalone backend keeps its users in an ACL file (`aclfile`, written with
//! `ACL SAVE` after each change), as cluster nodes do, so that [`Backend::restart`] brings it
//! back with every user, custom policies' included, before it accepts its first connection:
//! Azure keeps a cache's access policies across a node restart.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
    ReadBuf,
};
use tokio::net::{TcpStream, UnixStream};
use tokio::process::Child;
use uuid::Uuid;

use crate::directory::AccessPolicy;
use crate::server_program::ServerProgram;
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
    /// Its ACL rules, to create it again on a node that lost it.
    rules: String,
    /// Whether the rules let a client run `SUBSCRIBE` (on some channel).
    pubsub: bool,
}

/// An identity's own backend user, named by its object id (as on Azure, so that `ACL WHOAMI`,
/// `CLIENT LIST` and `NOPERM` name the object id).
#[derive(Clone)]
struct IdentityUser {
    password: String,
    /// The name of the policy whose rules it has.
    policy: String,
    /// Those rules, to compare with the policy's current ones and to create it again.
    rules: String,
}

/// The backend's commands as `COMMAND` lists them: each name (lower case) with its arity
/// (Redis' convention: `n` exactly `n` arguments, `-n` at least `n`, the name included) and,
/// for a container command, its subcommands' arities.
#[derive(Debug, Default)]
pub struct CommandArities {
    commands: HashMap<String, (i64, HashMap<String, i64>)>,
    /// Whether the server answers an unauthenticated client's unknown command or wrong
    /// argument count with that error (Redis 7.0) rather than `NOAUTH` (Valkey 8 and later):
    /// read from the server itself.
    checks_commands_before_auth: bool,
}

impl CommandArities {
    /// Whether the server rejects an unknown command or a wrong argument count before it
    /// checks authentication (else it answers `NOAUTH` to everything first).
    pub fn checks_commands_before_auth(&self) -> bool {
        self.checks_commands_before_auth
    }

    /// The arity of `name` (any case), and its subcommands' (empty unless a container).
    pub fn get(&self, name: &[u8]) -> Option<(i64, &HashMap<String, i64>)> {
        let name = std::str::from_utf8(name).ok()?.to_ascii_lowercase();
        self.commands.get(&name).map(|(a, subs)| (*a, subs))
    }

    fn from_reply(reply: &Value) -> Self {
        let mut commands = HashMap::new();
        let Value::Array(entries) = reply else {
            return Self {
                commands,
                checks_commands_before_auth: true,
            };
        };
        let entry = |v: &Value| -> Option<(String, i64)> {
            let Value::Array(fields) = v else { return None };
            let name = fields.first()?.text()?.to_ascii_lowercase();
            let Value::Int(arity) = fields.get(1)? else {
                return None;
            };
            Some((name, *arity))
        };
        for v in entries {
            let Some((name, arity)) = entry(v) else {
                continue;
            };
            let mut subs = HashMap::new();
            if let Value::Array(fields) = v {
                if let Some(Value::Array(list)) = fields.get(9) {
                    for sub in list {
                        if let Some((full, arity)) = entry(sub) {
                            // `config|get` → `get`
                            let short = full.rsplit('|').next().unwrap_or(&full).to_string();
                            subs.insert(short, arity);
                        }
                    }
                }
            }
            commands.insert(name, (arity, subs));
        }
        Self {
            commands,
            checks_commands_before_auth: true,
        }
    }
}

/// The ACL users of a backend and the passwords only the gateway knows, shared by every node
/// of that backend: a standalone `redis-server` is one node, a cluster has several, each
/// holding the same users with the same passwords.
struct Users {
    /// The administrator's user and password (`None`: the backend needs no `AUTH`).
    admin: Option<(String, String)>,
    policy_passwords: HashMap<AccessPolicy, String>,
    access_key_password: String,
    /// Custom policies' users, by policy name.
    custom: RwLock<HashMap<String, CustomUser>>,
    /// Identities' users, by object id.
    identities: RwLock<HashMap<String, IdentityUser>>,
    /// The server's commands and their arities, read once (`COMMAND`).
    commands: tokio::sync::OnceCell<Arc<CommandArities>>,
    /// Serialises ACL changes (and cluster node restarts), so that concurrent updates of one
    /// policy agree on its password and every node gets every change.
    acl: tokio::sync::Mutex<()>,
    /// Every node the users live on.
    nodes: Vec<BackendAddr>,
    /// Whether each change is written to the node's ACL file with `ACL SAVE` (cluster nodes,
    /// which reload their users from it when they restart).
    persist: bool,
}

impl Users {
    fn new(admin: Option<(String, String)>, nodes: Vec<BackendAddr>, persist: bool) -> Self {
        Self {
            admin,
            policy_passwords: AccessPolicy::all()
                .into_iter()
                .map(|p| (p, random_password()))
                .collect(),
            access_key_password: random_password(),
            custom: RwLock::new(HashMap::new()),
            identities: RwLock::new(HashMap::new()),
            commands: tokio::sync::OnceCell::new(),
            acl: tokio::sync::Mutex::new(()),
            nodes,
            persist,
        }
    }

    /// An administrator's connection to one node.
    async fn admin_connection(&self, addr: &BackendAddr) -> Result<BackendStream, Error> {
        let mut s = connect_to(addr)
            .await
            .map_err(|e| Error::Backend(format!("connecting to {addr}: {e}")))?;
        if let Some((user, pw)) = &self.admin {
            simple_command(&mut s, &["AUTH", user, pw]).await?;
        }
        Ok(s)
    }

    /// The ACL setup every node gets: the built-in policies' users and the access-key user
    /// (`ACL SETUSER <user> reset on >password <rules>`), then `ACL SAVE` on a persisted node.
    async fn install(&self, addr: &BackendAddr) -> Result<(), Error> {
        let mut s = self.admin_connection(addr).await?;
        for policy in AccessPolicy::all() {
            let password = self.policy_passwords.get(&policy).ok_or_else(|| {
                Error::Backend(format!("no password for the {} user", policy.name()))
            })?;
            let args = setuser_args(&policy.backend_user(), password, policy.acl_rules());
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            simple_command(&mut s, &refs).await?;
        }
        let args = setuser_args(ACCESS_KEY_USER, &self.access_key_password, ACCESS_KEY_RULES);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        simple_command(&mut s, &refs).await?;
        if self.persist {
            simple_command(&mut s, &["ACL", "SAVE"]).await?;
        }
        Ok(())
    }
}

/// `ACL SETUSER <user> reset on >password <rules…>`.
fn setuser_args(user: &str, password: &str, rules: &str) -> Vec<String> {
    let mut args = vec![
        "ACL".to_string(),
        "SETUSER".into(),
        user.to_string(),
        "reset".into(),
        "on".into(),
        format!(">{password}"),
    ];
    args.extend(rules.split_whitespace().map(String::from));
    // Azure's unsupported commands, also for scripts (`redis.call`).
    args.extend(crate::unsupported::acl_removals(
        crate::unsupported::Profile::AzureCacheForRedis,
    ));
    args
}

/// The name of the emulator's administrator user on a spawned backend.
pub(crate) const ADMIN_USER: &str = "emulator-admin";

/// The users a spawned node starts with, as `redis.conf` or ACL-file lines: the default user
/// disabled and the emulator's administrator. The policies' users come after
/// (`Users::install`).
pub(crate) fn base_acl(admin_password: &str) -> String {
    format!("user default off\nuser {ADMIN_USER} on >{admin_password} ~* &* +@all\n")
}

/// Opens a new unauthenticated stream to `addr`.
async fn connect_to(addr: &BackendAddr) -> io::Result<BackendStream> {
    match addr {
        BackendAddr::Tcp(h, p) => {
            let s = TcpStream::connect((h.as_str(), *p)).await?;
            s.set_nodelay(true)?;
            Ok(BackendStream::Tcp(s))
        }
        BackendAddr::Unix(path) => Ok(BackendStream::Unix(UnixStream::connect(path).await?)),
    }
}

/// A backend Redis with one ACL user per access policy: a standalone server, or one node of a
/// [cluster](crate::cluster) (all the nodes of a cluster share their users).
pub struct Backend {
    addr: BackendAddr,
    users: Arc<Users>,
    child: tokio::sync::Mutex<Option<Child>>,
    spawned: bool,
    /// The configuration file of a spawned standalone server (to start it again).
    config: Option<PathBuf>,
    /// The binary of a spawned server.
    program: ServerProgram,
    _dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("addr", &self.addr)
            .field("spawned", &self.spawned)
            .field("nodes", &self.users.nodes.len())
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
        Self::spawn_with(&ServerProgram::default()).await
    }

    /// As [`spawn`](Self::spawn), running `program` (a `redis-server` or `valkey-server`).
    pub async fn spawn_with(program: &ServerProgram) -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix("redis-entra-backend-")
            .tempdir()
            .map_err(|e| Error::io("creating the backend's directory", e))?;
        let socket = dir.path().join("redis.sock");
        let admin_password = random_password();
        // The users live in an ACL file, so that a restart keeps them.
        let acl_file = dir.path().join("users.acl");
        std::fs::write(&acl_file, base_acl(&admin_password))
            .map_err(|e| Error::io("writing the backend's ACL file", e))?;
        let config = format!(
            "port 0\nunixsocket {sock}\nunixsocketperm 700\nsave \"\"\nappendonly no\ndir {dir}\n\
             daemonize no\nloglevel warning\nlogfile \"\"\nmaxclients 20000\naclfile \"{acl}\"\n",
            sock = socket.display(),
            dir = dir.path().display(),
            acl = acl_file.display(),
        );
        let config_path = dir.path().join("redis.conf");
        std::fs::write(&config_path, config)
            .map_err(|e| Error::io("writing the backend's configuration", e))?;
        let child = program.spawn(&config_path)?;
        let addr = BackendAddr::Unix(socket);
        let backend = Self {
            users: Arc::new(Users::new(
                Some((ADMIN_USER.into(), admin_password)),
                vec![addr.clone()],
                true,
            )),
            addr,
            child: tokio::sync::Mutex::new(Some(child)),
            spawned: true,
            config: Some(config_path),
            program: program.clone(),
            _dir: Some(dir),
        };
        backend.wait_ready().await?;
        backend.install_users().await?;
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
        let backend = Self {
            users: Arc::new(Users::new(admin, vec![addr.clone()], false)),
            addr,
            child: tokio::sync::Mutex::new(None),
            spawned: false,
            config: None,
            program: ServerProgram::default(),
            _dir: None,
        };
        backend.wait_ready().await?;
        backend.check_default_user_off().await?;
        backend.install_users().await?;
        Ok(backend)
    }

    /// Refuses a backend on which an unauthenticated connection can run commands (its
    /// `default` user on without a password): `RESET`, or a substituted `AUTH` that fails,
    /// would leave a client there with `default`'s rights.
    async fn check_default_user_off(&self) -> Result<(), Error> {
        let mut s = connect_to(&self.addr)
            .await
            .map_err(|e| Error::io("connecting to the backend", e))?;
        match request(&mut s, &["PING"]).await? {
            Value::Error(text) if text.starts_with("NOAUTH") => Ok(()),
            _ => Err(Error::Config(format!(
                "the backend {} lets unauthenticated connections run commands: its `default` \
                 user is on without a password. Turn it off (`ACL SETUSER default off`, or \
                 `user default off` in its ACL file) and give the emulator an administrator \
                 user in the URL (redis://admin:password@host:port)",
                self.addr
            ))),
        }
    }

    /// The backends of a group of nodes that share their ACL users (a cluster), one per
    /// address, in order; nothing is created on the nodes yet (see
    /// [`install_users`](Self::install_users)). `persist`: `ACL SAVE` after each change.
    pub(crate) fn group(
        addrs: &[BackendAddr],
        admin: (String, String),
        persist: bool,
    ) -> Vec<Backend> {
        let users = Arc::new(Users::new(Some(admin), addrs.to_vec(), persist));
        addrs
            .iter()
            .map(|addr| Backend {
                addr: addr.clone(),
                users: users.clone(),
                child: tokio::sync::Mutex::new(None),
                spawned: false,
                config: None,
                program: ServerProgram::default(),
                _dir: None,
            })
            .collect()
    }

    /// Creates the built-in policies' users and the access-key user on every node.
    pub(crate) async fn install_users(&self) -> Result<(), Error> {
        let _guard = self.users.acl.lock().await;
        for addr in &self.users.nodes {
            self.users.install(addr).await?;
        }
        Ok(())
    }

    /// Holds off ACL changes (e.g. while a cluster node restarts, so that it misses none).
    pub(crate) async fn lock_acl(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.users.acl.lock().await
    }

    /// Where the backend listens.
    pub fn addr(&self) -> &BackendAddr {
        &self.addr
    }

    /// Every node that holds this backend's users: this backend alone, or each node of its
    /// cluster.
    pub fn nodes(&self) -> &[BackendAddr] {
        &self.users.nodes
    }

    /// Opens a new unauthenticated stream to the backend.
    pub async fn connect(&self) -> io::Result<BackendStream> {
        connect_to(&self.addr).await
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
        self.users
            .policy_passwords
            .get(policy)
            .map(|pw| (user, pw.as_str()))
    }

    /// The backend user that carries `policy`, built-in or custom; `None` when a custom
    /// policy's user was never created ([`ensure_policy`](Self::ensure_policy)).
    pub fn user_for(&self, policy: &AccessPolicy) -> Option<BackendUser> {
        let password = match policy {
            AccessPolicy::Custom { name, .. } => self
                .users
                .custom
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(name)
                .map(|u| u.password.clone())?,
            builtin => self.users.policy_passwords.get(builtin)?.clone(),
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
            password: self.users.access_key_password.clone(),
        }
    }

    /// Whether `policy` lets a client subscribe (the gateway tracks subscriptions only when
    /// Redis makes them). For a custom policy this is whether its rules allow `SUBSCRIBE` at
    /// all; one limited to some channels counts as allowing it.
    pub fn allows_pubsub(&self, policy: &AccessPolicy) -> bool {
        match policy {
            AccessPolicy::DataReader => false,
            AccessPolicy::Custom { name, .. } => self
                .users
                .custom
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(name)
                .is_some_and(|u| u.pubsub),
            _ => true,
        }
    }

    /// Creates or updates the backend user of a custom policy (`ACL SETUSER
    /// entra-custom-<name> reset on >password <rules>`) on every node (each node of a
    /// cluster); built-in policies' users exist from the start, so for them this does nothing.
    ///
    /// An update keeps the user's password, so connections already in stay in and get the new
    /// rules at once. Rules Redis refuses leave the user as it was and give
    /// [`Error::InvalidPolicy`] with Redis' own text (the first node is asked first, so a
    /// refusal changes no node).
    pub async fn ensure_policy(&self, policy: &AccessPolicy) -> Result<(), Error> {
        let AccessPolicy::Custom { name, rules } = policy else {
            return Ok(());
        };
        // Built directly, the variant skipped the checks: run them.
        let _ = AccessPolicy::custom(name, rules)?;
        let _guard = self.users.acl.lock().await;
        let existing = self
            .users
            .custom
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .map(|u| u.password.clone());
        let password = existing.unwrap_or_else(random_password);
        let user = policy.backend_user();
        let args = setuser_args(&user, &password, rules);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut pubsub = true;
        for (i, addr) in self.users.nodes.iter().enumerate() {
            let mut s = self.users.admin_connection(addr).await?;
            match command(&mut s, &refs).await? {
                Reply::Error(text) if i == 0 => return Err(Error::InvalidPolicy(text)),
                Reply::Error(text) => {
                    return Err(Error::Backend(format!(
                        "node {addr} refused the rules the first node took: {text}"
                    )))
                }
                Reply::Other(_) => {}
            }
            if self.users.persist {
                simple_command(&mut s, &["ACL", "SAVE"]).await?;
            }
            if i == 0 {
                // Can a client of this policy subscribe at all? (`ACL DRYRUN` exists since
                // Redis 7.)
                let probe = [
                    "ACL",
                    "DRYRUN",
                    user.as_ref(),
                    "SUBSCRIBE",
                    "entra-emulator-probe",
                ];
                pubsub = match command(&mut s, &probe).await? {
                    Reply::Other(text) => !text.contains("command"),
                    // An older Redis: assume it can, as for the built-ins that allow pub/sub.
                    Reply::Error(_) => true,
                };
            }
        }
        self.users
            .custom
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                name.clone(),
                CustomUser {
                    password,
                    rules: rules.clone(),
                    pubsub,
                },
            );
        Ok(())
    }

    /// The backend user of the identity `oid`, if it exists with `policy`'s current rules
    /// (else [`ensure_identity`](Self::ensure_identity) creates or updates it).
    pub fn identity_user(&self, oid: &str, policy: &AccessPolicy) -> Option<BackendUser> {
        let identities = self
            .users
            .identities
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let user = identities.get(oid)?;
        (user.rules == policy.acl_rules()).then(|| BackendUser {
            name: oid.to_string(),
            password: user.password.clone(),
        })
    }

    /// Creates or updates, on every node, the identity's own backend user, named by its object
    /// id, with `policy`'s rules (`ACL SETUSER <oid> reset on >password <rules>`). An update
    /// keeps the password, so the identity's live connections stay in and follow the new rules
    /// at once (Redis applies ACL changes to authenticated connections), as Azure Managed Redis
    /// documents for an assignment update.
    pub async fn ensure_identity(
        &self,
        oid: &str,
        policy: &AccessPolicy,
    ) -> Result<BackendUser, Error> {
        if uuid::Uuid::parse_str(oid).is_err() {
            return Err(Error::Backend(format!("{oid:?} is not an object id")));
        }
        let _guard = self.users.acl.lock().await;
        if let Some(user) = self.identity_user(oid, policy) {
            return Ok(user);
        }
        let password = self
            .users
            .identities
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(oid)
            .map(|u| u.password.clone())
            .unwrap_or_else(random_password);
        let rules = policy.acl_rules().to_string();
        self.set_on_every_node(oid, &password, &rules).await?;
        self.users
            .identities
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                oid.to_string(),
                IdentityUser {
                    password: password.clone(),
                    policy: policy.name().to_string(),
                    rules,
                },
            );
        Ok(BackendUser {
            name: oid.to_string(),
            password,
        })
    }

    /// Gives every identity that holds `policy` (by name) the policy's current rules, in
    /// place (after a custom policy is redefined).
    pub async fn update_identities(&self, policy: &AccessPolicy) -> Result<(), Error> {
        let holders: Vec<String> = self
            .users
            .identities
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, u)| u.policy == policy.name() && u.rules != policy.acl_rules())
            .map(|(oid, _)| oid.clone())
            .collect();
        for oid in holders {
            self.ensure_identity(&oid, policy).await?;
        }
        Ok(())
    }

    /// Deletes the identity's backend user on every node (`ACL DELUSER`): Redis closes the
    /// connections authenticated as it, so a removed assignment takes effect at once.
    pub async fn remove_identity(&self, oid: &str) -> Result<(), Error> {
        let _guard = self.users.acl.lock().await;
        let removed = self
            .users
            .identities
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(oid);
        if removed.is_none() {
            return Ok(());
        }
        for addr in &self.users.nodes {
            let mut s = self.users.admin_connection(addr).await?;
            command(&mut s, &["ACL", "DELUSER", oid]).await?;
            if self.users.persist {
                simple_command(&mut s, &["ACL", "SAVE"]).await?;
            }
        }
        Ok(())
    }

    /// `ACL SETUSER <user> reset on >password <rules>` on every node (the first one first, so
    /// that rules Redis refuses change no node). Called with the ACL lock held.
    async fn set_on_every_node(
        &self,
        user: &str,
        password: &str,
        rules: &str,
    ) -> Result<(), Error> {
        let args = setuser_args(user, password, rules);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        for (i, addr) in self.users.nodes.iter().enumerate() {
            let mut s = self.users.admin_connection(addr).await?;
            match command(&mut s, &refs).await? {
                Reply::Error(text) if i == 0 => return Err(Error::InvalidPolicy(text)),
                Reply::Error(text) => {
                    return Err(Error::Backend(format!(
                        "node {addr} refused the rules the first node took: {text}"
                    )))
                }
                Reply::Other(_) => {}
            }
            if self.users.persist {
                simple_command(&mut s, &["ACL", "SAVE"]).await?;
            }
        }
        Ok(())
    }

    /// Closes every client connection the gateway made, on every node: `CLIENT KILL USER
    /// <name>` for each user the emulator manages (the access-key user, the built-in and custom
    /// policies' users, every identity's), so that a backend the emulator fronts
    /// (`--backend`) keeps its other clients. The gateway then closes its clients' connections.
    /// Returns how many connections Redis closed.
    pub async fn close_client_connections(&self) -> Result<u64, Error> {
        let _guard = self.users.acl.lock().await;
        let mut names: Vec<String> = vec![ACCESS_KEY_USER.to_string()];
        names.extend(
            AccessPolicy::all()
                .iter()
                .map(|p| p.backend_user().into_owned()),
        );
        names.extend(
            self.users
                .custom
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .keys()
                .map(|name| format!("entra-custom-{name}")),
        );
        names.extend(
            self.users
                .identities
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .keys()
                .cloned(),
        );
        let mut closed = 0;
        for addr in &self.users.nodes {
            let mut s = self.users.admin_connection(addr).await?;
            for name in &names {
                // A user that is gone (`ERR No such user`) has no connections to close.
                if let Reply::Other(n) = command(&mut s, &["CLIENT", "KILL", "USER", name]).await? {
                    closed += n.parse::<u64>().unwrap_or(0);
                }
            }
        }
        Ok(closed)
    }

    /// The server's commands and arities (`COMMAND`, read at the first call), with which the
    /// gateway answers an unauthenticated client's unknown command or wrong argument count as
    /// the server does: before `NOAUTH` (Redis 7.0), or not at all (Valkey 8 and later answer
    /// `NOAUTH` first), as a probe of the server shows.
    pub async fn command_arities(&self) -> Result<Arc<CommandArities>, Error> {
        self.users
            .commands
            .get_or_try_init(|| async {
                let mut s = self.admin_connection().await?;
                let reply = request(&mut s, &["COMMAND"]).await?;
                let mut table = CommandArities::from_reply(&reply);
                // What does the server tell a client that has not authenticated about a command
                // it does not have? Its own words decide the gateway's.
                let mut anonymous = connect_to(&self.addr)
                    .await
                    .map_err(|e| Error::io("connecting to the backend", e))?;
                let probe = request(&mut anonymous, &["REDIS-ENTRA-NO-SUCH-COMMAND"]).await?;
                table.checks_commands_before_auth =
                    !matches!(&probe, Value::Error(text) if text.starts_with("NOAUTH"));
                Ok::<_, Error>(Arc::new(table))
            })
            .await
            .cloned()
    }

    /// Whether the backend answers the administrator's `PING`.
    pub async fn ping(&self) -> Result<(), Error> {
        let mut s = self.admin_connection().await?;
        simple_command(&mut s, &["PING"]).await.map(drop)
    }

    /// Opens a stream authenticated as the emulator's administrator.
    pub async fn admin_connection(&self) -> Result<BackendStream, Error> {
        self.users.admin_connection(&self.addr).await
    }

    /// Waits (up to 10 s) until the backend answers the administrator's `PING`.
    pub(crate) async fn wait_ready(&self) -> Result<(), Error> {
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

    /// Restarts a spawned standalone `redis-server`, as a cache node restarts: `SHUTDOWN SAVE`
    /// (every client connection is cut, so the gateway closes its clients' connections; the
    /// data is kept in an RDB snapshot), `down_for` with no server at all (new gateway
    /// connections get `-ERR the emulator's Redis backend is unreachable` after their `AUTH`),
    /// then the same configuration on the same unix socket. Returns once it answers again, with
    /// every ACL user it had: the built-in policies', the access-key user and each custom
    /// policy's, with the same passwords (they are loaded from its ACL file before the first
    /// connection, and checked, and created again if missing, before this returns), so clients
    /// that reconnect authenticate as before. ACL changes wait until the restart is over.
    ///
    /// A backend the emulator did not spawn (`--backend`) or a cluster node is an error that
    /// says so; restart cluster nodes with
    /// [`Cluster::restart_node`](crate::cluster::Cluster::restart_node).
    pub async fn restart(&self, down_for: Duration) -> Result<(), Error> {
        let (true, Some(config), [_]) = (self.spawned, &self.config, self.users.nodes.as_slice())
        else {
            return Err(Error::Config(
                "only a redis-server the emulator spawned in standalone mode can be restarted \
                 (not a --backend one; in cluster mode restart a node instead)"
                    .into(),
            ));
        };
        let _acl = self.users.acl.lock().await;
        let mut slot = self.child.lock().await;
        if let Some(mut child) = slot.take() {
            if let Ok(mut conn) = self.admin_connection().await {
                // On success Redis exits without a reply.
                if let Ok(Value::Error(text)) = request(&mut conn, &["SHUTDOWN", "SAVE"]).await {
                    *slot = Some(child);
                    return Err(Error::Backend(format!(
                        "the backend refused to shut down: {text}"
                    )));
                }
            }
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
        if !down_for.is_zero() {
            tokio::time::sleep(down_for).await;
        }
        *slot = Some(self.program.spawn(config)?);
        drop(slot);
        self.wait_ready().await?;
        self.reinstall_missing_users().await?;
        Ok(())
    }

    /// After a restart: checks that every user is back and creates again (`ACL SETUSER`, same
    /// password) any that is not. Called with the ACL lock held.
    async fn reinstall_missing_users(&self) -> Result<(), Error> {
        let mut s = self.admin_connection().await?;
        let present = match request(&mut s, &["ACL", "USERS"]).await? {
            Value::Array(items) => items.iter().filter_map(Value::text).collect::<Vec<_>>(),
            other => {
                return Err(Error::Backend(format!(
                    "`ACL USERS` after the restart answered {other:?}"
                )))
            }
        };
        let builtins_back = AccessPolicy::all()
            .iter()
            .map(|p| p.backend_user())
            .chain([ACCESS_KEY_USER.into()])
            .all(|u| present.iter().any(|p| *p == u));
        if !builtins_back {
            tracing::warn!(
                "the backend lost its built-in users in the restart; creating them again"
            );
            self.users.install(&self.addr).await?;
        }
        let custom: Vec<(String, String, String)> = self
            .users
            .custom
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, u)| (name.clone(), u.password.clone(), u.rules.clone()))
            .collect();
        let identities: Vec<(String, String, String)> = self
            .users
            .identities
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(oid, u)| (oid.clone(), u.password.clone(), u.rules.clone()))
            .collect();
        let custom = custom
            .into_iter()
            .map(|(name, password, rules)| (format!("entra-custom-{name}"), password, rules))
            .chain(identities);
        for (user, password, rules) in custom {
            if present.contains(&user) {
                continue;
            }
            tracing::warn!(
                user,
                "the backend lost a custom policy's user in the restart; creating it again"
            );
            let args = setuser_args(&user, &password, &rules);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            simple_command(&mut s, &refs).await?;
        }
        Ok(())
    }

    /// Stops a spawned `redis-server` (a given backend is left running; a cluster's nodes are
    /// stopped by their [`Cluster`](crate::cluster::Cluster)).
    /// Works through a shared reference, so it stops the server even while sessions still hold
    /// the backend.
    pub async fn shutdown(&self) {
        let taken = self.child.lock().await.take();
        if let Some(mut child) = taken {
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

/// A RESP2 reply, as administrative commands get them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// `+…`
    Status(String),
    /// `-…`
    Error(String),
    /// `:…`
    Int(i64),
    /// `$…`
    Bulk(Vec<u8>),
    /// `$-1` or `*-1`.
    Nil,
    /// `*…`
    Array(Vec<Value>),
}

impl Value {
    /// A bulk or status reply as text.
    pub(crate) fn text(&self) -> Option<String> {
        match self {
            Self::Status(s) => Some(s.clone()),
            Self::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// Reads one RESP2 reply.
fn read_value<'a, R>(
    r: &'a mut R,
) -> Pin<Box<dyn std::future::Future<Output = Result<Value, Error>> + Send + 'a>>
where
    R: AsyncBufRead + Unpin + Send,
{
    Box::pin(async move {
        let read_err = |e: io::Error| Error::Backend(format!("reading from the backend: {e}"));
        let mut line = String::new();
        if r.read_line(&mut line).await.map_err(read_err)? == 0 {
            return Err(Error::Backend("the backend closed the connection".into()));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        let bad = || Error::Backend(format!("the backend sent an unexpected reply: {line:?}"));
        let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
        match kind {
            "+" => Ok(Value::Status(rest.to_string())),
            "-" => Ok(Value::Error(rest.to_string())),
            ":" => rest.parse().map(Value::Int).map_err(|_| bad()),
            "$" => {
                let len: i64 = rest.parse().map_err(|_| bad())?;
                let Ok(len) = usize::try_from(len) else {
                    return Ok(Value::Nil);
                };
                let mut body = vec![0u8; len + 2];
                r.read_exact(&mut body).await.map_err(read_err)?;
                body.truncate(len);
                Ok(Value::Bulk(body))
            }
            "*" => {
                let len: i64 = rest.parse().map_err(|_| bad())?;
                let Ok(len) = usize::try_from(len) else {
                    return Ok(Value::Nil);
                };
                let mut items = Vec::with_capacity(len.min(1024));
                for _ in 0..len {
                    items.push(read_value(r).await?);
                }
                Ok(Value::Array(items))
            }
            _ => Err(bad()),
        }
    })
}

/// Sends one command (binary-safe arguments) and reads its reply. The connection's own
/// failures are `Err`; an error reply is `Ok(Value::Error(..))`.
pub(crate) async fn request<A: AsRef<[u8]>>(
    s: &mut BackendStream,
    args: &[A],
) -> Result<Value, Error> {
    let mut frame = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_ref();
        frame.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        frame.extend_from_slice(a);
        frame.extend_from_slice(b"\r\n");
    }
    s.write_all(&frame)
        .await
        .map_err(|e| Error::Backend(format!("writing to the backend: {e}")))?;
    // Administrative connections have one request in flight, so the reader buffers nothing
    // past its reply.
    let mut reader = BufReader::new(s);
    read_value(&mut reader).await
}

/// Sends one command and reads its reply: a simple string, an error, an integer or a bulk
/// string (whose text is returned). The connection's own failures are `Err`.
async fn command(s: &mut BackendStream, args: &[&str]) -> Result<Reply, Error> {
    Ok(match request(s, args).await? {
        Value::Error(text) => Reply::Error(text),
        Value::Status(text) => Reply::Other(text),
        Value::Int(n) => Reply::Other(n.to_string()),
        Value::Bulk(b) => Reply::Other(String::from_utf8_lossy(&b).into_owned()),
        Value::Nil | Value::Array(_) => Reply::Other(String::new()),
    })
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
