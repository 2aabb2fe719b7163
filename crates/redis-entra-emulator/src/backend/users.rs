//! The ACL users a backend keeps and their passwords, shared by every node: the built-in
//! policies' users, the access-key user and the emulator's administrator, the setup every
//! node gets, and the user (and password) a client's policy maps to.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use uuid::Uuid;

use super::admin_commands::{command, simple_command, Reply};
use super::arities::CommandArities;
use super::connect::{connect_to, BackendAddr, BackendStream};
use super::identity_users::IdentityUser;
use super::policy_users::CustomUser;
use super::Backend;
use crate::directory::AccessPolicy;
use crate::Error;

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

/// The ACL users of a backend and the passwords only the gateway knows, shared by every node
/// of that backend: a standalone `redis-server` is one node, a cluster has several, each
/// holding the same users with the same passwords.
pub(super) struct Users {
    /// The administrator's user and password (`None`: the backend needs no `AUTH`).
    pub(super) admin: Option<(String, String)>,
    pub(super) policy_passwords: HashMap<AccessPolicy, String>,
    pub(super) access_key_password: String,
    /// Custom policies' users, by policy name.
    pub(super) custom: RwLock<HashMap<String, CustomUser>>,
    /// Identities' users, by object id.
    pub(super) identities: RwLock<HashMap<String, IdentityUser>>,
    /// The server's commands and their arities, read once (`COMMAND`).
    pub(super) commands: tokio::sync::OnceCell<Arc<CommandArities>>,
    /// Serialises ACL changes (and cluster node restarts), so that concurrent updates of one
    /// policy agree on its password and every node gets every change.
    pub(super) acl: tokio::sync::Mutex<()>,
    /// Every node the users live on.
    pub(super) nodes: Vec<BackendAddr>,
    /// Whether each change is written to the node's ACL file with `ACL SAVE` (cluster nodes,
    /// which reload their users from it when they restart).
    pub(super) persist: bool,
}

impl Users {
    pub(super) fn new(
        admin: Option<(String, String)>,
        nodes: Vec<BackendAddr>,
        persist: bool,
    ) -> Self {
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
    pub(super) async fn admin_connection(
        &self,
        addr: &BackendAddr,
    ) -> Result<BackendStream, Error> {
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
    pub(super) async fn install(&self, addr: &BackendAddr) -> Result<(), Error> {
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
pub(super) fn setuser_args(user: &str, password: &str, rules: &str) -> Vec<String> {
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

pub(crate) fn random_password() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

impl Backend {
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
}
