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

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Child;
use tokio::time::Instant;
use tracing::debug;

use crate::backend::{base_acl, request, Backend, BackendAddr, BackendStream, Value, ADMIN_USER};
use crate::server_program::ServerProgram;
use crate::Error;

/// The number of hash slots.
pub const SLOTS: u16 = 16384;

/// How many times a node is started on fresh ports when it fails to come up (a port taken
/// between the emulator choosing it and Redis binding it).
const PORT_ATTEMPTS: usize = 8;
/// How long a node has to answer after it starts (loading its data included).
const NODE_READY: Duration = Duration::from_secs(15);
/// How long the cluster has to agree (`cluster_state:ok` everywhere).
const CLUSTER_READY: Duration = Duration::from_secs(30);
/// Keys moved per `MIGRATE`.
const MIGRATE_BATCH: usize = 100;
/// `MIGRATE`'s timeout, in milliseconds.
const MIGRATE_TIMEOUT_MS: &str = "10000";

/// The slot of `key`: CRC16 (XMODEM) of the key, or of its hash tag (the bytes between the
/// first `{` and the next `}`, when not empty), modulo 16384, as Redis computes it.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = key.get(open + 1..)?;
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| rest.get(..close)).flatten()
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS
}

/// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

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

/// A node process just started.
struct Spawned {
    dir: tempfile::TempDir,
    config: PathBuf,
    log: PathBuf,
    child: Child,
    data_port: u16,
    bus_port: u16,
}

/// Why a node did not come up.
enum StartFailure {
    /// The process exited (a port taken, most likely): try other ports.
    Exited(String),
    /// It runs but does not answer.
    Failed(Error),
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

