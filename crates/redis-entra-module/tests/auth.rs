//! The module inside a real `valkey-server`, with the emulator's Entra ID as the authority:
//! who gets in, who gets Redis' own `WRONGPASS`, and what Redis' own semantics do around it
//! (`MULTI`, `RESET`, passwords that are not tokens).

mod support;

use std::time::Duration;

use anyhow::Result;
use base64::Engine;
use redis_entra_emulator::directory::REDIS_APP_ID;
use redis_entra_emulator::signing::TokenIssuer;
use redis_entra_emulator::Emulator;
use serde_json::json;
use support::{Conn, Minter, Server, WRONGPASS};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

struct Env {
    emulator: Emulator,
    server: Server,
    oid: String,
}

impl Env {
    async fn start() -> Result<Self> {
        let emulator = support::emulator(Duration::from_secs(3600)).await;
        let server = Server::for_emulator(&emulator, &["unknown-kid-interval", "0"])?;
        let oid = emulator.service_principal().object_id.clone();
        server.create_user(&oid)?;
        Ok(Self {
            emulator,
            server,
            oid,
        })
    }

    fn minter(&self) -> Minter<'_> {
        Minter {
            emulator: &self.emulator,
        }
    }

    /// A valid token for the service principal, its claims changed by `edit`.
    fn token(&self, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> String {
        self.minter()
            .token(self.emulator.service_principal(), 3600, edit)
    }

    fn connect(&self) -> Result<Conn> {
        self.server.connect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_makes_the_client_the_acl_user_named_by_its_oid() -> Result<()> {
    let env = Env::start().await?;
    let v1 = env.token(|_| {});
    let mut conn = env.connect()?;
    conn.auth(&env.oid, &v1).expect("AUTH with a v1 token");
    assert_eq!(conn.whoami().unwrap(), env.oid);
    assert_eq!(conn.cmd(&["SET", "k", "v"]).unwrap(), redis::Value::Okay);

    // A v2 token (issuer on the authority's host, audience the app id) through HELLO 3 AUTH.
    let issuer = format!(
        "{}/{}/v2.0",
        env.emulator.authority(),
        env.emulator.tenant_id()
    );
    let v2 = env.token(|c| {
        c.insert("ver".into(), json!("2.0"));
        c.insert("iss".into(), json!(issuer));
        c.insert("aud".into(), json!(REDIS_APP_ID));
    });
    let mut conn = env.connect()?;
    let hello = conn.cmd(&["HELLO", "3", "AUTH", &env.oid, &v2]);
    assert!(hello.is_ok(), "HELLO 3 AUTH with a v2 token: {hello:?}");
    assert_eq!(conn.whoami().unwrap(), env.oid);
    assert_eq!(env.server.stat("accepted")?, 2);
    // The log names neither token.
    let log = env.server.log_text();
    assert!(!log.contains(&v1) && !log.contains(&v2));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_attack_suite_gets_wrongpass_and_the_server_keeps_serving() -> Result<()> {
    let env = Env::start().await?;
    let mut bystander = env.connect()?;
    bystander.auth(&env.oid, &env.token(|_| {})).unwrap();

    let valid = env.token(|_| {});
    let (header, rest) = valid.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let payload_json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?;
    let kid = env.emulator.issuer().kid().to_string();
    let forged_signature = {
        let mut s = signature.as_bytes().to_vec();
        s[10] = if s[10] == b'A' { b'B' } else { b'A' };
        String::from_utf8(s)?
    };
    let hs256 = {
        let h = b64(json!({"alg": "HS256", "typ": "JWT", "kid": kid})
            .to_string()
            .as_bytes());
        let key = jsonwebtoken::EncodingKey::from_secret(b"the public key, as a secret");
        let claims: serde_json::Value = serde_json::from_slice(&payload_json)?;
        let mut hdr = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        hdr.kid = Some(kid.clone());
        let token = jsonwebtoken::encode(&hdr, &claims, &key)?;
        assert!(token.starts_with("eyJ") && h.starts_with("eyJ"));
        token
    };
    let other_key = TokenIssuer::new(env.emulator.tenant_id(), Duration::from_secs(3600))?;
    let unknown_kid = other_key.sign(&env.emulator.issuer().claims_for(
        env.emulator.service_principal(),
        redis_entra_emulator::directory::REDIS_RESOURCE,
        3600,
    ))?;
    let other_tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            env.minter()
                .token(env.emulator.service_principal(), -60, |_| {}),
            "expired",
        ),
        (
            "another tenant",
            env.token(|c| {
                c.insert("tid".into(), json!(other_tenant));
                c.insert(
                    "iss".into(),
                    json!(format!("https://sts.windows.net/{other_tenant}/")),
                );
            }),
            "tenant",
        ),
        (
            "another audience",
            env.token(|c| {
                c.insert("aud".into(), json!("https://graph.microsoft.com"));
            }),
            "audience",
        ),
        (
            "an audience array",
            env.token(|c| {
                c.insert("aud".into(), json!(["https://redis.azure.com"]));
            }),
            "claims",
        ),
        (
            "a v2 token with the v1 issuer",
            env.token(|c| {
                c.insert("ver".into(), json!("2.0"));
            }),
            "issuer",
        ),
        (
            "alg none",
            format!("{}.{payload}.", b64(br#"{"alg":"none","typ":"JWT"}"#)),
            "malformed",
        ),
        ("HS256 with the kid of the RSA key", hs256, "algorithm"),
        ("an unknown kid", unknown_kid, "unknown_key"),
        (
            "a forged signature",
            format!("{header}.{payload}.{forged_signature}"),
            "signature",
        ),
        (
            "a changed payload",
            format!(
                "{header}.{}.{signature}",
                b64(String::from_utf8(payload_json.clone())?
                    .replace(&env.oid, "00000000-0000-0000-0000-000000000000")
                    .as_bytes())
            ),
            "signature",
        ),
        (
            "oversized",
            format!("eyJ{}", "A".repeat(64 * 1024)),
            "oversized",
        ),
        (
            "living longer than a day",
            env.minter()
                .token(env.emulator.service_principal(), 3 * 24 * 3600, |_| {}),
            "lifetime",
        ),
    ];
    for (what, token, reason) in &cases {
        let before = env.server.stat(&format!("refused_{reason}"))?;
        let mut conn = env.connect()?;
        assert_eq!(
            conn.auth(&env.oid, token),
            Err(WRONGPASS.into()),
            "AUTH, {what}"
        );
        let hello = conn.cmd(&["HELLO", "3", "AUTH", &env.oid, token]);
        assert_eq!(hello, Err(WRONGPASS.into()), "HELLO AUTH, {what}");
        assert_eq!(
            conn.whoami().unwrap(),
            "default",
            "{what}: still the default user"
        );
        assert_eq!(
            env.server.stat(&format!("refused_{reason}"))?,
            before + 2,
            "{what} counted as {reason}"
        );
    }
    // A valid token with another user name, and a valid token whose oid has no ACL user.
    let mut conn = env.connect()?;
    assert_eq!(conn.auth("someone-else", &valid), Err(WRONGPASS.into()));
    let mi = env.emulator.managed_identity();
    let no_user = env.minter().token(mi, 3600, |_| {});
    assert_eq!(conn.auth(&mi.object_id, &no_user), Err(WRONGPASS.into()));
    assert_eq!(env.server.stat("refused_username")?, 1);
    assert_eq!(env.server.stat("refused_no_user")?, 1);
    assert_eq!(
        bystander.cmd(&["PING"]).unwrap(),
        redis::Value::SimpleString("PONG".into())
    );
    let log = env.server.log_text();
    for (what, token, _) in &cases {
        assert!(
            !log.contains(token.as_str()),
            "the log holds the token: {what}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_password_that_is_not_a_token_is_checked_by_the_server_itself() -> Result<()> {
    let env = Env::start().await?;
    let mut admin = env.connect()?;
    admin
        .cmd(&[
            "ACL", "SETUSER", "alice", "on", ">hunter2", "+@all", "allkeys",
        ])
        .unwrap();
    let mut conn = env.connect()?;
    assert_eq!(conn.auth("alice", "wrong"), Err(WRONGPASS.into()));
    conn.auth("alice", "hunter2").unwrap();
    assert_eq!(conn.whoami().unwrap(), "alice");
    assert_eq!(env.server.stat("passed_through")?, 2);
    assert_eq!(env.server.stat("refused")?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_auth_discard_and_reset_follow_redis() -> Result<()> {
    let env = Env::start().await?;
    let token = env.token(|_| {});
    // The module fetches the tenant's keys in the background after loading; a transaction
    // cannot wait for them (an_unknown_key_inside_exec_is_refused_without_blocking). One AUTH
    // outside a transaction waits until they are there.
    assert_eq!(
        env.connect()?.cmd(&["AUTH", &env.oid, &token]).unwrap(),
        redis::Value::Okay
    );
    let mut conn = env.connect()?;
    // AUTH inside MULTI is queued; DISCARD drops it.
    conn.cmd(&["MULTI"]).unwrap();
    assert_eq!(
        conn.cmd(&["AUTH", &env.oid, &token]).unwrap(),
        redis::Value::SimpleString("QUEUED".into())
    );
    conn.cmd(&["DISCARD"]).unwrap();
    assert_eq!(conn.whoami().unwrap(), "default");
    // …and EXEC runs it.
    conn.cmd(&["MULTI"]).unwrap();
    conn.cmd(&["AUTH", &env.oid, &token]).unwrap();
    let exec = conn.cmd(&["EXEC"]).unwrap();
    assert_eq!(exec, redis::Value::Array(vec![redis::Value::Okay]));
    assert_eq!(conn.whoami().unwrap(), env.oid);
    // A refused AUTH inside EXEC leaves the user as it was.
    conn.cmd(&["MULTI"]).unwrap();
    conn.cmd(&["AUTH", &env.oid, "eyJ.not.valid"]).unwrap();
    // (redis-rs turns the error inside EXEC's reply into the command's error.)
    assert_eq!(conn.cmd(&["EXEC"]), Err(WRONGPASS.into()));
    assert_eq!(conn.whoami().unwrap(), env.oid);
    // RESET: back to the default user, and no longer tracked for expiry.
    assert_eq!(env.server.stat("sessions")?, 1);
    assert_eq!(
        conn.cmd(&["RESET"]).unwrap(),
        redis::Value::SimpleString("RESET".into())
    );
    assert_eq!(conn.whoami().unwrap(), "default");
    assert_eq!(env.server.stat("sessions")?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_7_0_without_module_auth_refuses_to_load_with_a_clear_log_line() -> Result<()> {
    let emulator = support::emulator(Duration::from_secs(3600)).await;
    let redis_server = std::path::Path::new("/usr/bin/redis-server");
    assert!(
        redis_server.exists(),
        "redis-server (Debian's 7.0) is installed by scripts/setup"
    );
    let version = std::process::Command::new(redis_server)
        .arg("--version")
        .output()?;
    let version = String::from_utf8_lossy(&version.stdout).to_string();
    assert!(
        version.contains("v=7.0"),
        "this test is about Redis 7.0; found {version}"
    );
    let mut server = Server::spawn(
        redis_server,
        &emulator.ca_file(),
        &[
            "authority",
            emulator.authority(),
            "tenant",
            emulator.tenant_id(),
        ],
    )?;
    let status = server.wait_exit()?;
    assert!(!status.success());
    let log = server.log_text();
    assert!(
        log.contains("has no module authentication callbacks")
            && log.contains("needs Valkey >= 8 or Redis >= 7.2"),
        "{log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_arguments_stop_the_load_with_a_reason() -> Result<()> {
    let emulator = support::emulator(Duration::from_secs(3600)).await;
    let mut server = Server::spawn(
        &support::valkey_server(),
        &emulator.ca_file(),
        &["authority", emulator.authority()],
    )?;
    assert!(!server.wait_exit()?.success());
    assert!(
        server.log_text().contains("no tenant"),
        "{}",
        server.log_text()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn config_set_changes_the_maximum_lifetime_at_run_time() -> Result<()> {
    let env = Env::start().await?;
    let mut admin = env.connect()?;
    let get = |admin: &mut Conn, name: &str| admin.cmd(&["CONFIG", "GET", name]);
    assert_eq!(
        get(&mut admin, "entra.max-lifetime").unwrap(),
        redis::Value::Array(vec![
            redis::Value::BulkString(b"entra.max-lifetime".to_vec()),
            redis::Value::BulkString(b"86400".to_vec()),
        ])
    );
    let hour_long = env.token(|_| {});
    // Down to ten minutes: an hour-long token lives too long.
    admin
        .cmd(&["CONFIG", "SET", "entra.max-lifetime", "600"])
        .unwrap();
    let mut conn = env.connect()?;
    assert_eq!(conn.auth(&env.oid, &hour_long), Err(WRONGPASS.into()));
    assert_eq!(env.server.stat("refused_lifetime")?, 1);
    admin
        .cmd(&["CONFIG", "SET", "entra.max-lifetime", "86400"])
        .unwrap();
    conn.auth(&env.oid, &hour_long).unwrap();
    // Out of range: refused with the range.
    let e = admin
        .cmd(&["CONFIG", "SET", "entra.refresh-interval", "0"])
        .unwrap_err();
    assert!(e.contains("entra.refresh-interval"), "{e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_id_allow_list_refuses_other_applications() -> Result<()> {
    let emulator = support::emulator(Duration::from_secs(3600)).await;
    let sp = emulator.service_principal();
    let mi = emulator.managed_identity();
    let server = Server::for_emulator(&emulator, &["app-id", &sp.client_id])?;
    server.create_user(&sp.object_id)?;
    server.create_user(&mi.object_id)?;
    let minter = Minter {
        emulator: &emulator,
    };
    let mut conn = server.connect()?;
    conn.auth(&sp.object_id, &minter.token(sp, 3600, |_| {}))
        .expect("the allowed application");
    assert_eq!(
        conn.auth(&mi.object_id, &minter.token(mi, 3600, |_| {})),
        Err(WRONGPASS.into())
    );
    // A v2 token names its application in azp.
    let v2 = minter.token(sp, 3600, |c| {
        let appid = c.remove("appid");
        c.insert("azp".into(), appid.unwrap_or_default());
        c.insert("ver".into(), json!("2.0"));
        c.insert(
            "iss".into(),
            json!(format!(
                "{}/{}/v2.0",
                emulator.authority(),
                emulator.tenant_id()
            )),
        );
    });
    conn.auth(&sp.object_id, &v2)
        .expect("azp of the allowed application");
    assert_eq!(conn.whoami().unwrap(), sp.object_id);
    assert_eq!(server.stat("refused_application")?, 1);
    Ok(())
}

/// A transaction cannot block: a token whose `kid` is unknown inside `MULTI`/`EXEC` is refused
/// (`WRONGPASS`) rather than left to wait for a key fetch, which the server would answer with
/// its "Blocking module command called from transaction" error.
#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_key_inside_exec_is_refused_without_blocking() -> Result<()> {
    let env = Env::start().await?;
    let other_key = TokenIssuer::new(env.emulator.tenant_id(), Duration::from_secs(3600))?;
    let unknown_kid = other_key.sign(&env.emulator.issuer().claims_for(
        env.emulator.service_principal(),
        redis_entra_emulator::directory::REDIS_RESOURCE,
        3600,
    ))?;
    let mut conn = env.connect()?;
    conn.cmd(&["MULTI"]).unwrap();
    conn.cmd(&["AUTH", &env.oid, &unknown_kid]).unwrap();
    assert_eq!(conn.cmd(&["EXEC"]), Err(WRONGPASS.into()));
    assert_eq!(conn.whoami().unwrap(), "default");
    Ok(())
}
