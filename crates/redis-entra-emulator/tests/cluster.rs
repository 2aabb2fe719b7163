//! Cluster mode: three `redis-server` nodes in cluster mode, each behind its own gateway, driven
//! with the `redis` crate's cluster client over TLS with Entra tokens, as an application
//! reaches Azure Managed Redis with the OSS cluster policy.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, TlsCertificates, Value};
use redis_entra_emulator::cluster::key_slot;
use redis_entra_emulator::directory::REDIS_RESOURCE;
use redis_entra_emulator::stats::Stats;
use redis_entra_emulator::{Emulator, EmulatorConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Generous bound on anything the tests wait for.
const WAIT: Duration = Duration::from_secs(30);

async fn start(lifetime: Duration, skew: Duration) -> Result<Emulator> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    Ok(Emulator::start(EmulatorConfig {
        token_lifetime: lifetime,
        clock_skew: skew,
        cluster: Some(3),
        ..EmulatorConfig::default()
    })
    .await?)
}

fn token(emu: &Emulator) -> Result<String> {
    Ok(emu
        .issuer()
        .issue(emu.service_principal(), REDIS_RESOURCE)?
        .token)
}

fn certs(emu: &Emulator) -> TlsCertificates {
    TlsCertificates {
        client_tls: None,
        root_cert: Some(emu.ca_pem().as_bytes().to_vec()),
    }
}

/// The cluster client, bootstrapping on node 0 only, with the service principal's oid and a
/// fresh token.
async fn cluster_client(emu: &Emulator) -> Result<ClusterConnection> {
    let client = ClusterClientBuilder::new(vec![format!(
        "rediss://localhost:{}",
        emu.gateway_addr().port()
    )])
    .username(&emu.service_principal().object_id)
    .password(token(emu)?)
    .certs(certs(emu))
    .connection_timeout(Duration::from_secs(5))
    .response_timeout(Duration::from_secs(5))
    .build()?;
    Ok(client.get_async_connection().await?)
}

/// A plain (non-cluster) authenticated connection to one node's gateway.
async fn node_client(emu: &Emulator, port: u16) -> Result<redis::aio::MultiplexedConnection> {
    let url = format!(
        "rediss://{}:{}@localhost:{port}",
        emu.service_principal().object_id,
        token(emu)?
    );
    let client = redis::Client::build_with_tls(url, certs(emu))?;
    Ok(client.get_multiplexed_async_connection().await?)
}

/// A raw TLS connection to a gateway, reading replies line by line.
struct Raw {
    stream: BufReader<TlsStream<TcpStream>>,
}

impl Raw {
    async fn connect(emu: &Emulator, port: u16) -> Result<Raw> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(emu.ca_pem().as_bytes()) {
            roots.add(cert?)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        Ok(Raw {
            stream: BufReader::new(tls),
        })
    }

    async fn authenticated(emu: &Emulator, port: u16) -> Result<Raw> {
        let mut raw = Raw::connect(emu, port).await?;
        let oid = emu.service_principal().object_id.clone();
        let reply = raw.line(&["AUTH", &oid, &token(emu)?]).await?;
        if reply != "+OK" {
            bail!("AUTH answered {reply}");
        }
        Ok(raw)
    }

