//! Cluster mode: N `redis-server` nodes in cluster mode, each behind its own gateway, as Azure
//! Managed Redis' OSS cluster policy exposes its shards (clients bootstrap on one endpoint, read
//! the topology with `CLUSTER SLOTS`/`CLUSTER SHARDS`/`CLUSTER NODES` and connect to each shard's
//! own endpoint).
//!
//! **Each node announces its gateway.** Node *i* listens on 127.0.0.1 on a free data port and
//! a free cluster-bus port, and is configured with `cluster-announce-ip 127.0.0.1`,
//! `cluster-announce-port <node i's gateway TLS port>` and `cluster-announce-bus-port <its
//! real bus port>`; on Redis 7 also `cluster-announce-hostname localhost` and
//! `cluster-preferred-endpoint-type hostname`. So every topology reply and every redirection
//! (`CLUSTER SLOTS`, `CLUSTER SHARDS`, `CLUSTER NODES`, `-MOVED 3999 localhost:PORT`, `-ASK …`)
//! names gateway endpoints, `localhost` being covered by the emulator's certificate, and the
//! gateway rewrites no reply; the real data ports appear nowhere a client can see. (Before
//! Redis 7 there is no announced hostname, so endpoints are `127.0.0.1:PORT`, which the
//! certificate covers too, and the bus port is the data port + 10000.)
//!
//! **Users.** Every node gets the standalone backend's ACL setup (default user off, the
//! emulator's administrator, one user per access policy and the access-key user, with the same
//! passwords on every node; see [`backend`](crate::backend)), and each change of a custom
//! policy is made on every node. The users live in each node's ACL file (`aclfile`, written
//! with `ACL SAVE`), so a restarted node has them from its first connection.
//!
//! **Topology.** The 16384 slots are split evenly, in node order (`CLUSTER ADDSLOTSRANGE`),
//! the nodes are introduced with `CLUSTER MEET`, and [`Cluster::start`] returns once every node
//! reports `cluster_state:ok` and knows every other node's endpoint. There are no replicas: a
//! replica would replicate from its primary's *announced* endpoint, which is a gateway that
//! wants Entra tokens.
//!
//! **Restarts** ([`Cluster::restart_node`]) keep the node's id, ports, slots and data: the node
//! is stopped with `SHUTDOWN SAVE` (an RDB snapshot in its directory; there is no AOF), so every
//! write acknowledged before the restart is there after it, and started again on the same
//! configuration and `nodes.conf`. While it is down its gateway still accepts TLS connections
//! but cannot reach Redis, and for about 2 s after it comes back the node answers
//! `-CLUSTERDOWN` (Redis' rejoin delay), as a rebooting shard would.
//!
//! **Slot migration** ([`Cluster::migrate_slot`]) is `redis-cli --cluster reshard`'s dance:
//! `CLUSTER SETSLOT <slot> IMPORTING` on the target, `MIGRATING` on the source (from then on a
//! missing key of the slot gets `-ASK <slot> localhost:<target>`), `MIGRATE … KEYS` in batches,
//! then `CLUSTER SETSLOT <slot> NODE <target>` on every node (then `-MOVED`). The two halves
//! are also available on their own, [`begin_slot_migration`](Cluster::begin_slot_migration) and
//! [`finish_slot_migration`](Cluster::finish_slot_migration), to observe the `ASK` phase.

mod admin_commands;
mod migration;
mod node_process;
mod slots;
mod topology;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::process::Child;
use tracing::debug;

use crate::backend::{request, Backend, BackendAddr, ADMIN_USER};
use crate::server_program::ServerProgram;
use crate::Error;

use crate::backend::random_password;
use admin_commands::{expect_ok, expect_text};
use node_process::{spawn_node, stop_child};
use slots::slot_range;
pub use slots::{key_slot, SLOTS};

/// One node of the cluster, as the emulator placed it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterNode {
    /// Its position, 0-based (node 0 is the env file's `AZURE_REDIS_HOST`/`PORT`).
    pub index: usize,
    /// Its cluster node id (40 hex characters).
    pub id: String,
    /// Its gateway's TLS address: what the node announces, with the host `localhost`.
    pub gateway: SocketAddr,
    /// The `redis-server`'s own data address (plain TCP, loopback; clients never see it).
    pub backend: SocketAddr,
    /// The `redis-server`'s cluster-bus port.
    pub bus_port: u16,
}

/// A node's process and backend.
struct Node {
    config: PathBuf,
    log: PathBuf,
    child: tokio::sync::Mutex<Option<Child>>,
    backend: Arc<Backend>,
    _dir: tempfile::TempDir,
}

