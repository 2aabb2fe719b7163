//! The gateway's token checks beyond the signature (issue 11, "Token checks"): `aud` a single
//! string, a maximum lifetime, issuers per `ver` as Entra issues them; and the verification
//! limits (RSA off the runtime threads, a bound on failed verifications per connection).
//! Every case goes through real TLS against a gateway, asserts Redis' exact `WRONGPASS` text
//! and that the gateway keeps serving.

mod support;

use anyhow::Result;
use redis_entra_emulator::directory::REDIS_RESOURCE;
use redis_entra_emulator::gateway::MAX_FAILED_AUTH_PER_CONNECTION;
use redis_entra_emulator::signing::now_secs;
use serde_json::json;
use support::{bulk, encode, ok, Env, Reply, WRONGPASS};

/// Sends `AUTH` with each token on a fresh connection and checks the reply.
async fn expect_auth(env: &Env, cases: &[(&str, String)], expected: &Reply) -> Result<()> {
    for (what, token) in cases {
        let mut conn = env.connect().await?;
        assert_eq!(
            &conn.cmd(&["AUTH", env.oid(), token]).await?,
            expected,
            "AUTH, {what}"
        );
        let mut conn = env.connect().await?;
        let hello = conn.cmd(&["HELLO", "2", "AUTH", env.oid(), token]).await?;
        if expected == &ok() {
            assert!(matches!(hello, Reply::Array(_)), "HELLO, {what}: {hello:?}");
        } else {
            assert_eq!(&hello, expected, "HELLO, {what}");
        }
    }
    Ok(())
}

fn refused() -> Reply {
    Reply::Error(WRONGPASS.into())
}

#[tokio::test]
async fn an_audience_array_gets_wrongpass() -> Result<()> {
    let env = Env::start().await?;
    let mut bystander = env.authenticated().await?;
    let refused_cases = vec![
        (
            "aud = [redis]",
            env.signed_with(|c| {
                c.insert("aud".into(), json!([REDIS_RESOURCE]));
            })?,
        ),
        (
            "aud = [redis, another api]",
            env.signed_with(|c| {
                c.insert(
                    "aud".into(),
                    json!([REDIS_RESOURCE, "https://graph.microsoft.com"]),
                );
            })?,
        ),
    ];
    expect_auth(&env, &refused_cases, &refused()).await?;
    let accepted = vec![("aud = redis, a string", env.signed_with(|_| {})?)];
    expect_auth(&env, &accepted, &ok()).await?;
    assert_eq!(
        bystander.cmd(&["PING"]).await?,
        Reply::Simple("PONG".into())
    );
    Ok(())
}

#[tokio::test]
async fn a_token_living_longer_than_the_maximum_gets_wrongpass() -> Result<()> {
    let env = Env::start().await?;
    let mut bystander = env.authenticated().await?;
    let day = 24 * 3600;
    let now = now_secs();
    let refused_cases = vec![
        (
            "exp a year away",
            env.signed_with(|c| {
                c.insert("exp".into(), json!(now + 365 * day));
            })?,
        ),
        (
            "exp = u64::MAX",
            env.signed_with(|c| {
                c.insert("exp".into(), json!(u64::MAX));
            })?,
        ),
        (
            "exp - iat = 24 h + 1 min",
            env.signed_with(|c| {
                c.insert("exp".into(), json!(now + day + 60));
            })?,
        ),
        (
            "iat and nbf moved to an hour before a far exp",
            env.signed_with(|c| {
                let exp = now + 30 * day;
                c.insert("exp".into(), json!(exp));
                c.insert("iat".into(), json!(exp - 3600));
                c.insert("nbf".into(), json!(now));
            })?,
        ),
        (
            "no iat, no nbf, exp two days away",
            env.signed_with(|c| {
                c.remove("iat");
                c.remove("nbf");
                c.insert("exp".into(), json!(now + 2 * day));
            })?,
        ),
    ];
    expect_auth(&env, &refused_cases, &refused()).await?;
    // A managed identity's 24 h token is fine.
    let accepted = vec![(
        "exp - iat = 24 h",
        env.signed_with(|c| {
            c.insert("exp".into(), json!(now + day));
        })?,
    )];
    expect_auth(&env, &accepted, &ok()).await?;
    assert_eq!(
        bystander.cmd(&["PING"]).await?,
        Reply::Simple("PONG".into())
    );
    Ok(())
}