    /// Sends a command and reads the first line of its reply (enough for simple strings,
    /// errors and integers).
    async fn line(&mut self, args: &[&str]) -> Result<String> {
        let mut frame = format!("*{}\r\n", args.len());
        for a in args {
            frame.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.stream.get_mut().write_all(frame.as_bytes()).await?;
        let mut line = String::new();
        let n = tokio::time::timeout(WAIT, self.stream.read_line(&mut line)).await??;
        if n == 0 {
            bail!("the connection closed");
        }
        Ok(line.trim_end().to_string())
    }

    /// Waits for the server to close the connection; returns how long it took.
    async fn closed_within(&mut self, limit: Duration) -> Result<Duration> {
        let started = Instant::now();
        let mut buf = [0u8; 64];
        match tokio::time::timeout(limit, self.stream.read(&mut buf)).await {
            Err(_) => bail!("still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => Ok(started.elapsed()),
            Ok(Ok(n)) => bail!(
                "unexpected bytes before the close: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
        }
    }
}

/// The endpoints (host, port) named by a `CLUSTER SLOTS` reply.
fn slot_endpoints(reply: &Value) -> Result<Vec<(String, u16)>> {
    let Value::Array(ranges) = reply else {
        bail!("CLUSTER SLOTS answered {reply:?}");
    };
    let mut endpoints = Vec::new();
    for range in ranges {
        let Value::Array(items) = range else {
            bail!("a slot range is {range:?}");
        };
        for node in items.iter().skip(2) {
            let Value::Array(fields) = node else {
                bail!("a node is {node:?}");
            };
            let host = match fields.first() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                other => bail!("a node's host is {other:?}"),
            };
            let port = match fields.get(1) {
                Some(Value::Int(p)) => u16::try_from(*p)?,
                other => bail!("a node's port is {other:?}"),
            };
            endpoints.push((host, port));
        }
    }
    Ok(endpoints)
}

/// Keys spread over the slots, and the node each should land on.
fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("key:{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_in_every_slot_range_and_topology_names_only_gateways() -> Result<()> {
    let emu = start(Duration::from_secs(3600), Duration::from_secs(2)).await?;
    let gateways = emu.cluster_nodes();
    assert_eq!(gateways.len(), 3);
    assert_eq!(gateways[0], emu.gateway_addr());
    let cluster = emu.cluster().context("cluster mode")?;
    let backend_ports: HashSet<u16> = cluster.nodes().iter().map(|n| n.backend.port()).collect();
    let gateway_ports: HashSet<u16> = gateways.iter().map(|a| a.port()).collect();
    assert!(backend_ports.is_disjoint(&gateway_ports));
    let env: BTreeMap<String, String> = emu.env().into_iter().collect();
    assert_eq!(env["AZURE_REDIS_HOST"], "localhost");
    assert_eq!(env["AZURE_REDIS_PORT"], gateways[0].port().to_string());

    // Reads and writes through the cluster client, on every node.
    let mut conn = cluster_client(&emu).await?;
    let keys = keys(300);
    for key in &keys {
        let _: () = conn.set(key, format!("value of {key}")).await?;
    }
    for key in &keys {
        let value: String = conn.get(key).await?;
        assert_eq!(value, format!("value of {key}"));
    }
    let mut owners = HashSet::new();
    for key in &keys {
        owners.insert(cluster.slot_owner(key_slot(key.as_bytes())).await?);
    }
    assert_eq!(owners.len(), 3, "the keys span every node");

    // Every node's topology names the three gateways, as `localhost`, and nothing else.
    for gateway in &gateways {
        let mut node = node_client(&emu, gateway.port()).await?;
        let slots: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut node)
            .await?;
        let endpoints = slot_endpoints(&slots)?;
        let named: HashSet<u16> = endpoints.iter().map(|(_, p)| *p).collect();
        assert_eq!(
            named, gateway_ports,
            "CLUSTER SLOTS from {gateway}: {endpoints:?}"
        );
        assert!(
            endpoints.iter().all(|(h, _)| h == "localhost"),
            "{endpoints:?}"
        );

        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut node)
            .await?;
        for line in nodes.lines() {
            let address = line.split_whitespace().nth(1).context("an address")?;
            let port: u16 = address
                .split_once(':')
                .and_then(|(_, rest)| rest.split('@').next())
                .context("a port")?
                .parse()?;
            assert!(gateway_ports.contains(&port), "CLUSTER NODES line {line:?}");
            assert!(address.ends_with(",localhost"), "{address}");
        }

        let shards: Value = redis::cmd("CLUSTER")
            .arg("SHARDS")
            .query_async(&mut node)
            .await?;
        let text = format!("{shards:?}");
        for port in &backend_ports {
            assert!(
                !text.contains(&format!("Int({port})")),
                "CLUSTER SHARDS names a backend port: {text}"
            );
        }
    }

