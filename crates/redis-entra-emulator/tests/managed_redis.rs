//! The emulator playing Azure Managed Redis (`GatewayConfig::profile`, `--profile
//! managed-redis`), through real TLS connections and the admin interface over HTTP: its one
//! `default` access policy with per-assignment access strings, every connection closed when
//! access keys are switched, and its unsupported commands. See `src/profile/` and
//! docs/EMULATOR.md for the sources.

mod support;

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use redis_entra_emulator::directory::{AccessPolicy, REDIS_RESOURCE};
use redis_entra_emulator::gateway::GatewayConfig;
use redis_entra_emulator::profile::Profile;
use redis_entra_emulator::{Emulator, EmulatorConfig, Error};
use reqwest::Method;
use serde_json::{json, Value};
use support::{bulk, connect_to, ok, Conn, Reply, WRONGPASS};

async fn start() -> Result<Emulator> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    Ok(Emulator::start(EmulatorConfig {
        gateway: GatewayConfig {
            profile: Profile::AzureManagedRedis,
            ..GatewayConfig::default()
        },
        ..EmulatorConfig::default()
    })
    .await?)
}

/// An admin request with the bearer key: the status and the JSON answer.
async fn admin(
    emu: &Emulator,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    let mut request = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?
        .request(method, format!("{}{path}", emu.admin_url()))
        .bearer_auth(emu.admin_key());
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body)?);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await?;
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(&bytes)))?
    };
    Ok((status, value))
}

/// A TLS connection to the gateway, authenticated with `AUTH user password`.
async fn authed(emu: &Emulator, user: &str, password: &str) -> Result<Conn> {
    let mut conn = connect_to(emu.gateway_addr().port(), emu.ca_pem()).await?;
    let reply = conn.cmd(&["AUTH", user, password]).await?;
    if reply != ok() {
        return Err(anyhow!("AUTH as {user} was refused: {reply:?}"));
    }
    Ok(conn)
}

/// A token for `object_id` from the admin interface (as the token endpoint would issue it).
async fn token_for(emu: &Emulator, object_id: &str) -> Result<String> {
    let (status, minted) = admin(
        emu,
        Method::POST,
        "/admin/tokens",
        Some(json!({"oid": object_id})),
    )
    .await?;
    assert_eq!(status, 200, "{minted}");
    minted["access_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no access_token in {minted}"))
}

