//! Expiry inside the server: a connection is closed when its token expires, unless a newer
//! valid token was sent with `AUTH` on it; a refused re-`AUTH` leaves it as it was; `RESET` or
//! a password `AUTH` ends the token's session (and its deadline).

mod support;

use std::time::Duration;

use anyhow::Result;
use support::{Minter, Server, WRONGPASS};

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_is_closed_at_expiry_unless_a_fresher_token_came() -> Result<()> {
    let emulator = support::emulator(Duration::from_secs(3600)).await;
    let server = Server::for_emulator(&emulator, &["skew", "0"])?;
    let sp = emulator.service_principal();
    let oid = sp.object_id.as_str();
    server.create_user(oid)?;
    let mut admin = server.connect()?;
    admin
        .cmd(&[
            "ACL", "SETUSER", "alice", "on", ">hunter2", "+@all", "allkeys",
        ])
        .unwrap();
    let minter = Minter {
        emulator: &emulator,
    };
    let short = minter.token(sp, 3, |_| {});
    let long = minter.token(sp, 3600, |_| {});

    let mut once = server.connect()?;
    once.auth(oid, &short).unwrap();
    let mut refreshed = server.connect()?;
    refreshed.auth(oid, &short).unwrap();
    refreshed.auth(oid, &long).unwrap();
    let mut refused_reauth = server.connect()?;
    refused_reauth.auth(oid, &short).unwrap();
    assert_eq!(
        refused_reauth.auth(oid, &minter.token(sp, -60, |_| {})),
        Err(WRONGPASS.into())
    );
    assert_eq!(
        refused_reauth.whoami().unwrap(),
        oid,
        "a refused AUTH changes nothing"
    );
    let mut reset = server.connect()?;
    reset.auth(oid, &short).unwrap();
    reset.cmd(&["RESET"]).unwrap();
    let mut password = server.connect()?;
    password.auth(oid, &short).unwrap();
    password.auth("alice", "hunter2").unwrap();

    server.wait_for("the connection authenticated once to be closed", || {
        once.is_closed()
    })?;
    server.wait_for(
        "the connection whose re-AUTH was refused to be closed",
        || refused_reauth.is_closed(),
    )?;
    assert_eq!(
        refreshed.whoami().unwrap(),
        oid,
        "a fresher token moved the deadline"
    );
    assert_eq!(reset.whoami().unwrap(), "default");
    assert_eq!(password.whoami().unwrap(), "alice");
    assert_eq!(server.stat("expired_closes")?, 2);
    assert_eq!(
        server.stat("sessions")?,
        1,
        "only the refreshed connection is tracked"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_connection_is_forgotten_at_once() -> Result<()> {
    let emulator = support::emulator(Duration::from_secs(3600)).await;
    let server = Server::for_emulator(&emulator, &[])?;
    let sp = emulator.service_principal();
    server.create_user(&sp.object_id)?;
    let token = Minter {
        emulator: &emulator,
    }
    .token(sp, 3600, |_| {});
    // Many short connections with day-long tokens must not pile up until their deadlines.
    for _ in 0..20 {
        let mut conn = server.connect()?;
        conn.auth(&sp.object_id, &token).unwrap();
    }
    server.wait_for("every closed connection to be forgotten", || {
        server.stat("sessions").unwrap_or(u64::MAX) == 0
    })?;
    Ok(())
}
