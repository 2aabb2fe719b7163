//! Where the gateway's sessions run (`src/gateway/workers.rs`: threads of their own, one
//! single-threaded runtime each) and how they reach the backend (`src/backend/connect.rs`: a
//! unix socket registered for reading, writability asked for only when a write would block),
//! tried where it could break: the runtime that started the gateway dying under live sessions,
//! and a backend that stops reading in the middle of a large request.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use support::{encode, ok, Env, Reply};
use tokio::io::AsyncReadExt;

/// The backend's pid, from its own `INFO server`.
async fn backend_pid(conn: &mut support::Conn) -> Result<u32> {
    let Reply::Bulk(Some(info)) = conn.cmd(&["INFO", "server"]).await? else {
        bail!("INFO server did not answer with a bulk string");
    };
    let info = String::from_utf8(info)?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
        .ok_or_else(|| anyhow!("no process_id in INFO server"))
}

fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()?;
    if !status.success() {
        bail!("kill {sig} {pid} failed");
    }
    Ok(())
}

/// Sessions live on the gateway's own threads, but not beyond the runtime that started the
/// gateway: when that runtime dies, its accept loop goes and takes the sessions with it, so a
/// client sees its connection closed rather than served by a gateway nobody can stop.
#[tokio::test]
async fn sessions_end_with_the_runtime_that_started_the_gateway() -> Result<()> {
    let host = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let env = host.spawn(Env::start()).await??;
    let mut conn = env.authenticated().await?;
    assert_eq!(conn.cmd(&["SET", "k", "v"]).await?, ok());

    host.shutdown_background();
    let mut rest = Vec::new();
    let mut stream = conn.into_stream();
    let closed = tokio::time::timeout(support::WAIT, stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the session outlived its gateway's runtime");
    drop(env);
    Ok(())
}

/// Dropping the runtime that runs the gateway's listener drops every session before the drop
/// returns: nothing a session holds outlives it, not even for the moment before a process
/// exits (a test process used to leave its backend `redis-server` behind that way, the last
/// owner of the backend being a session on a gateway thread).
#[test]
fn dropping_the_gateways_runtime_drops_its_sessions_before_it_returns() -> Result<()> {
    let host = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let env = host.block_on(Env::start())?;
    let mut conn = client.block_on(env.authenticated())?;
    assert_eq!(
        client.block_on(conn.cmd(&["PING"]))?,
        Reply::Simple("PONG".into())
    );
    let backend = env.backend().clone();
    // This test, the `Env`, the listener and the session.
    assert!(
        Arc::strong_count(&backend) >= 4,
        "{}",
        Arc::strong_count(&backend)
    );

    drop(host);
    assert_eq!(
        Arc::strong_count(&backend),
        2,
        "something of the gateway still holds the backend after its runtime was dropped"
    );
    drop(conn);
    drop(env);
    Ok(())
}

/// A request larger than the socket buffers, sent while the backend is stopped: the gateway's
/// write to the backend blocks, waits for room, and goes on when the backend reads again; the
/// value arrives whole and the connection stays in step.
#[tokio::test]
async fn a_write_the_backend_cannot_take_yet_waits_for_room() -> Result<()> {
    let env = Env::start().await?;
    let mut conn = env.authenticated().await?;
    let pid = backend_pid(&mut conn).await?;
    let value = "x".repeat(32 * 1024 * 1024);
    let request = encode(&["SET", "big", &value]);

    signal(pid, "-STOP")?;
    let resume = scopeguard(pid);
    let (reader, mut writer) = tokio::io::split(conn.into_stream());
    let sender = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        writer.write_all(&request).await?;
        writer.flush().await?;
        Ok::<_, std::io::Error>(writer)
    });
    // 32 MiB cannot all be taken while Redis is stopped (its socket holds a few hundred KiB,
    // the TCP buffers a few MiB): the send is still going.
    let mut sender = sender;
    let stalled = tokio::time::timeout(Duration::from_millis(300), &mut sender).await;
    assert!(stalled.is_err(), "32 MiB went through a stopped backend");
    drop(resume);

    let writer = tokio::time::timeout(support::WAIT * 2, sender).await???;
    let mut conn = support::Conn::from_stream(reader.unsplit(writer));
    assert_eq!(conn.read().await?, ok());
    assert_eq!(
        conn.cmd(&["STRLEN", "big"]).await?,
        Reply::Int(value.len() as i64)
    );
    assert_eq!(conn.cmd(&["PING"]).await?, Reply::Simple("PONG".into()));
    Ok(())
}

/// Sends `SIGCONT` to `pid` when dropped, so that a failing test never leaves Redis stopped.
fn scopeguard(pid: u32) -> impl Drop {
    struct Resume(u32);
    impl Drop for Resume {
        fn drop(&mut self) {
            let _ = signal(self.0, "-CONT");
        }
    }
    Resume(pid)
}