#[tokio::test]
async fn issuers_are_checked_per_token_version_as_entra_issues_them() -> Result<()> {
    let env = Env::start().await?;
    let mut bystander = env.authenticated().await?;
    let tid = env.tenant_id();
    let v1 = format!("https://sts.windows.net/{tid}/");
    let v2 = format!("https://login.microsoftonline.com/{tid}/v2.0");
    let emulator_v2 = format!("{}/{tid}/v2.0", support::AUTHORITY);
    let with = |ver: Option<&str>, iss: &str| {
        env.signed_with(|c| {
            c.insert("iss".into(), json!(iss));
            match ver {
                Some(v) => c.insert("ver".into(), json!(v)),
                None => c.remove("ver"),
            };
        })
    };
    let accepted = vec![
        ("ver 1.0, v1 issuer", with(Some("1.0"), &v1)?),
        ("ver 2.0, Entra's v2 issuer", with(Some("2.0"), &v2)?),
        (
            "ver 2.0, the emulator's v2 issuer",
            with(Some("2.0"), &emulator_v2)?,
        ),
    ];
    expect_auth(&env, &accepted, &ok()).await?;
    let refused_cases = vec![
        ("ver 1.0, v2 issuer", with(Some("1.0"), &v2)?),
        (
            "ver 1.0, the emulator's v2 issuer",
            with(Some("1.0"), &emulator_v2)?,
        ),
        ("ver 2.0, v1 issuer", with(Some("2.0"), &v1)?),
        ("no ver, v1 issuer", with(None, &v1)?),
        ("ver 3.0, v2 issuer", with(Some("3.0"), &v2)?),
        (
            "ver 2.0, another tenant's v2 issuer",
            with(
                Some("2.0"),
                &format!(
                    "https://login.microsoftonline.com/{}/v2.0",
                    uuid::Uuid::new_v4()
                ),
            )?,
        ),
        (
            "ver 2.0, v2 issuer without /v2.0",
            with(
                Some("2.0"),
                &format!("https://login.microsoftonline.com/{tid}/"),
            )?,
        ),
    ];
    expect_auth(&env, &refused_cases, &refused()).await?;
    assert_eq!(
        bystander.cmd(&["PING"]).await?,
        Reply::Simple("PONG".into())
    );
    Ok(())
}

/// A token with a valid header (the trusted `kid`) and claims, and a garbage signature of the
/// right length: refused only after an RSA verification.
fn garbage_signed(env: &Env, n: usize) -> Result<String> {
    use base64::Engine;
    let good = env.signed_with(|c| {
        c.insert("uti".into(), json!(n));
    })?;
    let (signed, _) = good
        .rsplit_once('.')
        .ok_or_else(|| anyhow::anyhow!("not a JWT"))?;
    let garbage = vec![0x5a_u8; 256];
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(garbage);
    Ok(format!("{signed}.{signature}"))
}

#[tokio::test]
async fn garbage_signed_auths_are_bounded_per_connection_and_do_not_stall_others() -> Result<()> {
    const ATTACKERS: usize = 8;
    const ATTEMPTS: usize = 40;
    let bound = MAX_FAILED_AUTH_PER_CONNECTION as usize;
    let env = Env::start().await?;
    let mut bystander = env.authenticated().await?;
    let before = env.validator.verifications_run();

    // Each attacker pipelines 40 garbage-signed AUTHs in one write, all at once.
    let mut attacks = tokio::task::JoinSet::new();
    for a in 0..ATTACKERS {
        let mut conn = env.connect().await?;
        let mut burst = Vec::new();
        for i in 0..ATTEMPTS {
            let token = garbage_signed(&env, a * ATTEMPTS + i)?;
            burst.extend_from_slice(&encode(&["AUTH", env.oid(), &token]));
        }
        attacks.spawn(async move {
            conn.send(&burst).await?;
            conn.closed().await
        });
    }
    // Meanwhile the bystander's commands are answered.
    for i in 0..20 {
        assert_eq!(
            bystander.cmd(&["INCR", "bystander"]).await?,
            Reply::Int(i + 1)
        );
    }
    while let Some(sent) = attacks.join_next().await {
        let sent = String::from_utf8(sent??)?;
        assert_eq!(
            sent.matches(&format!("-{WRONGPASS}\r\n")).count(),
            bound,
            "each attacker gets {bound} WRONGPASS, then is closed"
        );
        assert_eq!(sent.len(), bound * (WRONGPASS.len() + 3), "nothing else");
    }
    let run = env.validator.verifications_run() - before;
    assert!(
        run <= (ATTACKERS * bound) as u64,
        "{run} verifications for {ATTACKERS} attackers (bound {bound} each)"
    );
    let peak = env.validator.peak_concurrent_verifications();
    assert!(
        (1..=env.validator.verification_slots()).contains(&peak),
        "{peak} verifications at once, {} slots",
        env.validator.verification_slots()
    );

    // On an authenticated connection: every AUTH gets WRONGPASS in order, only the first
    // `bound` cost a verification, and the connection keeps serving.
    let mut authed = env.authenticated().await?;
    let before = env.validator.verifications_run();
    let mut burst = Vec::new();
    for i in 0..ATTEMPTS {
        let token = garbage_signed(&env, 10_000 + i)?;
        burst.extend_from_slice(&encode(&["AUTH", env.oid(), &token]));
    }
    authed.send(&burst).await?;
    for _ in 0..ATTEMPTS {
        assert_eq!(authed.read().await?, refused());
    }
    assert_eq!(authed.cmd(&["GET", "bystander"]).await?, bulk("20"));
    let run = env.validator.verifications_run() - before;
    assert!(run <= bound as u64, "{run} verifications (bound {bound})");
    assert_eq!(
        bystander.cmd(&["PING"]).await?,
        Reply::Simple("PONG".into())
    );
    Ok(())
}