fn error_text(reply: &Reply) -> String {
    match reply {
        Reply::Error(text) => text.clone(),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn one_default_policy_with_per_assignment_access_strings() -> Result<()> {
    let emu = start().await?;

    // The only policy is `default`, full access, with the documented access string.
    let (status, policies) = admin(&emu, Method::GET, "/admin/policies", None).await?;
    assert_eq!(status, 200);
    let names: Vec<&str> = policies
        .as_array()
        .ok_or_else(|| anyhow!("not a list: {policies}"))?
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["default"], "{policies}");
    assert_eq!(policies[0]["rules"], "+@all ~*");

    // No custom policies, over HTTP or through the Rust API.
    let body = json!({"name": "app-reader", "rules": "+@read ~app:*"});
    let (status, refused) = admin(&emu, Method::POST, "/admin/policies", Some(body)).await?;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"], "invalid_policy");
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(message.contains("no custom access policies"), "{message}");
    assert!(matches!(
        emu.create_custom_policy("app-reader", "+@read").await,
        Err(Error::InvalidPolicy(_))
    ));

    // A new identity: Azure Cache for Redis' built-ins are not Managed Redis'.
    let (status, created) = admin(
        &emu,
        Method::POST,
        "/admin/identities",
        Some(json!({"kind": "service-principal"})),
    )
    .await?;
    assert_eq!(status, 201, "{created}");
    let oid = created["object_id"]
        .as_str()
        .ok_or_else(|| anyhow!("no object_id"))?
        .to_string();
    let path = format!("/admin/assignments/{oid}");
    for builtin in ["Data Owner", "Data Reader"] {
        let (status, refused) =
            admin(&emu, Method::PUT, &path, Some(json!({"policy": builtin}))).await?;
        assert_eq!(status, 400, "{refused}");
        let message = refused["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("Azure Cache for Redis policy"),
            "{message}"
        );
        assert!(message.contains("\"default\""), "{message}");
    }
    assert!(matches!(
        emu.assign_policy(&oid, AccessPolicy::DataReader, None)
            .await,
        Err(Error::InvalidPolicy(_))
    ));

    // No objectIdAlias on Managed Redis' assignments.
    let body = json!({"policy": "default", "alias": "app"});
    let (status, refused) = admin(&emu, Method::PUT, &path, Some(body)).await?;
    assert_eq!(status, 400, "{refused}");
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(message.contains("no alias"), "{message}");

    // `default`: full access.
    let (status, assigned) =
        admin(&emu, Method::PUT, &path, Some(json!({"policy": "default"}))).await?;
    assert_eq!(status, 200, "{assigned}");
    assert_eq!(assigned["policy"], "default");
    let token = token_for(&emu, &oid).await?;
    let mut conn = authed(&emu, &oid, &token).await?;
    assert_eq!(conn.cmd(&["SET", "cache:a", "1"]).await?, ok());
    assert_eq!(conn.cmd(&["SET", "other", "2"]).await?, ok());

    // An access string on the assignment narrows it in place, the connection staying open.
    let body = json!({"policy": "default", "rules": "+@read ~cache:*"});
    let (status, narrowed) = admin(&emu, Method::PUT, &path, Some(body)).await?;
    assert_eq!(status, 200, "{narrowed}");
    assert_eq!(narrowed["policy"], "default");
    assert_eq!(narrowed["rules"], "+@read ~cache:*");
    assert_eq!(conn.cmd(&["GET", "cache:a"]).await?, bulk("1"));
    let write = error_text(&conn.cmd(&["SET", "cache:a", "3"]).await?);
    assert!(write.starts_with("NOPERM"), "{write}");
    let other = error_text(&conn.cmd(&["GET", "other"]).await?);
    assert!(other.starts_with("NOPERM"), "{other}");
    let (_, identity) = admin(&emu, Method::GET, &format!("/admin/identities/{oid}"), None).await?;
    assert_eq!(identity["assignment"]["policy"], "default", "{identity}");

    // Rules Redis does not understand: refused with Redis' text, the assignment unchanged.
    let body = json!({"policy": "default", "rules": "+@nonexistent ~*"});
    let (status, refused) = admin(&emu, Method::PUT, &path, Some(body)).await?;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or_default()
            .contains("+@nonexistent"),
        "{refused}"
    );
    assert_eq!(conn.cmd(&["GET", "cache:a"]).await?, bulk("1"));

    // The identities the emulator starts with hold `default`.
    let (_, assignments) = admin(&emu, Method::GET, "/admin/assignments", None).await?;
    let sp = &emu.service_principal().object_id;
    let start_assignment = assignments
        .as_array()
        .and_then(|all| all.iter().find(|a| a["object_id"] == sp.as_str()))
        .ok_or_else(|| anyhow!("no assignment for the service principal in {assignments}"))?;
    assert_eq!(start_assignment["policy"], "default");
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn switching_access_keys_closes_every_connection_entra_included() -> Result<()> {
    let emu = start().await?;
    let sp = emu.service_principal().clone();
    let token = emu.issuer().issue(&sp, REDIS_RESOURCE)?.token;
    let key = emu.primary_key();
    let mut keyed = authed(&emu, "default", &key).await?;
    let mut entra = authed(&emu, &sp.object_id, &token).await?;
    assert_eq!(entra.cmd(&["SET", "k", "v"]).await?, ok());

    // Disabling: both closed, Entra included, as Azure Managed Redis documents.
    let (status, _) = admin(
        &emu,
        Method::PUT,
        "/admin/access-keys",
        Some(json!({"enabled": false})),
    )
    .await?;
    assert_eq!(status, 200);
    keyed.closed().await.context("the access-key connection")?;
    entra.closed().await.context("the Entra connection")?;

    // Entra clients reconnect; keys are refused.
    let mut entra = authed(&emu, &sp.object_id, &token).await?;
    assert_eq!(entra.cmd(&["GET", "k"]).await?, bulk("v"));
    let mut refused = connect_to(emu.gateway_addr().port(), emu.ca_pem()).await?;
    assert_eq!(
        refused.cmd(&["AUTH", "default", &key]).await?,
        Reply::Error(WRONGPASS.into())
    );

    // Enabling again is a change of the setting too: the Entra connection is closed.
    emu.set_access_keys_enabled(true);
    entra
        .closed()
        .await
        .context("the Entra connection, at re-enabling")?;
    let mut keyed = authed(&emu, "default", &key).await?;
    assert_eq!(keyed.cmd(&["GET", "k"]).await?, bulk("v"));
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn managed_redis_refuses_its_unsupported_commands() -> Result<()> {
    let emu = start().await?;
    let sp = emu.service_principal().clone();
    let token = emu.issuer().issue(&sp, REDIS_RESOURCE)?.token;
    let mut conn = authed(&emu, &sp.object_id, &token).await?;
    // SWAPDB is in Azure Managed Redis' list only (docs/UNSUPPORTED-COMMANDS.md).
    let swapdb = error_text(&conn.cmd(&["SWAPDB", "0", "1"]).await?);
    assert!(
        swapdb.starts_with("ERR unknown command 'SWAPDB'"),
        "{swapdb}"
    );
    assert_eq!(conn.cmd(&["PING"]).await?, Reply::Simple("PONG".into()));
    emu.shutdown().await;
    Ok(())
}

/// With the OSS cluster policy, the switch closes the connections of every node's gateway.
#[tokio::test]
async fn switching_access_keys_closes_connections_on_every_cluster_node() -> Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let emu = Emulator::start(EmulatorConfig {
        gateway: GatewayConfig {
            profile: Profile::AzureManagedRedis,
            ..GatewayConfig::default()
        },
        cluster: Some(2),
        ..EmulatorConfig::default()
    })
    .await?;
    let sp = emu.service_principal().clone();
    let token = emu.issuer().issue(&sp, REDIS_RESOURCE)?.token;
    let mut conns = Vec::new();
    for node in emu.cluster_nodes() {
        let mut conn = connect_to(node.port(), emu.ca_pem()).await?;
        assert_eq!(conn.cmd(&["AUTH", &sp.object_id, &token]).await?, ok());
        conns.push(conn);
    }
    assert_eq!(conns.len(), 2);
    emu.set_access_keys_enabled(false);
    for (i, conn) in conns.iter_mut().enumerate() {
        conn.closed()
            .await
            .with_context(|| format!("node {i}'s connection"))?;
    }
    emu.shutdown().await;
    Ok(())
}
