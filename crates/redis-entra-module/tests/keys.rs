//! Signing keys come over HTTPS off the server's main thread: an `AUTH` whose key is not known
//! yet waits (blocked module auth) while the server keeps serving everyone else, and is
//! decided once the keys arrive.

mod support;

use std::time::Duration;

use anyhow::Result;
use support::{Gate, GateMode, Minter, Server};

#[tokio::test(flavor = "multi_thread")]
async fn an_auth_waits_for_the_keys_and_the_server_does_not() -> Result<()> {
    let emulator = support::emulator(Duration::from_secs(3600)).await;
    let authority: url::Url = emulator.authority().parse()?;
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], authority.port().unwrap_or(443)));
    // The authority is down when the module loads: no keys.
    let gate = Gate::start(target, GateMode::Refuse).await?;
    let server = Server::start(
        &support::valkey_server(),
        &emulator.ca_file(),
        &[
            "authority",
            &format!("https://localhost:{}", gate.port),
            "tenant",
            emulator.tenant_id(),
            "unknown-kid-interval",
            "0",
        ],
    )?;
    server.wait_for("the first fetch to fail", || {
        server.stat("key_refresh_failures").unwrap_or(0) >= 1
    })?;
    assert_eq!(server.stat("signing_keys")?, 0);
    let sp = emulator.service_principal();
    server.create_user(&sp.object_id)?;
    let token = Minter {
        emulator: &emulator,
    }
    .token(sp, 3600, |_| {});

    // Now it hangs: the AUTH waits for the fetch…
    gate.set(GateMode::Hold);
    let mut waiting = server.connect()?;
    let oid = sp.object_id.clone();
    let (hello_token, hello_oid) = (token.clone(), oid.clone());
    let auth = std::thread::spawn(move || {
        let r = waiting.auth(&oid, &token);
        (r, waiting)
    });
    let mut hello_waiting = server.connect()?;
    let hello = std::thread::spawn(move || {
        let r = hello_waiting.cmd(&["HELLO", "3", "AUTH", &hello_oid, &hello_token]);
        (r.map(|_| ()), hello_waiting)
    });
    server.wait_for("AUTH and HELLO AUTH to block", || {
        server.stat("blocked_auths").unwrap_or(0) == 2
    })?;
    // …while the server serves everyone else.
    let mut other = server.connect()?;
    for _ in 0..100 {
        assert_eq!(
            other.cmd(&["PING"]).unwrap(),
            redis::Value::SimpleString("PONG".into())
        );
    }
    assert!(
        !auth.is_finished(),
        "the AUTH is still waiting for the keys"
    );
    assert!(!hello.is_finished(), "so is HELLO AUTH");
    // The authority answers: the keys arrive and the AUTH is decided.
    gate.set(GateMode::Pass);
    let (result, mut conn) = auth.join().expect("the AUTH thread");
    result.expect("AUTH once the keys are known");
    assert_eq!(conn.whoami().unwrap(), sp.object_id);
    let (result, mut conn) = hello.join().expect("the HELLO thread");
    result.expect("HELLO 3 AUTH once the keys are known");
    assert_eq!(conn.whoami().unwrap(), sp.object_id);
    assert!(server.stat("signing_keys")? >= 1);
    assert_eq!(server.stat("accepted")?, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_of_unknown_kids_costs_no_fetch_within_the_interval() -> Result<()> {
    let emulator = support::emulator(Duration::from_secs(3600)).await;
    // The default unknown-kid-interval (10 s).
    let server = Server::for_emulator(&emulator, &[])?;
    server.wait_for("the first fetch", || {
        server.stat("key_refreshes").unwrap_or(0) >= 1
    })?;
    let sp = emulator.service_principal();
    server.create_user(&sp.object_id)?;
    let mut conn = server.connect()?;
    for _ in 0..50 {
        // A fresh key each time: a kid nobody publishes.
        let forger = redis_entra_emulator::signing::TokenIssuer::new(
            emulator.tenant_id(),
            Duration::from_secs(3600),
        )?;
        let token = forger.sign(&emulator.issuer().claims_for(
            sp,
            redis_entra_emulator::directory::REDIS_RESOURCE,
            3600,
        ))?;
        assert_eq!(
            conn.auth(&sp.object_id, &token),
            Err(support::WRONGPASS.into())
        );
    }
    assert_eq!(server.stat("refused_unknown_key")?, 50);
    assert_eq!(
        server.stat("blocked_auths")?,
        0,
        "no AUTH waited: a fetch could not help"
    );
    assert_eq!(
        server.stat("key_refreshes")?,
        1,
        "no fetch beyond the first"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_fetched_again_every_refresh_interval() -> Result<()> {
    let emulator = support::emulator(Duration::from_secs(3600)).await;
    let server = Server::for_emulator(&emulator, &["refresh-interval", "1"])?;
    server.wait_for("three fetches", || {
        server.stat("key_refreshes").unwrap_or(0) >= 3
    })?;
    assert_eq!(server.stat("key_refresh_failures")?, 0);
    Ok(())
}
