//! Azure Managed Redis' Enterprise cluster policy (`GatewayConfig::cluster_policy`,
//! `--cluster-policy enterprise`), through real TLS connections: one endpoint, and what Redis
//! Enterprise's proxy refuses across hash slots (`src/gateway/slots.rs` and docs/EMULATOR.md
//! give the sources). The slots of `user:1` (10778) and `user:1:books` (3197) are those of
//! Redis' own example.

mod support;

use anyhow::{anyhow, Result};
use redis_entra_emulator::directory::REDIS_RESOURCE;
use redis_entra_emulator::gateway::{ClusterPolicy, GatewayConfig};
use redis_entra_emulator::profile::Profile;
use redis_entra_emulator::{Emulator, EmulatorConfig};
use support::{bulk, connect_to, encode, ok, Conn, Reply};

const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

async fn start() -> Result<(Emulator, Conn)> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let emu = Emulator::start(EmulatorConfig {
        gateway: GatewayConfig {
            profile: Profile::AzureManagedRedis,
            cluster_policy: Some(ClusterPolicy::Enterprise),
            ..GatewayConfig::default()
        },
        // One endpoint: no cluster behind it.
        gateway_port: 0,
        ..EmulatorConfig::default()
    })
    .await?;
    let sp = emu.service_principal().clone();
    let token = emu.issuer().issue(&sp, REDIS_RESOURCE)?.token;
    let mut conn = connect_to(emu.gateway_addr().port(), emu.ca_pem()).await?;
    let reply = conn.cmd(&["AUTH", &sp.object_id, &token]).await?;
    if reply != ok() {
        return Err(anyhow!("AUTH was refused: {reply:?}"));
    }
    Ok((emu, conn))
}

fn queued() -> Reply {
    Reply::Simple("QUEUED".into())
}

fn crossslot() -> Reply {
    Reply::Error(CROSSSLOT.into())
}

