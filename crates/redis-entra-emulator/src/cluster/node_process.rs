//! One node's `redis-server` process: its directory, ports and configuration, starting it
//! (on fresh ports until it comes up), waiting until it answers, restarting and stopping it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Child;
use tokio::time::Instant;
use tracing::debug;

use super::Cluster;
use crate::backend::{base_acl, request, BackendStream, Value, ADMIN_USER};
use crate::server_program::ServerProgram;
use crate::Error;

/// How many times a node is started on fresh ports when it fails to come up (a port taken
/// between the emulator choosing it and Redis binding it).
const PORT_ATTEMPTS: usize = 8;
/// How long a node has to answer after it starts (loading its data included).
const NODE_READY: Duration = Duration::from_secs(15);

/// A node process just started.
pub(super) struct Spawned {
    pub(super) dir: tempfile::TempDir,
    pub(super) config: PathBuf,
    pub(super) log: PathBuf,
    pub(super) child: Child,
    pub(super) data_port: u16,
    pub(super) bus_port: u16,
}

/// Why a node did not come up.
enum StartFailure {
    /// The process exited (a port taken, most likely): try other ports.
    Exited(String),
    /// It runs but does not answer.
    Failed(Error),
}

impl Cluster {
    /// Restarts node `index`'s `redis-server`: `SHUTDOWN SAVE`, then the same command line,
    /// configuration, ports and `nodes.conf`, so it comes back with its id, slots, users and
    /// data. Returns once the cluster is healthy again. Connections through its gateway are
    /// closed by the shutdown; clients reconnect as they would to a rebooted shard.
    pub async fn restart_node(&self, index: usize) -> Result<(), Error> {
        let node = self.node(index)?;
        let _acl = node.backend.lock_acl().await;
        let mut slot = node.child.lock().await;
        if let Some(mut child) = slot.take() {
            if let Ok(mut conn) = node.backend.admin_connection().await {
                // On success Redis exits without a reply.
                if let Ok(Value::Error(text)) = request(&mut conn, &["SHUTDOWN", "SAVE"]).await {
                    *slot = Some(child);
                    return Err(Error::Backend(format!(
                        "node {index} refused to shut down: {text}"
                    )));
                }
            }
            stop_child(&mut child).await;
        }
        debug!(node = index, "cluster node stopped; starting it again");
        let deadline = Instant::now() + NODE_READY;
        let data_port = self.info[index].backend.port();
        loop {
            let mut child = self.program.spawn(&node.config)?;
            match wait_node_ready(&mut child, data_port, &self.admin_password, &node.log).await {
                Ok(()) => {
                    *slot = Some(child);
                    break;
                }
                // Its old ports may take a moment to be free again.
                Err(StartFailure::Exited(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(StartFailure::Exited(why)) => {
                    return Err(Error::Backend(format!(
                        "node {index} did not start again: {why}"
                    )))
                }
                Err(StartFailure::Failed(e)) => {
                    stop_child(&mut child).await;
                    return Err(e);
                }
            }
        }
        drop(slot);
        self.wait_healthy().await?;
        debug!(node = index, "cluster node restarted");
        Ok(())
    }
}

/// Waits up to 2 s for a process to exit, then kills it.
pub(super) async fn stop_child(child: &mut Child) {
    if tokio::time::timeout(Duration::from_secs(2), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// Two distinct free ports on 127.0.0.1: data and bus. Before Redis 7 the bus port is always
/// the data port + 10000.
fn free_ports(bus_follows_data: bool) -> Result<(u16, u16), Error> {
    let bind = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port));
    let port_of = |l: &std::net::TcpListener| {
        l.local_addr()
            .map(|a| a.port())
            .map_err(|e| Error::io("reading a probe listener's address", e))
    };
    if !bus_follows_data {
        let data = bind(0).map_err(|e| Error::io("finding a free port", e))?;
        let bus = bind(0).map_err(|e| Error::io("finding a free port", e))?;
        return Ok((port_of(&data)?, port_of(&bus)?));
    }
    use rand::Rng;
    for _ in 0..100 {
        let port: u16 = rand::rng().random_range(20000..=55535);
        if let (Ok(_data), Ok(_bus)) = (bind(port), bind(port + 10000)) {
            return Ok((port, port + 10000));
        }
    }
    Err(Error::Backend(
        "found no free pair of ports (PORT, PORT + 10000) for a cluster node".into(),
    ))
}

/// A node's `redis.conf`.
fn node_config(dir: &Path, data: u16, bus: u16, gateway: u16, hostname: Option<&str>) -> String {
    let dir = dir.display();
    let mut config = format!(
        "bind 127.0.0.1\nport {data}\nprotected-mode yes\ndaemonize no\n\
         dir \"{dir}\"\nlogfile \"{dir}/redis.log\"\nloglevel notice\n\
         save \"\"\nappendonly no\ndbfilename dump.rdb\nmaxclients 20000\n\
         aclfile \"{dir}/users.acl\"\n\
         cluster-enabled yes\ncluster-config-file nodes.conf\ncluster-node-timeout 15000\n\
         cluster-announce-ip 127.0.0.1\ncluster-announce-port {gateway}\n\
         cluster-announce-bus-port {bus}\n"
    );
    if let Some(hostname) = hostname {
        config.push_str(&format!(
            "cluster-port {bus}\ncluster-announce-hostname {hostname}\n\
             cluster-preferred-endpoint-type hostname\n"
        ));
    }
    config
}

/// Creates node `index`'s directory, configuration and ACL file and starts it, on fresh ports
/// until it comes up.
pub(super) async fn spawn_node(
    program: &ServerProgram,
    index: usize,
    gateway_port: u16,
    admin_password: &str,
    hostname: Option<&str>,
) -> Result<Spawned, Error> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("redis-entra-cluster-node{index}-"))
        .tempdir()
        .map_err(|e| Error::io("creating a cluster node's directory", e))?;
    std::fs::write(dir.path().join("users.acl"), base_acl(admin_password))
        .map_err(|e| Error::io("writing a cluster node's ACL file", e))?;
    let config = dir.path().join("redis.conf");
    let log = dir.path().join("redis.log");
    let mut why = String::new();
    for attempt in 1..=PORT_ATTEMPTS {
        let (data_port, bus_port) = free_ports(hostname.is_none())?;
        std::fs::write(
            &config,
            node_config(dir.path(), data_port, bus_port, gateway_port, hostname),
        )
        .map_err(|e| Error::io("writing a cluster node's configuration", e))?;
        let mut child = program.spawn(&config)?;
        match wait_node_ready(&mut child, data_port, admin_password, &log).await {
            Ok(()) => {
                return Ok(Spawned {
                    dir,
                    config,
                    log,
                    child,
                    data_port,
                    bus_port,
                })
            }
            Err(StartFailure::Exited(text)) => {
                debug!(node = index, attempt, reason = %text, "cluster node did not start; trying other ports");
                why = text;
                // A fresh nodes.conf for the next attempt: this one names the old ports.
                let _ = std::fs::remove_file(dir.path().join("nodes.conf"));
            }
            Err(StartFailure::Failed(e)) => {
                stop_child(&mut child).await;
                return Err(e);
            }
        }
    }
    Err(Error::Backend(format!(
        "cluster node {index} did not start after {PORT_ATTEMPTS} attempts: {why}"
    )))
}

/// Waits until a just-started node answers the administrator's `PING`.
async fn wait_node_ready(
    child: &mut Child,
    data_port: u16,
    admin_password: &str,
    log: &Path,
) -> Result<(), StartFailure> {
    let deadline = Instant::now() + NODE_READY;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(StartFailure::Exited(format!(
                "redis-server exited ({status}); the end of its log: {}",
                log_tail(log)
            )));
        }
        let attempt = async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", data_port)).await;
            let mut conn = BackendStream::Tcp(tcp.map_err(|e| e.to_string())?);
            let auth = request(&mut conn, &["AUTH", ADMIN_USER, admin_password]).await;
            if let Value::Error(text) = auth.map_err(|e| e.to_string())? {
                return Err(text);
            }
            match request(&mut conn, &["PING"])
                .await
                .map_err(|e| e.to_string())?
            {
                Value::Status(_) => Ok(()),
                other => Err(format!("PING answered {other:?}")),
            }
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(StartFailure::Failed(Error::Backend(format!(
                    "cluster node on port {data_port} did not become ready in {} s: {e}",
                    NODE_READY.as_secs()
                ))))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The last lines of a node's log, for error messages.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}
