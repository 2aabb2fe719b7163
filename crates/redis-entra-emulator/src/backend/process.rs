//! The `redis-server` process a backend owns: spawning it on a private unix socket, waiting
//! until it answers, restarting it with every user back, stopping it.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use super::admin_commands::{request, simple_command, Value};
use super::users::{base_acl, random_password, setuser_args, Users, ACCESS_KEY_USER, ADMIN_USER};
use super::{Backend, BackendAddr};
use crate::directory::AccessPolicy;
use crate::server_program::ServerProgram;
use crate::Error;

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