    /// The index of the node that serves `slot`, as node 0 (or, if it is down, the first node
    /// that answers) sees it.
    pub async fn slot_owner(&self, slot: u16) -> Result<usize, Error> {
        check_slot(slot)?;
        let mut last = None;
        for node in &self.nodes {
            match self.topology(&node.backend).await {
                Ok(view) => {
                    return view
                        .iter()
                        .find(|n| n.serves(slot))
                        .and_then(|n| self.index_of(&n.id))
                        .ok_or_else(|| Error::Backend(format!("no node serves slot {slot}")))
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Backend("the cluster has no node".into())))
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        self.info.iter().position(|i| i.id == id)
    }

    /// `CLUSTER NODES` from one node, parsed.
    async fn topology(&self, backend: &Backend) -> Result<Vec<NodeLine>, Error> {
        let mut conn = backend.admin_connection().await?;
        let text = expect_text(&mut conn, &["CLUSTER", "NODES"]).await?;
        Ok(text.lines().filter_map(NodeLine::parse).collect())
    }

    /// Waits until every node reports `cluster_state:ok`, knows every node, flags none as
    /// failing or in handshake, and (Redis 7) knows every node's hostname.
    async fn wait_healthy(&self) -> Result<(), Error> {
        let deadline = Instant::now() + CLUSTER_READY;
        loop {
            let problem = self.health_problem().await;
            match problem {
                None => return Ok(()),
                Some(problem) if Instant::now() >= deadline => {
                    return Err(Error::Backend(format!(
                        "the cluster did not become healthy in {} s: {problem}",
                        CLUSTER_READY.as_secs()
                    )))
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// What keeps the cluster from being healthy, if anything.
    async fn health_problem(&self) -> Option<String> {
        let n = self.nodes.len();
        for (i, node) in self.nodes.iter().enumerate() {
            let mut conn = match node.backend.admin_connection().await {
                Ok(conn) => conn,
                Err(e) => return Some(format!("node {i}: {e}")),
            };
            let info = match expect_text(&mut conn, &["CLUSTER", "INFO"]).await {
                Ok(info) => info,
                Err(e) => return Some(format!("node {i}: {e}")),
            };
            if !info.lines().any(|l| l.trim() == "cluster_state:ok") {
                return Some(format!("node {i} is not in cluster_state:ok"));
            }
            let view = match expect_text(&mut conn, &["CLUSTER", "NODES"]).await {
                Ok(text) => text.lines().filter_map(NodeLine::parse).collect::<Vec<_>>(),
                Err(e) => return Some(format!("node {i}: {e}")),
            };
            if view.len() != n {
                return Some(format!("node {i} knows {} nodes of {n}", view.len()));
            }
            if let Some(bad) = view.iter().find(|l| {
                l.flags
                    .split(',')
                    .any(|f| matches!(f, "fail" | "fail?" | "handshake" | "noaddr"))
                    || (self.hostnames && !l.has_hostname)
            }) {
                return Some(format!(
                    "node {i} sees {} as {} (hostname known: {})",
                    bad.id, bad.flags, bad.has_hostname
                ));
            }
        }
        None
    }

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

    /// Moves `slot` and its keys from node `from` to node `to`:
    /// [`begin_slot_migration`](Self::begin_slot_migration) then
    /// [`finish_slot_migration`](Self::finish_slot_migration). Returns how many keys moved.
    pub async fn migrate_slot(&self, slot: u16, from: usize, to: usize) -> Result<usize, Error> {
        self.begin_slot_migration(slot, from, to).await?;
        self.finish_slot_migration(slot, from, to).await
    }

    /// Marks `slot` as importing on node `to` and migrating on node `from` (which must own
    /// it). From then on `from` still serves the slot's existing keys and redirects requests
    /// for missing ones with `-ASK <slot> <to's gateway>`.
    pub async fn begin_slot_migration(
        &self,
        slot: u16,
        from: usize,
        to: usize,
    ) -> Result<(), Error> {
        check_slot(slot)?;
        let (source, target) = (self.node(from)?, self.node(to)?);
        if from == to {
            return Err(Error::Config(format!(
                "slot {slot} cannot migrate from node {from} to itself"
            )));
        }
        let owner = self.slot_owner(slot).await?;
        if owner != from {
            return Err(Error::Config(format!(
                "slot {slot} is served by node {owner}, not node {from}"
            )));
        }
        let slot_text = slot.to_string();
        let mut conn = target.backend.admin_connection().await?;
        expect_ok(
            &mut conn,
            &[
                "CLUSTER",
                "SETSLOT",
                &slot_text,
                "IMPORTING",
                &self.info[from].id,
            ],
        )
        .await?;
        let mut conn = source.backend.admin_connection().await?;
        expect_ok(
            &mut conn,
            &[
                "CLUSTER",
                "SETSLOT",
                &slot_text,
                "MIGRATING",
                &self.info[to].id,
            ],
        )
        .await?;
        debug!(slot, from, to, "slot migration begun");
        Ok(())
    }

    /// Moves the keys of `slot` from node `from` to node `to` (`MIGRATE … KEYS`, in batches),
    /// then gives the slot to `to` on every node (`CLUSTER SETSLOT <slot> NODE`), after which
    /// `from` answers `-MOVED`. Expects [`begin_slot_migration`](Self::begin_slot_migration)
    /// first. Returns how many keys moved.
    pub async fn finish_slot_migration(
        &self,
        slot: u16,
        from: usize,
        to: usize,
    ) -> Result<usize, Error> {
        check_slot(slot)?;
        let (source, target) = (self.node(from)?, self.node(to)?);
        let slot_text = slot.to_string();
        let batch = MIGRATE_BATCH.to_string();
        let target_port = self.info[to].backend.port().to_string();
        let mut conn = source.backend.admin_connection().await?;
        let mut moved = 0;
        loop {
            let keys = match request(
                &mut conn,
                &["CLUSTER", "GETKEYSINSLOT", slot_text.as_str(), &batch],
            )
            .await?
            {
                Value::Array(keys) => keys,
                Value::Error(text) => {
                    return Err(Error::Backend(format!("CLUSTER GETKEYSINSLOT: {text}")))
                }
                other => {
                    return Err(Error::Backend(format!(
                        "CLUSTER GETKEYSINSLOT answered {other:?}"
                    )))
                }
            };
            if keys.is_empty() {
                break;
            }
            let mut args: Vec<Vec<u8>> = [
                "MIGRATE",
                "127.0.0.1",
                &target_port,
                "",
                "0",
                MIGRATE_TIMEOUT_MS,
                "AUTH2",
                ADMIN_USER,
                &self.admin_password,
                "KEYS",
            ]
            .iter()
            .map(|a| a.as_bytes().to_vec())
            .collect();
            let count = keys.len();
            for key in keys {
                match key {
                    Value::Bulk(k) => args.push(k),
                    other => {
                        return Err(Error::Backend(format!(
                            "CLUSTER GETKEYSINSLOT gave a key as {other:?}"
                        )))
                    }
                }
            }
            match request(&mut conn, &args).await? {
                Value::Error(text) => {
                    return Err(Error::Backend(format!(
                        "MIGRATE of slot {slot} from node {from} to node {to}: {text}"
                    )))
                }
                _ => moved += count,
            }
        }
        let set_node = ["CLUSTER", "SETSLOT", &slot_text, "NODE", &self.info[to].id];
        // The target first, then the source, then everyone else (as redis-cli does).
        let mut order = vec![target, source];
        order.extend(
            self.nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != from && *i != to)
                .map(|(_, n)| n),
        );
        for node in order {
            let mut conn = node.backend.admin_connection().await?;
            expect_ok(&mut conn, &set_node).await?;
        }
        debug!(slot, from, to, keys = moved, "slot migrated");
        Ok(moved)
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

/// The slots node `i` of `n` gets: an even split, in order.
fn slot_range(i: usize, n: usize) -> (usize, usize) {
    let total = usize::from(SLOTS);
    (i * total / n, (i + 1) * total / n - 1)
}

fn check_slot(slot: u16) -> Result<(), Error> {
    if slot < SLOTS {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "slot {slot} does not exist: slots are 0 to {}",
            SLOTS - 1
        )))
    }
}

/// Waits up to 2 s for a process to exit, then kills it.
async fn stop_child(child: &mut Child) {
    if tokio::time::timeout(Duration::from_secs(2), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug)]
struct NodeLine {
    id: String,
    flags: String,
    has_hostname: bool,
    /// Slot ranges served (importing/migrating markers left out).
    slots: Vec<(u16, u16)>,
}

impl NodeLine {
    /// `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>…`
    fn parse(line: &str) -> Option<NodeLine> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let id = fields.first()?.to_string();
        let address = fields.get(1)?;
        let flags = fields.get(2)?.to_string();
        let has_hostname = address
            .split_once(',')
            .is_some_and(|(_, host)| !host.is_empty());
        let slots = fields
            .iter()
            .skip(8)
            .filter(|f| !f.starts_with('['))
            .filter_map(|f| match f.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => {
                    let s = f.parse().ok()?;
                    Some((s, s))
                }
            })
            .collect();
        Some(NodeLine {
            id,
            flags,
            has_hostname,
            slots,
        })
    }

    fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }
}

