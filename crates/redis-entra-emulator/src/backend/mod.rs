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

mod admin_commands;
mod arities;
mod connect;
mod identity_users;
mod policy_users;
mod process;
mod users;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::process::Child;

use crate::server_program::ServerProgram;
use crate::Error;

use admin_commands::simple_command;
pub(crate) use admin_commands::{request, Value};
pub use arities::{CommandArities, KeyPositions};
use connect::connect_to;
pub use connect::{BackendAddr, BackendStream};
use users::Users;
pub(crate) use users::{base_acl, random_password, ADMIN_USER};
pub use users::{BackendUser, ACCESS_KEY_RULES, ACCESS_KEY_USER};

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

impl Backend {
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

    /// Whether the backend answers the administrator's `PING`.
    pub async fn ping(&self) -> Result<(), Error> {
        let mut s = self.admin_connection().await?;
        simple_command(&mut s, &["PING"]).await.map(drop)
    }

    /// Opens a stream authenticated as the emulator's administrator.
    pub async fn admin_connection(&self) -> Result<BackendStream, Error> {
        self.users.admin_connection(&self.addr).await
    }
}
