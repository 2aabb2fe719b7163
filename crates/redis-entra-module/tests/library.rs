//! The library's `EntraConnection` against Valkey with the module, across token rotations:
//! tokens from the emulator's Entra ID through a client secret, re-authenticated in place,
//! no command failed, no connection closed at expiry.

mod support;

use std::time::{Duration, Instant};

use anyhow::Result;
use redis::AsyncCommands;
use redis_entra::{EntraConnection, TokenEvent};
use support::Server;

#[tokio::test(flavor = "multi_thread")]
async fn entra_connection_keeps_working_across_ten_rotations() -> Result<()> {
    let emulator = support::emulator(Duration::from_secs(3)).await;
    let server = Server::for_emulator(&emulator, &[])?;
    let sp = emulator.service_principal();
    server.create_user(&sp.object_id)?;
    let (front, ca) = support::tls_front(server.port).await?;

    let (manager, connect) = support::library(&emulator, front, ca)?;
    let mut events = manager.events();
    let mut conn = EntraConnection::connect(connect, manager.clone()).await?;

    let (mut reauths, mut ok, mut failed) = (0u32, 0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut i = 0u64;
    while reauths < 10 {
        assert!(
            Instant::now() < deadline,
            "only {reauths} re-authentications in 90 s"
        );
        i += 1;
        let r: redis::RedisResult<String> = async {
            let _: () = conn.set("k", i).await?;
            conn.get("k").await
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
            if let TokenEvent::ConnectionReauthenticated { connection_id, .. } = ev {
                if connection_id == conn.id() {
                    reauths += 1;
                }
            }
            assert!(!matches!(ev, TokenEvent::Reconnected { .. }), "{ev:?}");
        }
        // Paces the traffic (not a wait for a state).
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(failed, 0, "{failed} of {} rounds failed", ok + failed);
    assert!(ok > 50);
    let whoami: String = redis::cmd("ACL")
        .arg("WHOAMI")
        .query_async(&mut conn)
        .await?;
    assert_eq!(whoami, sp.object_id);
    assert!(server.stat("accepted")? >= 11);
    assert_eq!(server.stat("expired_closes")?, 0);
    assert_eq!(server.stat("refused")?, 0);
    Ok(())
}