/// A running cluster of `redis-server` nodes (see the [module documentation](self)). Dropping
/// it kills the nodes; [`shutdown`](Self::shutdown) stops them cleanly.
pub struct Cluster {
    info: Vec<ClusterNode>,
    nodes: Vec<Node>,
    /// Whether the nodes announce the hostname `localhost` (Redis 7 and later).
    hostnames: bool,
    /// The administrator's password, for `MIGRATE … AUTH2` (a secret: never logged).
    admin_password: String,
    /// The nodes' binary.
    program: ServerProgram,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("nodes", &self.info)
            .field("hostnames", &self.hostnames)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Spawns one node per entry of `gateway_ports` (the ports its gateway listens on, already
    /// bound, which the node announces), creates the users on every node, splits the slots
    /// evenly, introduces the nodes and waits until the cluster is healthy.
    pub async fn start(gateway_ports: &[u16]) -> Result<Cluster, Error> {
        Self::start_with(gateway_ports, &ServerProgram::default(), "localhost").await
    }

    /// As [`start`](Self::start), running `program` (a `redis-server` or `valkey-server`), the
    /// nodes announcing `hostname` (Redis 7 and later) for their gateways.
    pub async fn start_with(
        gateway_ports: &[u16],
        program: &ServerProgram,
        hostname: &str,
    ) -> Result<Cluster, Error> {
        let n = gateway_ports.len();
        if n == 0 || n > usize::from(SLOTS) {
            return Err(Error::Config(format!(
                "a cluster needs between 1 and {SLOTS} nodes, not {n}"
            )));
        }
        let hostnames = program.major_version().await.is_none_or(|major| major >= 7);
        let admin_password = random_password();
        let mut spawned = Vec::with_capacity(n);
        for (index, &gateway_port) in gateway_ports.iter().enumerate() {
            spawned.push(
                spawn_node(
                    program,
                    index,
                    gateway_port,
                    &admin_password,
                    hostnames.then_some(hostname),
                )
                .await?,
            );
        }
        let addrs: Vec<BackendAddr> = spawned
            .iter()
            .map(|s| BackendAddr::Tcp("127.0.0.1".into(), s.data_port))
            .collect();
        let backends = Backend::group(&addrs, (ADMIN_USER.into(), admin_password.clone()), true);
        let mut nodes = Vec::with_capacity(n);
        let mut info = Vec::with_capacity(n);
        for (index, (s, backend)) in spawned.into_iter().zip(backends).enumerate() {
            let id = {
                let mut conn = backend.admin_connection().await?;
                expect_text(&mut conn, &["CLUSTER", "MYID"]).await?
            };
            info.push(ClusterNode {
                index,
                id,
                gateway: SocketAddr::from(([127, 0, 0, 1], gateway_ports[index])),
                backend: SocketAddr::from(([127, 0, 0, 1], s.data_port)),
                bus_port: s.bus_port,
            });
            nodes.push(Node {
                config: s.config,
                log: s.log,
                child: tokio::sync::Mutex::new(Some(s.child)),
                backend: Arc::new(backend),
                _dir: s.dir,
            });
        }
        let cluster = Cluster {
            info,
            nodes,
            hostnames,
            admin_password,
            program: program.clone(),
        };
        if let Some(first) = cluster.nodes.first() {
            first.backend.install_users().await?;
        }
        cluster.form().await?;
        cluster.wait_healthy().await?;
        debug!(nodes = n, "cluster ready");
        Ok(cluster)
    }

    /// Assigns the slots and introduces the nodes to each other.
    async fn form(&self) -> Result<(), Error> {
        let n = self.nodes.len();
        for (i, node) in self.nodes.iter().enumerate() {
            let mut conn = node.backend.admin_connection().await?;
            let epoch = (i + 1).to_string();
            expect_ok(&mut conn, &["CLUSTER", "SET-CONFIG-EPOCH", &epoch]).await?;
            let (first, last) = slot_range(i, n);
            if self.hostnames {
                let (first, last) = (first.to_string(), last.to_string());
                expect_ok(&mut conn, &["CLUSTER", "ADDSLOTSRANGE", &first, &last]).await?;
            } else {
                let mut args = vec!["CLUSTER".to_string(), "ADDSLOTS".into()];
                args.extend((first..=last).map(|s| s.to_string()));
                expect_ok(&mut conn, &args).await?;
            }
        }
        let Some(first) = self.nodes.first() else {
            return Ok(());
        };
        let mut conn = first.backend.admin_connection().await?;
        for info in self.info.iter().skip(1) {
            let port = info.backend.port().to_string();
            let bus = info.bus_port.to_string();
            let mut args = vec!["CLUSTER", "MEET", "127.0.0.1", &port];
            if self.hostnames {
                args.push(&bus);
            }
            expect_ok(&mut conn, &args).await?;
        }
        Ok(())
    }

    /// The nodes, in order.
    pub fn nodes(&self) -> &[ClusterNode] {
        &self.info
    }

    /// The gateways' addresses, in node order.
    pub fn gateway_addrs(&self) -> Vec<SocketAddr> {
        self.info.iter().map(|i| i.gateway).collect()
    }

    /// Node `index`'s backend (what its gateway fronts).
    pub fn backend(&self, index: usize) -> Option<&Arc<Backend>> {
        self.nodes.get(index).map(|n| &n.backend)
    }

    /// Whether the nodes announce the hostname `localhost` (Redis 7 and later) rather than
    /// `127.0.0.1`.
    pub fn announces_hostname(&self) -> bool {
        self.hostnames
    }

    fn node(&self, index: usize) -> Result<&Node, Error> {
        self.nodes.get(index).ok_or_else(|| {
            Error::Config(format!(
                "there is no cluster node {index}: the cluster has {} (0 to {})",
                self.nodes.len(),
                self.nodes.len().saturating_sub(1)
            ))
        })
    }

    /// Stops every node (`SHUTDOWN NOSAVE`; killed if that does not work).
    pub async fn shutdown(&self) {
        for node in &self.nodes {
            let mut slot = node.child.lock().await;
            if let Some(mut child) = slot.take() {
                if let Ok(mut conn) = node.backend.admin_connection().await {
                    let _ = request(&mut conn, &["SHUTDOWN", "NOSAVE"]).await;
                }
                stop_child(&mut child).await;
            }
        }
    }
}