    // A key on another node gets a redirection to that node's gateway.
    let mut raw = Raw::authenticated(&emu, gateways[0].port()).await?;
    for key in &keys {
        let slot = key_slot(key.as_bytes());
        let owner = cluster.slot_owner(slot).await?;
        if owner != 0 {
            let reply = raw.line(&["GET", key]).await?;
            assert_eq!(
                reply,
                format!("-MOVED {slot} localhost:{}", gateways[owner].port())
            );
            break;
        }
    }
    emu.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_wants_authentication() -> Result<()> {
    let emu = start(Duration::from_secs(3600), Duration::from_secs(2)).await?;
    for (index, gateway) in emu.cluster_nodes().into_iter().enumerate() {
        let mut raw = Raw::connect(&emu, gateway.port()).await?;
        assert_eq!(
            raw.line(&["PING"]).await?,
            "-NOAUTH Authentication required."
        );
        assert_eq!(
            raw.line(&["CLUSTER", "SLOTS"]).await?,
            "-NOAUTH Authentication required."
        );
        assert_eq!(
            raw.line(&["GET", "key:1"]).await?,
            "-NOAUTH Authentication required."
        );
        let oid = emu.service_principal().object_id.clone();
        assert!(raw
            .line(&["AUTH", &oid, "not-a-token"])
            .await?
            .starts_with("-WRONGPASS"));
        // A node's redis-server itself has no default user either.
        let backend = emu.cluster().context("cluster")?.nodes()[index].backend;
        let mut plain = TcpStream::connect(backend).await?;
        plain.write_all(b"PING\r\n").await?;
        let mut reply = [0u8; 64];
        let n = plain.read(&mut reply).await?;
        assert!(String::from_utf8_lossy(&reply[..n]).starts_with("-NOAUTH"));
    }
    // The cluster client with a bad token cannot get in.
    let client = ClusterClientBuilder::new(vec![format!(
        "rediss://localhost:{}",
        emu.gateway_addr().port()
    )])
    .username(&emu.service_principal().object_id)
    .password("not-a-token")
    .certs(certs(&emu))
    .retries(0)
    .build()?;
    assert!(client.get_async_connection().await.is_err());
    emu.shutdown().await;
    Ok(())
}

/// Keeps reading `keys` (expecting their values) and writing `{tag}`-tagged counters through
/// the cluster client until stopped; counts failures.
struct Traffic {
    stop: Arc<AtomicBool>,
    errors: Arc<AtomicUsize>,
    rounds: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Traffic {
    fn start(mut conn: ClusterConnection, keys: Vec<String>) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicUsize::new(0));
        let rounds = Arc::new(AtomicUsize::new(0));
        let (s, e, r) = (stop.clone(), errors.clone(), rounds.clone());
        let task = tokio::spawn(async move {
            let mut failures = Vec::new();
            while !s.load(Ordering::SeqCst) {
                for key in &keys {
                    match conn.get::<_, Option<String>>(key).await {
                        Ok(Some(v)) if v == format!("value of {key}") => {}
                        other => {
                            e.fetch_add(1, Ordering::SeqCst);
                            failures.push(format!("GET {key}: {other:?}"));
                        }
                    }
                }
                r.fetch_add(1, Ordering::SeqCst);
            }
            failures
        });
        Traffic {
            stop,
            errors,
            rounds,
            task,
        }
    }