fn random_password() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
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
async fn spawn_node(
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

/// Sends a command that must answer `+OK`.
async fn expect_ok<A: AsRef<[u8]>>(conn: &mut BackendStream, args: &[A]) -> Result<(), Error> {
    match request(conn, args).await? {
        Value::Status(_) => Ok(()),
        other => Err(unexpected(args, other)),
    }
}

/// Sends a command that answers a bulk or simple string.
async fn expect_text(conn: &mut BackendStream, args: &[&str]) -> Result<String, Error> {
    let reply = request(conn, args).await?;
    reply.text().ok_or_else(|| unexpected(args, reply))
}

fn unexpected<A: AsRef<[u8]>>(args: &[A], reply: Value) -> Error {
    let name: Vec<String> = args
        .iter()
        .take(2)
        .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
        .collect();
    match reply {
        Value::Error(text) => Error::Backend(format!("`{}` failed: {text}", name.join(" "))),
        other => Error::Backend(format!("`{}` answered {other:?}", name.join(" "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_match_redis() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"x"), 16287);
        assert_eq!(key_slot(b"a"), 15495);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }

    #[test]
    fn slots_are_split_evenly() {
        assert_eq!(slot_range(0, 3), (0, 5460));
        assert_eq!(slot_range(1, 3), (5461, 10921));
        assert_eq!(slot_range(2, 3), (10922, 16383));
        assert_eq!(slot_range(0, 1), (0, 16383));
    }

    #[test]
    fn node_lines_parse() {
        let line = "07bd 127.0.0.1:9101@17101,localhost myself,master - 0 1795 1 connected 0-5460 7000 [5461->-f797]";
        let parsed = NodeLine::parse(line).expect("parses");
        assert_eq!(parsed.id, "07bd");
        assert!(parsed.has_hostname);
        assert_eq!(parsed.slots, vec![(0, 5460), (7000, 7000)]);
        assert!(parsed.serves(7000) && !parsed.serves(5461));
        let bare =
            NodeLine::parse("f797 127.0.0.1:9102@17102 master - 0 0 0 connected").expect("parses");
        assert!(!bare.has_hostname && bare.slots.is_empty());
    }
}
