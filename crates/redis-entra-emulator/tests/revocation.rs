//! Revocation of live sessions (issue 11, "Revocation"): removing or replacing a signing key
//! closes the connections authenticated with a token it verified, at once, not at the token's
//! `exp`; connections in with another key's token carry on.

mod support;

use std::time::Duration;

use anyhow::Result;
use redis_entra_emulator::directory::REDIS_RESOURCE;
use redis_entra_emulator::signing::TokenIssuer;
use redis_entra_emulator::stats::Stats;
use support::{ok, Conn, Env, Reply};

/// A connection authenticated with a token `issuer` signed.
async fn authenticated_with(env: &Env, issuer: &TokenIssuer) -> Result<Conn> {
    let mut conn = env.connect().await?;
    let token = issuer.issue(&env.principal, REDIS_RESOURCE)?.token;
    assert_eq!(conn.cmd(&["AUTH", env.oid(), &token]).await?, ok());
    Ok(conn)
}

#[tokio::test]
async fn removing_or_replacing_a_signing_key_closes_the_sessions_it_verified() -> Result<()> {
    let env = Env::start().await?;
    // A second key, trusted beside the first (a rollover in progress).
    let second = TokenIssuer::new(env.tenant_id(), Duration::from_secs(3600))?;
    env.validator.trust(&second)?;
    let mut first_a = authenticated_with(&env, &env.issuer).await?;
    let mut first_b = env.connect().await?;
    let token = env.issuer.issue(&env.principal, REDIS_RESOURCE)?.token;
    let hello = first_b
        .cmd(&["HELLO", "2", "AUTH", env.oid(), &token])
        .await?;
    assert!(matches!(hello, Reply::Array(_)), "{hello:?}");
    let mut second_a = authenticated_with(&env, &second).await?;
    // Subscribed (RESP2): closed all the same.
    let mut second_sub = authenticated_with(&env, &second).await?;
    second_sub
        .send(&support::encode(&["SUBSCRIBE", "news"]))
        .await?;
    assert!(matches!(second_sub.read().await?, Reply::Array(_)));

    // The first key is removed: its two sessions are closed without a reply, the others serve.
    assert!(env.validator.remove_key(env.issuer.kid()));
    assert_eq!(first_a.closed().await?, b"");
    assert_eq!(first_b.closed().await?, b"");
    assert_eq!(second_a.cmd(&["PING"]).await?, Reply::Simple("PONG".into()));
    assert_eq!(Stats::get(&env.stats.closed_key_revoked), 2);

    // The second key is replaced under its kid: its sessions are closed too.
    let replacement = TokenIssuer::new(env.tenant_id(), Duration::from_secs(3600))?;
    env.validator
        .add_key(second.kid(), replacement.decoding_key()?);
    assert_eq!(second_a.closed().await?, b"");
    assert_eq!(second_sub.closed().await?, b"");
    assert_eq!(Stats::get(&env.stats.closed_key_revoked), 4);

    // A connection re-authenticated with a token of a key still trusted keeps serving.
    env.validator.trust(&env.issuer)?;
    let mut moved = authenticated_with(&env, &env.issuer).await?;
    let third = TokenIssuer::new(env.tenant_id(), Duration::from_secs(3600))?;
    env.validator.trust(&third)?;
    let token = third.issue(&env.principal, REDIS_RESOURCE)?.token;
    assert_eq!(moved.cmd(&["AUTH", env.oid(), &token]).await?, ok());
    assert!(env.validator.remove_key(env.issuer.kid()));
    assert_eq!(moved.cmd(&["PING"]).await?, Reply::Simple("PONG".into()));
    assert_eq!(Stats::get(&env.stats.closed_key_revoked), 4);
    Ok(())
}