    async fn wait_rounds(&self, more: usize) -> Result<()> {
        let target = self.rounds.load(Ordering::SeqCst) + more;
        let deadline = Instant::now() + WAIT;
        while self.rounds.load(Ordering::SeqCst) < target {
            if Instant::now() > deadline {
                bail!("the traffic stalled");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    async fn stop(self) -> Result<Vec<String>> {
        self.stop.store(true, Ordering::SeqCst);
        let failures = self.task.await?;
        assert_eq!(self.errors.load(Ordering::SeqCst), failures.len());
        Ok(failures)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_migration_under_traffic_redirects_with_ask_then_moved() -> Result<()> {
    let emu = start(Duration::from_secs(3600), Duration::from_secs(2)).await?;
    let cluster = emu.cluster().context("cluster")?.clone();
    let gateways = emu.cluster_nodes();
    let mut conn = cluster_client(&emu).await?;
    let tagged: Vec<String> = (0..250).map(|i| format!("{{mig}}:{i}")).collect();
    let slot = key_slot(b"mig");
    for key in &tagged {
        let _: () = conn.set(key, format!("value of {key}")).await?;
    }
    let from = cluster.slot_owner(slot).await?;
    let to = (from + 1) % 3;
    let mut traffic_keys = tagged.clone();
    traffic_keys.extend(keys(30));
    for key in keys(30) {
        let _: () = conn.set(&key, format!("value of {key}")).await?;
    }
    let traffic = Traffic::start(cluster_client(&emu).await?, traffic_keys);
    traffic.wait_rounds(1).await?;

    // Importing/migrating: the source still serves the keys it has and sends missing ones to
    // the target's gateway with ASK.
    cluster.begin_slot_migration(slot, from, to).await?;
    let mut source = Raw::authenticated(&emu, gateways[from].port()).await?;
    assert_eq!(
        source.line(&["GET", "{mig}:absent"]).await?,
        format!("-ASK {slot} localhost:{}", gateways[to].port())
    );
    assert_eq!(source.line(&["EXISTS", "{mig}:0"]).await?, ":1");
    // A new key goes to the target through ASK.
    let _: () = conn.set("{mig}:new", "value of {mig}:new").await?;
    let value: String = conn.get("{mig}:new").await?;
    assert_eq!(value, "value of {mig}:new");
    traffic.wait_rounds(2).await?;

    let moved = cluster.finish_slot_migration(slot, from, to).await?;
    assert_eq!(moved, 250);
    assert_eq!(cluster.slot_owner(slot).await?, to);
    assert_eq!(
        source.line(&["GET", "{mig}:0"]).await?,
        format!("-MOVED {slot} localhost:{}", gateways[to].port())
    );
    traffic.wait_rounds(2).await?;
    for key in &tagged {
        let value: String = conn.get(key).await?;
        assert_eq!(value, format!("value of {key}"));
    }

    // And back in one call, still under traffic.
    let moved = emu.migrate_slot(slot, to, from).await?;
    assert_eq!(moved, 251);
    assert_eq!(cluster.slot_owner(slot).await?, from);
    traffic.wait_rounds(2).await?;
    let failures = traffic.stop().await?;
    assert!(failures.is_empty(), "reads failed: {failures:?}");
    let value: String = conn.get("{mig}:new").await?;
    assert_eq!(value, "value of {mig}:new");
    emu.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_acknowledged_writes_and_clients_recover() -> Result<()> {
    let emu = start(Duration::from_secs(3600), Duration::from_secs(2)).await?;
    let cluster = emu.cluster().context("cluster")?.clone();
    let victim = 1;
    // Keys on the node that restarts.
    let mut on_victim = Vec::new();
    for i in 0.. {
        let key = format!("restart:{i}");
        if cluster.slot_owner(key_slot(key.as_bytes())).await? == victim {
            on_victim.push(key);
            if on_victim.len() == 20 {
                break;
            }
        }
    }
    let mut conn = cluster_client(&emu).await?;
    for key in &on_victim {
        let _: () = conn.set(key, format!("value of {key}")).await?;
    }

    // A writer that records what was acknowledged, across the restart.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let writer_written = written.clone();
    let mut writer_conn = cluster_client(&emu).await?;
    let writer_stop = stop.clone();
    let writer = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        let mut failed = 0usize;
        let mut i = 0usize;
        while !writer_stop.load(Ordering::SeqCst) {
            let key = format!("w:{i}");
            match writer_conn.set::<_, _, ()>(&key, i).await {
                Ok(()) => {
                    acknowledged.push((key, i));
                    writer_written.fetch_add(1, Ordering::SeqCst);
                }
                Err(_) => failed += 1,
            }
            i += 1;
        }
        (acknowledged, failed)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    emu.restart_node(victim).await?;
    let took = started.elapsed();
    let at_restart = written.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let (acknowledged, failed) = writer.await?;
    assert!(
        acknowledged.len() > at_restart,
        "the writer made no progress after the restart ({at_restart} writes)"
    );

    // The client recovered: everything acknowledged, before and during the restart, is there.
    for key in &on_victim {
        let value: String = conn.get(key).await?;
        assert_eq!(value, format!("value of {key}"));
    }
    for (key, i) in &acknowledged {
        let value: usize = conn.get(key).await?;
        assert_eq!(value, *i, "{key}");
    }
    let (last, _) = acknowledged.last().ok_or_else(|| anyhow!("no writes"))?;
    eprintln!(
        "restart took {took:?}; {} writes acknowledged ({at_restart} when it returned), {failed} failed; last {last}",
        acknowledged.len()
    );
    // A fresh client works too, and the node still has its users.
    let mut fresh = cluster_client(&emu).await?;
    let _: () = fresh.set("after-restart", "yes").await?;
    for key in &on_victim {
        let value: String = fresh.get(key).await?;
        assert_eq!(value, format!("value of {key}"));
    }
    emu.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_closes_connections_at_token_expiry() -> Result<()> {
    let emu = start(Duration::from_secs(3), Duration::ZERO).await?;
    let mut raws = Vec::new();
    for gateway in emu.cluster_nodes() {
        let mut raw = Raw::authenticated(&emu, gateway.port()).await?;
        assert_eq!(raw.line(&["PING"]).await?, "+PONG");
        raws.push(raw);
    }
    for raw in &mut raws {
        let waited = raw.closed_within(Duration::from_secs(8)).await?;
        assert!(waited <= Duration::from_secs(5), "closed after {waited:?}");
    }
    assert_eq!(Stats::get(&emu.stats().closed_at_expiry), 3);
    emu.shutdown().await;
    Ok(())
}

/// `METHOD path` on the admin interface with its key; the status and the JSON body.
async fn admin(
    emu: &Emulator,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<(u16, serde_json::Value)> {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", emu.admin_url()))
        .bearer_auth(emu.admin_key());
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_interface_lists_nodes_and_migrates_slots() -> Result<()> {
    let emu = start(Duration::from_secs(3600), Duration::from_secs(2)).await?;
    let (status, nodes) = admin(&emu, reqwest::Method::GET, "/admin/cluster/nodes", None).await?;
    assert_eq!(status, 200);
    let ports: Vec<u64> = nodes
        .as_array()
        .context("a list")?
        .iter()
        .filter_map(|n| n["port"].as_u64())
        .collect();
    let expected: Vec<u64> = emu
        .cluster_nodes()
        .iter()
        .map(|a| u64::from(a.port()))
        .collect();
    assert_eq!(ports, expected);
    assert_eq!(nodes[1]["host"], "localhost");

    let mut conn = cluster_client(&emu).await?;
    let _: () = conn.set("{admin}:a", "value of {admin}:a").await?;
    let slot = key_slot(b"admin");
    let cluster = emu.cluster().context("cluster")?;
    let from = cluster.slot_owner(slot).await?;
    let to = (from + 2) % 3;
    let (status, body) = admin(
        &emu,
        reqwest::Method::POST,
        &format!("/admin/cluster/slots/{slot}/migrate"),
        Some(serde_json::json!({ "to": to })),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["keys"], 1);
    assert_eq!(body["from"], from);
    assert_eq!(cluster.slot_owner(slot).await?, to);
    let value: String = conn.get("{admin}:a").await?;
    assert_eq!(value, "value of {admin}:a");

    let (status, body) = admin(
        &emu,
        reqwest::Method::POST,
        "/admin/cluster/nodes/3/restart",
        None,
    )
    .await?;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    emu.shutdown().await;

    // Without cluster mode there is no cluster to drive.
    let standalone = Emulator::start(EmulatorConfig::default()).await?;
    assert!(standalone.cluster_nodes().is_empty());
    assert!(standalone.restart_node(0).await.is_err());
    let (status, _) = admin(
        &standalone,
        reqwest::Method::GET,
        "/admin/cluster/nodes",
        None,
    )
    .await?;
    assert_eq!(status, 404);
    standalone.shutdown().await;
    Ok(())
}