#[tokio::test]
async fn the_proxy_splits_six_commands_and_refuses_other_cross_slot_ones() -> Result<()> {
    let (emu, mut conn) = start().await?;
    // DEL, EXISTS, MGET, MSET, TOUCH and UNLINK take keys in any slots.
    assert_eq!(
        conn.cmd(&["MSET", "user:1", "a", "user:1:books", "b"])
            .await?,
        ok()
    );
    assert_eq!(
        conn.cmd(&["MGET", "user:1", "user:1:books"]).await?,
        Reply::Array(Some(vec![bulk("a"), bulk("b")]))
    );
    for command in ["EXISTS", "TOUCH"] {
        assert_eq!(
            conn.cmd(&[command, "user:1", "user:1:books"]).await?,
            Reply::Int(2),
            "{command}"
        );
    }
    // Every other command with keys in two slots is refused, and runs nothing.
    assert_eq!(
        conn.cmd(&["RENAME", "user:1", "user:1:books"]).await?,
        crossslot()
    );
    assert_eq!(
        conn.cmd(&["SUNION", "user:1", "user:1:books"]).await?,
        crossslot()
    );
    assert_eq!(
        conn.cmd(&["BLPOP", "user:1", "user:1:books", "1"]).await?,
        crossslot()
    );
    assert_eq!(
        conn.cmd(&["MSETNX", "user:1", "x", "user:1:books", "y"])
            .await?,
        crossslot()
    );
    // Keys found from the arguments: EVAL's key count, ZUNIONSTORE's destination and count,
    // XREAD's STREAMS, SORT's STORE.
    let script = "return redis.call('GET', KEYS[1])";
    assert_eq!(
        conn.cmd(&["EVAL", script, "2", "user:1", "user:1:books"])
            .await?,
        crossslot()
    );
    assert_eq!(
        conn.cmd(&["ZUNIONSTORE", "user:1", "1", "user:1:books"])
            .await?,
        crossslot()
    );
    assert_eq!(
        conn.cmd(&["XREAD", "STREAMS", "user:1", "user:1:books", "0", "0"])
            .await?,
        crossslot()
    );
    assert_eq!(
        conn.cmd(&["SORT", "user:1", "STORE", "user:1:books"])
            .await?,
        crossslot()
    );
    // Nothing ran: the values are as MSET left them.
    assert_eq!(
        conn.cmd(&["MGET", "user:1", "user:1:books"]).await?,
        Reply::Array(Some(vec![bulk("a"), bulk("b")]))
    );
    // One slot, through a hash tag: allowed.
    assert_eq!(
        conn.cmd(&["MSET", "{user:1}:a", "1", "{user:1}:b", "2"])
            .await?,
        ok()
    );
    assert_eq!(
        conn.cmd(&["EVAL", script, "2", "{user:1}:a", "{user:1}:b"])
            .await?,
        bulk("1")
    );
    assert_eq!(
        conn.cmd(&["RENAME", "{user:1}:a", "{user:1}:c"]).await?,
        ok()
    );
    // A pipeline may span slots.
    let mut pipeline = encode(&["GET", "user:1"]);
    pipeline.extend(encode(&["GET", "user:1:books"]));
    conn.send(&pipeline).await?;
    assert_eq!(conn.read().await?, bulk("a"));
    assert_eq!(conn.read().await?, bulk("b"));
    assert_eq!(
        conn.cmd(&["DEL", "user:1", "user:1:books"]).await?,
        Reply::Int(2)
    );
    // One endpoint: no cluster API.
    assert!(matches!(
        conn.cmd(&["CLUSTER", "SLOTS"]).await?,
        Reply::Error(_)
    ));
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_transaction_keeps_to_the_slot_of_its_first_key() -> Result<()> {
    let (emu, mut conn) = start().await?;
    assert_eq!(conn.cmd(&["MULTI"]).await?, ok());
    assert_eq!(
        conn.cmd(&["SET", "user:1", "John Smith, London"]).await?,
        queued()
    );
    // Refused when queued, in the proxy's words; the transaction is then aborted.
    assert_eq!(
        conn.cmd(&["SET", "user:1:books", "56456"]).await?,
        Reply::Error(format!(
            "{CROSSSLOT} (context='within MULTI', command='SET', original-slot='10778', \
             wrong-slot='3197', first-key='user:1', violating-key='user:1:books')"
        ))
    );
    let exec = conn.cmd(&["EXEC"]).await?;
    assert!(
        matches!(&exec, Reply::Error(e) if e.starts_with("EXECABORT")),
        "{exec:?}"
    );
    assert_eq!(conn.cmd(&["GET", "user:1"]).await?, Reply::Bulk(None));

    // Inside MULTI even MGET keeps to one slot.
    assert_eq!(conn.cmd(&["MULTI"]).await?, ok());
    let mget = conn.cmd(&["MGET", "user:1", "user:1:books"]).await?;
    assert!(
        matches!(&mget, Reply::Error(e) if e.starts_with(&format!("{CROSSSLOT} (context='within MULTI', command='MGET'"))),
        "{mget:?}"
    );
    assert_eq!(conn.cmd(&["DISCARD"]).await?, ok());

    // WATCH counts: its keys and the transaction's share one slot.
    assert_eq!(
        conn.cmd(&["WATCH", "user:1", "user:1:books"]).await?,
        crossslot()
    );
    assert_eq!(conn.cmd(&["WATCH", "{t}:a"]).await?, ok());
    assert_eq!(conn.cmd(&["MULTI"]).await?, ok());
    let other = conn.cmd(&["SET", "user:1", "x"]).await?;
    assert!(
        matches!(&other, Reply::Error(e) if e.contains("first-key='{t}:a'")),
        "{other:?}"
    );
    assert_eq!(conn.cmd(&["DISCARD"]).await?, ok());

    // A transaction within one slot runs; after it, a new one may pick another slot.
    assert_eq!(conn.cmd(&["MULTI"]).await?, ok());
    assert_eq!(conn.cmd(&["SET", "{t}:a", "1"]).await?, queued());
    assert_eq!(conn.cmd(&["INCR", "{t}:a"]).await?, queued());
    assert_eq!(conn.cmd(&["PING"]).await?, queued());
    assert_eq!(
        conn.cmd(&["EXEC"]).await?,
        Reply::Array(Some(vec![
            ok(),
            Reply::Int(2),
            Reply::Simple("PONG".into())
        ]))
    );
    assert_eq!(conn.cmd(&["MULTI"]).await?, ok());
    assert_eq!(conn.cmd(&["SET", "user:1", "y"]).await?, queued());
    assert_eq!(conn.cmd(&["EXEC"]).await?, Reply::Array(Some(vec![ok()])));
    emu.shutdown().await;
    Ok(())
}

/// A request too large to hold is checked by its start (its key comes before its value); a
/// refused one is dropped as it streams in, and the connection goes on in step.
#[tokio::test]
async fn a_large_request_in_a_transaction_is_checked_by_its_key() -> Result<()> {
    let (emu, mut conn) = start().await?;
    let big = "v".repeat(3 * 1024 * 1024);
    assert_eq!(conn.cmd(&["MULTI"]).await?, ok());
    assert_eq!(conn.cmd(&["SET", "user:1", "small"]).await?, queued());
    let refused = conn.cmd(&["SET", "user:1:books", &big]).await?;
    assert!(
        matches!(&refused, Reply::Error(e) if e.contains("violating-key='user:1:books'")),
        "{refused:?}"
    );
    let exec = conn.cmd(&["EXEC"]).await?;
    assert!(
        matches!(&exec, Reply::Error(e) if e.starts_with("EXECABORT")),
        "{exec:?}"
    );
    assert_eq!(conn.cmd(&["EXISTS", "user:1:books"]).await?, Reply::Int(0));

    // The same value within the slot is queued and stored.
    assert_eq!(conn.cmd(&["MULTI"]).await?, ok());
    assert_eq!(conn.cmd(&["SET", "{b}:1", "small"]).await?, queued());
    assert_eq!(conn.cmd(&["SET", "{b}:2", &big]).await?, queued());
    assert_eq!(
        conn.cmd(&["EXEC"]).await?,
        Reply::Array(Some(vec![ok(), ok()]))
    );
    assert_eq!(
        conn.cmd(&["STRLEN", "{b}:2"]).await?,
        Reply::Int(big.len() as i64)
    );
    assert_eq!(conn.cmd(&["PING"]).await?, Reply::Simple("PONG".into()));
    emu.shutdown().await;
    Ok(())
}
