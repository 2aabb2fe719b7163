//! Azure's access rules through the whole emulator: access policies (built-in and custom)
//! enforced by Redis' own ACLs, access keys, and the admin interface, with the `redis` crate over
//! TLS and `reqwest` for HTTP.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use redis::aio::MultiplexedConnection;
use redis::{RedisError, TlsCertificates};
use redis_entra_emulator::directory::{AccessPolicy, Principal, REDIS_RESOURCE};
use redis_entra_emulator::stats::Stats;
use redis_entra_emulator::{env_file, Emulator, EmulatorConfig, Error, IdentityKind, KeyType};
use reqwest::Method;
use serde_json::{json, Value};

/// Generous bound on anything the tests wait for.
const WAIT: Duration = Duration::from_secs(15);

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

async fn start() -> Result<Emulator> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    capture_logs();
    Ok(Emulator::start(EmulatorConfig::default()).await?)
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A `redis` client for `rediss://[user:password@]localhost:PORT/0[?protocol=resp3]`, trusting
/// the emulator's CA.
fn client(
    emu: &Emulator,
    user: Option<&str>,
    password: &str,
    resp3: bool,
) -> Result<redis::Client> {
    let creds = match user {
        Some(user) => format!("{}:{}@", encode(user), encode(password)),
        None => format!(":{}@", encode(password)),
    };
    let query = if resp3 { "?protocol=resp3" } else { "" };
    let url = format!(
        "rediss://{creds}localhost:{}/0{query}",
        emu.gateway_addr().port()
    );
    client_for_url(emu, &url)
}

fn client_for_url(emu: &Emulator, url: &str) -> Result<redis::Client> {
    Ok(redis::Client::build_with_tls(
        url,
        TlsCertificates {
            client_tls: None,
            root_cert: Some(emu.ca_pem().as_bytes().to_vec()),
        },
    )?)
}

async fn connect(
    emu: &Emulator,
    user: Option<&str>,
    password: &str,
) -> Result<std::result::Result<MultiplexedConnection, RedisError>> {
    connect_with(emu, user, password, false).await
}

async fn connect_with(
    emu: &Emulator,
    user: Option<&str>,
    password: &str,
    resp3: bool,
) -> Result<std::result::Result<MultiplexedConnection, RedisError>> {
    let client = client(emu, user, password, resp3)?;
    Ok(tokio::time::timeout(WAIT, client.get_multiplexed_async_connection()).await?)
}

/// Connects, expecting success.
async fn connected(emu: &Emulator, user: &str, password: &str) -> Result<MultiplexedConnection> {
    connect(emu, Some(user), password)
        .await?
        .map_err(|e| anyhow!("connecting as {user}: {e}"))
}

fn token(emu: &Emulator, principal: &Principal) -> Result<String> {
    Ok(emu.issuer().issue(principal, REDIS_RESOURCE)?.token)
}

/// A new service principal with `policy` (or none) and a token for it.
async fn identity(emu: &Emulator, policy: Option<AccessPolicy>) -> Result<(Principal, String)> {
    let principal = emu.directory().create_service_principal("test-app");
    if let Some(policy) = policy {
        emu.assign_policy(&principal.object_id, policy, None)
            .await?;
    }
    let token = token(emu, &principal)?;
    Ok((principal, token))
}

async fn run(
    con: &mut MultiplexedConnection,
    args: &[&str],
) -> std::result::Result<redis::Value, RedisError> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    tokio::time::timeout(WAIT, cmd.query_async::<redis::Value>(con))
        .await
        .unwrap_or_else(|_| Err(RedisError::from(std::io::Error::other("timed out"))))
}

/// The server's error text: `CODE detail`.
fn error_text(e: &RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => e.to_string(),
    }
}

async fn expect_error(con: &mut MultiplexedConnection, args: &[&str]) -> Result<String> {
    match run(con, args).await {
        Ok(v) => bail!("{args:?} succeeded with {v:?}"),
        Err(e) => Ok(error_text(&e)),
    }
}

/// Redis' `NOPERM` for a command the user may not run: 7.0's wording or 7.2's.
fn assert_noperm_command(text: &str, user: &str, command: &str) {
    let v70 = format!("NOPERM this user has no permissions to run the '{command}' command");
    let v72 = format!("NOPERM User {user} has no permissions to run the '{command}' command");
    assert!(text == v70 || text == v72, "unexpected error: {text}");
}

/// Redis' `NOPERM` for a key the user may not touch: 7.0's wording or 7.2's.
fn assert_noperm_key(text: &str) {
    let v70 = "NOPERM this user has no permissions to access one of the keys used as arguments";
    let v72 = "NOPERM No permissions to access a key";
    assert!(text == v70 || text == v72, "unexpected error: {text}");
}

/// `AUTH [user] password` is refused: redis-rs fails to connect with these credentials (it
/// reports `AuthenticationFailed`, without the server's text), and sent by hand on a bare
/// connection it gets Redis' exact `WRONGPASS`.
async fn assert_refused(emu: &Emulator, user: Option<&str>, password: &str) -> Result<()> {
    match connect(emu, user, password).await? {
        Ok(_) => bail!("the connection was accepted"),
        Err(e) => assert_eq!(e.kind(), redis::ErrorKind::AuthenticationFailed, "{e}"),
    }
    let bare = client_for_url(
        emu,
        &format!("rediss://localhost:{}/0", emu.gateway_addr().port()),
    )?;
    let mut con = tokio::time::timeout(WAIT, bare.get_multiplexed_async_connection()).await??;
    let mut args = vec!["AUTH"];
    args.extend(user);
    args.push(password);
    assert_eq!(expect_error(&mut con, &args).await?, WRONGPASS);
    Ok(())
}

/// Waits until the connection is seen closed (a command fails without a server error).
async fn wait_closed(con: &mut MultiplexedConnection) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match run(con, &["PING"]).await {
            Err(e) if e.code().is_none() => return Ok(()),
            _ if tokio::time::Instant::now() > deadline => bail!("the connection stayed open"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

// --- access policies -------------------------------------------------------------------------

#[tokio::test]
async fn data_reader_reads_and_gets_noperm_on_writes() -> Result<()> {
    let emu = start().await?;
    let (owner, owner_token) = identity(&emu, Some(AccessPolicy::DataOwner)).await?;
    let mut writer = connected(&emu, &owner.object_id, &owner_token).await?;
    run(&mut writer, &["SET", "greeting", "hello"]).await?;

    let (reader, token) = identity(&emu, Some(AccessPolicy::DataReader)).await?;
    let mut con = connected(&emu, &reader.object_id, &token).await?;
    assert_eq!(
        run(&mut con, &["GET", "greeting"]).await?,
        redis::Value::BulkString(b"hello".to_vec())
    );
    let text = expect_error(&mut con, &["SET", "greeting", "bye"]).await?;
    assert_noperm_command(&text, "entra-data-reader", "set");
    // Still connected and still reading after the refusal.
    assert_eq!(
        run(&mut con, &["EXISTS", "greeting"]).await?,
        redis::Value::Int(1)
    );
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn data_contributor_writes_but_runs_no_dangerous_command() -> Result<()> {
    let emu = start().await?;
    let (principal, token) = identity(&emu, Some(AccessPolicy::DataContributor)).await?;
    let mut con = connected(&emu, &principal.object_id, &token).await?;
    run(&mut con, &["SET", "k", "v"]).await?;
    assert_eq!(
        run(&mut con, &["GET", "k"]).await?,
        redis::Value::BulkString(b"v".to_vec())
    );
    let text = expect_error(&mut con, &["FLUSHALL"]).await?;
    assert_noperm_command(&text, "entra-data-contributor", "flushall");
    let text = expect_error(&mut con, &["SLOWLOG", "GET"]).await?;
    assert_noperm_command(&text, "entra-data-contributor", "slowlog|get");
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn custom_policy_limits_commands_and_keys() -> Result<()> {
    let emu = start().await?;
    let policy = emu
        .create_custom_policy("app-reader", "+@read ~app:*")
        .await?;
    assert_eq!(policy.backend_user(), "entra-custom-app-reader");
    let (principal, token) = identity(&emu, Some(policy)).await?;
    let mut con = connected(&emu, &principal.object_id, &token).await?;
    assert_eq!(run(&mut con, &["GET", "app:x"]).await?, redis::Value::Nil);
    assert_noperm_key(&expect_error(&mut con, &["GET", "other:x"]).await?);
    let text = expect_error(&mut con, &["SET", "app:x", "1"]).await?;
    assert_noperm_command(&text, "entra-custom-app-reader", "set");

    // Updating the policy changes it in place, for the live connection too.
    emu.create_custom_policy("app-reader", "+@read +set ~app:*")
        .await?;
    run(&mut con, &["SET", "app:x", "1"]).await?;
    assert_noperm_key(&expect_error(&mut con, &["SET", "other:x", "1"]).await?);
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn invalid_custom_rules_are_refused_with_redis_text() -> Result<()> {
    let emu = start().await?;
    match emu.create_custom_policy("broken", "+@read +@nonexistent").await {
        Err(Error::InvalidPolicy(text)) => assert_eq!(
            text,
            "ERR Error in ACL SETUSER modifier '+@nonexistent': Unknown command or category name in ACL"
        ),
        other => bail!("expected InvalidPolicy, got {other:?}"),
    }
    assert!(emu.directory().policy_named("broken").is_none());
    for (name, rules) in [
        ("x", "+@all nopass"),
        ("has space", "+@read"),
        ("Data-Owner", "+@all"),
    ] {
        assert!(
            matches!(
                emu.create_custom_policy(name, rules).await,
                Err(Error::InvalidPolicy(_))
            ),
            "{name:?} {rules:?}"
        );
    }
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn unassigned_identity_gets_wrongpass_and_changes_apply_on_next_auth() -> Result<()> {
    let emu = start().await?;
    let (principal, token) = identity(&emu, None).await?;
    assert_refused(&emu, Some(&principal.object_id), &token).await?;

    emu.assign_policy(&principal.object_id, AccessPolicy::DataReader, None)
        .await?;
    let mut reader = connected(&emu, &principal.object_id, &token).await?;
    assert_noperm_command(
        &expect_error(&mut reader, &["SET", "k", "v"]).await?,
        "entra-data-reader",
        "set",
    );

    // A new assignment applies in place: the live connection follows at once (issue 11; Azure
    // Managed Redis documents it), as does the next AUTH.
    emu.assign_policy(&principal.object_id, AccessPolicy::DataOwner, None)
        .await?;
    run(&mut reader, &["SET", "k", "v"]).await?;
    let mut owner = connected(&emu, &principal.object_id, &token).await?;
    run(&mut owner, &["SET", "k", "v"]).await?;
    run(&mut reader, &["AUTH", &principal.object_id, &token]).await?;
    run(&mut reader, &["SET", "k", "v2"]).await?;

    // Removed: new connections and re-AUTHs with a new token get WRONGPASS; the live
    // connections keep running.
    assert!(emu.remove_policy_assignment(&principal.object_id));
    assert!(!emu.remove_policy_assignment(&principal.object_id));
    let fresh = token_for(&emu, &principal)?;
    assert_refused(&emu, Some(&principal.object_id), &fresh).await?;
    assert_eq!(
        expect_error(&mut owner, &["AUTH", &principal.object_id, &fresh]).await?,
        WRONGPASS
    );
    assert_eq!(
        run(&mut owner, &["GET", "k"]).await?,
        redis::Value::BulkString(b"v2".to_vec())
    );
    // Revoked in place: Redis closes the live connections with the identity's user.
    emu.assign_policy(&principal.object_id, AccessPolicy::DataOwner, None)
        .await?;
    assert!(emu.revoke_policy_assignment(&principal.object_id).await?);
    assert!(run(&mut owner, &["GET", "k"]).await.is_err());
    assert!(run(&mut reader, &["GET", "k"]).await.is_err());
    emu.shutdown().await;
    Ok(())
}

/// A token distinct from earlier ones (a new `uti`), as a client's refresh would get.
fn token_for(emu: &Emulator, principal: &Principal) -> Result<String> {
    token(emu, principal)
}

#[tokio::test]
async fn alias_is_accepted_as_the_username_of_its_own_identity() -> Result<()> {
    let emu = start().await?;
    let (principal, token) = identity(&emu, None).await?;
    emu.assign_policy(
        &principal.object_id,
        AccessPolicy::DataContributor,
        Some("orders-service"),
    )
    .await?;
    let mut con = connected(&emu, "orders-service", &token).await?;
    run(&mut con, &["SET", "k", "v"]).await?;
    // The object id still works; another identity's alias does not.
    connected(&emu, &principal.object_id, &token).await?;
    let (other, other_token) = identity(&emu, Some(AccessPolicy::DataOwner)).await?;
    assert_refused(&emu, Some("orders-service"), &other_token).await?;
    connected(&emu, &other.object_id, &other_token).await?;
    emu.shutdown().await;
    Ok(())
}

// --- access keys -----------------------------------------------------------------------------

#[tokio::test]
async fn access_keys_authenticate_with_full_access() -> Result<()> {
    let emu = start().await?;
    let primary = emu.primary_key();
    let secondary = emu.secondary_key();
    assert_eq!(primary.len(), 44);
    assert_ne!(primary, secondary);

    // AUTH <key>
    let mut con = connect(&emu, None, &primary)
        .await?
        .map_err(|e| anyhow!("AUTH <key>: {e}"))?;
    run(&mut con, &["SET", "k", "v"]).await?;
    run(&mut con, &["FLUSHALL"]).await?;
    // Full access, but not to Azure's unsupported commands (issue 11).
    run(&mut con, &["SLOWLOG", "GET"]).await?;
    // AUTH default <key>, with the secondary key
    let mut con = connected(&emu, "default", &secondary).await?;
    run(&mut con, &["SET", "k", "v"]).await?;
    // HELLO 3 AUTH default <key>
    let mut con = connect_with(&emu, None, &primary, true)
        .await?
        .map_err(|e| anyhow!("HELLO 3 AUTH default <key>: {e}"))?;
    assert_eq!(
        run(&mut con, &["GET", "k"]).await?,
        redis::Value::BulkString(b"v".to_vec())
    );
    // A wrong key, or a key with another username.
    assert_refused(&emu, None, "not-the-key").await?;
    let (principal, _) = identity(&emu, Some(AccessPolicy::DataOwner)).await?;
    assert_refused(&emu, Some(&principal.object_id), &primary).await?;
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn disabling_access_keys_refuses_them_and_closes_every_connection() -> Result<()> {
    let emu = start().await?;
    let key = emu.primary_key();
    let mut keyed = connected(&emu, "default", &key).await?;
    let (principal, token) = identity(&emu, Some(AccessPolicy::DataOwner)).await?;
    let mut entra = connected(&emu, &principal.object_id, &token).await?;
    // A connection that came in with a token and switched to a key is a key connection.
    let mut switched = connected(&emu, &principal.object_id, &token).await?;
    run(&mut switched, &["AUTH", &key]).await?;
    run(&mut keyed, &["PING"]).await?;

    assert!(emu.access_keys_enabled());
    emu.set_access_keys_enabled(false);
    assert!(!emu.access_keys_enabled());
    wait_closed(&mut keyed).await?;
    wait_closed(&mut switched).await?;
    // Every connection is closed, Entra ones too: "Disabling access key authentication
    // terminates all existing client connections" (Microsoft's Azure Cache for Redis
    // documentation). The gateway closes the key connections itself, or the backend's
    // CLIENT KILL gets there first.
    wait_closed(&mut entra).await?;
    let stats = emu.stats();
    assert_eq!(
        Stats::get(&stats.closed_keys_disabled) + Stats::get(&stats.closed_by_backend),
        3
    );
    assert_refused(&emu, None, &key).await?;
    assert_refused(&emu, Some("default"), &key).await?;
    // Entra clients reconnect, and AUTH <key> on their connections is refused in place.
    let mut entra = connected(&emu, &principal.object_id, &token).await?;
    run(&mut entra, &["SET", "k", "v"]).await?;
    assert_eq!(expect_error(&mut entra, &["AUTH", &key]).await?, WRONGPASS);
    run(&mut entra, &["GET", "k"]).await?;

    emu.set_access_keys_enabled(true);
    connected(&emu, "default", &key).await?;
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn regenerated_key_replaces_the_old_one() -> Result<()> {
    let emu = start().await?;
    let old = emu.primary_key();
    let mut live = connect(&emu, None, &old)
        .await?
        .map_err(|e| anyhow!("{e}"))?;
    let fresh = emu.regenerate_key(KeyType::Primary);
    assert_ne!(old, fresh);
    assert_eq!(emu.primary_key(), fresh);
    assert_refused(&emu, None, &old).await?;
    connect(&emu, None, &fresh)
        .await?
        .map_err(|e| anyhow!("{e}"))?;
    // The connection that came in with the old key stays.
    run(&mut live, &["PING"]).await?;
    // The secondary key was not touched.
    connected(&emu, "default", &emu.secondary_key()).await?;
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn access_key_env_file_connects_as_a_sample_would() -> Result<()> {
    let emu = start().await?;
    assert_eq!(IdentityKind::AccessKey.name(), "access-key");
    assert_eq!(
        "access-key".parse::<IdentityKind>()?,
        IdentityKind::AccessKey
    );
    let env = emu.env_for(IdentityKind::AccessKey);
    let var = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| anyhow!("{name} missing"))
    };
    assert_eq!(var("AZURE_REDIS_PASSWORD")?, emu.primary_key());
    assert_eq!(var("AZURE_REDIS_SSL")?, "true");
    assert_eq!(var("AZURE_REDIS_DATABASE")?, "0");
    assert_eq!(var("REDIS_ENTRA_EMULATOR_ADMIN")?, emu.admin_url());
    assert_eq!(var("REDIS_ENTRA_EMULATOR_ADMIN_KEY")?, emu.admin_key());
    assert!(env.iter().all(|(k, _)| k != "AZURE_CLIENT_ID"));
    let url = var("AZURE_REDIS_CONNECTIONSTRING")?;
    assert_eq!(
        url,
        format!(
            "rediss://:{}@localhost:{}/0",
            encode(&emu.primary_key()),
            emu.gateway_addr().port()
        )
    );
    // Through the env file's quoting and back.
    let parsed = env_file::parse(&env_file::render(&env));
    assert_eq!(parsed, env);
    let mut con = tokio::time::timeout(
        WAIT,
        client_for_url(&emu, &url)?.get_multiplexed_async_connection(),
    )
    .await??;
    run(&mut con, &["SET", "k", "v"]).await?;
    // The admin variables are in every kind's environment.
    for kind in [
        IdentityKind::ServicePrincipal,
        IdentityKind::ManagedIdentity,
    ] {
        assert!(emu
            .env_for(kind)
            .iter()
            .any(|(k, v)| k == "REDIS_ENTRA_EMULATOR_ADMIN_KEY" && v == emu.admin_key()));
    }
    emu.shutdown().await;
    Ok(())
}

// --- the admin interface ---------------------------------------------------------------------

/// An HTTP client for the admin interface and the fake Entra ID.
struct Http {
    client: reqwest::Client,
    admin: String,
    key: String,
}

impl Http {
    fn new(emu: &Emulator) -> Result<Self> {
        let ca = reqwest::Certificate::from_pem(emu.ca_pem().as_bytes())?;
        Ok(Self {
            client: reqwest::Client::builder()
                .tls_certs_only([ca])
                .timeout(WAIT)
                .build()?,
            admin: emu.admin_url().to_string(),
            key: emu.admin_key().to_string(),
        })
    }

    /// An admin request with the bearer key; the status and the JSON answer (`null` if none).
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body)?);
        }
        json_of(request.send().await?).await
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: &str,
    ) -> Result<(u16, Value)> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.admin))
            .body(body.to_string());
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        json_of(request.send().await?).await
    }

    /// A client-credentials token request to the fake Entra ID.
    async fn token(&self, emu: &Emulator, client_id: &str, secret: &str) -> Result<(u16, Value)> {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", client_id)
            .append_pair("client_secret", secret)
            .append_pair("scope", "https://redis.azure.com/.default")
            .finish();
        let response = self
            .client
            .post(format!(
                "{}/{}/oauth2/v2.0/token",
                emu.authority(),
                emu.tenant_id()
            ))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await?;
        json_of(response).await
    }
}

async fn json_of(response: reqwest::Response) -> Result<(u16, Value)> {
    let status = response.status().as_u16();
    let bytes = response.bytes().await?;
    if bytes.is_empty() {
        return Ok((status, Value::Null));
    }
    let value = serde_json::from_slice(&bytes)
        .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(&bytes)))?;
    Ok((status, value))
}

fn text(v: &Value) -> Result<String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("not a string: {v}"))
}

#[tokio::test]
async fn admin_requires_the_bearer_key() -> Result<()> {
    let emu = start().await?;
    let http = Http::new(&emu)?;
    assert!(emu.admin_url().starts_with("http://127.0.0.1:"));
    for key in [None, Some("wrong"), Some("")] {
        for (method, path) in [
            (Method::GET, "/admin/identities"),
            (Method::GET, "/admin/access-keys"),
            (Method::POST, "/admin/tokens"),
            (Method::GET, "/admin/no-such-thing"),
        ] {
            let (status, body) = http.raw(method.clone(), path, key, "{}").await?;
            assert_eq!(status, 401, "{method} {path} with {key:?}");
            assert_eq!(body["error"], "unauthorized");
        }
    }
    let (status, body) = http.call(Method::GET, "/admin/identities", None).await?;
    assert_eq!(status, 200);
    let ids = body.as_array().ok_or_else(|| anyhow!("{body}"))?;
    assert!(ids.iter().any(
        |i| i["object_id"] == emu.service_principal().object_id.as_str()
            && i["assignment"]["policy"] == "Data Owner"
    ));
    // Listing never shows secrets.
    let secret = emu.service_principal().secret.clone().unwrap_or_default();
    assert!(!body.to_string().contains(&secret));
    let (status, body) = http.call(Method::GET, "/admin/no-such-thing", None).await?;
    assert_eq!((status, body["error"].clone()), (404, json!("not_found")));
    let (status, _) = http
        .call(Method::DELETE, "/admin/access-keys", None)
        .await?;
    assert_eq!(status, 405);
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn admin_bad_json_gets_a_clear_400() -> Result<()> {
    let emu = start().await?;
    let http = Http::new(&emu)?;
    let key = Some(emu.admin_key());
    let cases = [
        ("/admin/identities", "", "needs a JSON body"),
        ("/admin/identities", "{not json", "invalid JSON body"),
        (
            "/admin/identities",
            r#"{"kind":"service-principal","colour":"red"}"#,
            "unknown field `colour`",
        ),
        (
            "/admin/identities",
            r#"{"kind":"robot"}"#,
            "unknown variant `robot`",
        ),
        (
            "/admin/identities",
            r#"{"display_name":"x"}"#,
            "missing field `kind`",
        ),
        ("/admin/tokens", r#"{"oid":5}"#, "invalid type"),
        (
            "/admin/access-keys/regenerate",
            r#"{"key":"tertiary"}"#,
            "unknown variant `tertiary`",
        ),
        (
            "/admin/policies",
            r#"{"name":"p"}"#,
            "missing field `rules`",
        ),
    ];
    for (path, body, expected) in cases {
        let (status, answer) = http.raw(Method::POST, path, key, body).await?;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert_eq!(answer["error"], "bad_request", "{answer}");
        let message = text(&answer["message"])?;
        assert!(message.contains(expected), "{path} {body}: {message}");
    }
    let (status, answer) = http
        .raw(
            Method::PUT,
            "/admin/faults/identity",
            key,
            r#"{"fault":"slow","ms":5,"extra":1}"#,
        )
        .await?;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = http
        .raw(
            Method::PUT,
            "/admin/assignments/not-a-guid",
            key,
            r#"{"policy":"Data Owner"}"#,
        )
        .await?;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = http
        .call(
            Method::PUT,
            &format!("/admin/assignments/{}", uuid::Uuid::new_v4()),
            Some(json!({"policy": "Data Janitor"})),
        )
        .await?;
    assert_eq!(status, 400, "{answer}");
    assert!(text(&answer["message"])?.contains("Data Janitor"));
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn admin_service_principal_with_data_reader_through_the_token_endpoint() -> Result<()> {
    let emu = start().await?;
    let http = Http::new(&emu)?;
    let (status, created) = http
        .call(
            Method::POST,
            "/admin/identities",
            Some(json!({"kind": "service-principal", "display_name": "reporting"})),
        )
        .await?;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["kind"], "service-principal");
    assert_eq!(created["assignment"], Value::Null);
    let oid = text(&created["object_id"])?;
    let client_id = text(&created["client_id"])?;
    let secret = text(&created["secret"])?;

    // No policy yet: Entra issues a token, Redis refuses it.
    let (status, body) = http.token(&emu, &client_id, &secret).await?;
    assert_eq!(status, 200, "{body}");
    let token = text(&body["access_token"])?;
    assert_refused(&emu, Some(&oid), &token).await?;

    let (status, assigned) = http
        .call(
            Method::PUT,
            &format!("/admin/assignments/{oid}"),
            Some(json!({"policy": "Data Reader"})),
        )
        .await?;
    assert_eq!(status, 200, "{assigned}");
    assert_eq!(assigned["policy"], "Data Reader");
    let (_, one) = http
        .call(Method::GET, &format!("/admin/identities/{oid}"), None)
        .await?;
    assert_eq!(one["assignment"]["policy"], "Data Reader");
    assert_eq!(one.get("secret"), None);

    let mut con = connected(&emu, &oid, &token).await?;
    run(&mut con, &["GET", "k"]).await?;
    assert_noperm_command(
        &expect_error(&mut con, &["SET", "k", "v"]).await?,
        "entra-data-reader",
        "set",
    );

    // A custom policy with an alias, inline; then removal.
    let (status, assigned) = http
        .call(
            Method::PUT,
            &format!("/admin/assignments/{oid}"),
            Some(json!({"policy": "reports", "rules": "+@read +set ~report:*", "alias": "reporting"})),
        )
        .await?;
    assert_eq!(status, 200, "{assigned}");
    assert_eq!(assigned["alias"], "reporting");
    let mut con = connected(&emu, "reporting", &token).await?;
    run(&mut con, &["SET", "report:1", "v"]).await?;
    assert_noperm_key(&expect_error(&mut con, &["SET", "k", "v"]).await?);
    let (_, list) = http.call(Method::GET, "/admin/assignments", None).await?;
    assert!(list.to_string().contains("+@read +set ~report:*"), "{list}");

    let (status, _) = http
        .call(Method::DELETE, &format!("/admin/assignments/{oid}"), None)
        .await?;
    assert_eq!(status, 204);
    let (status, _) = http
        .call(Method::DELETE, &format!("/admin/assignments/{oid}"), None)
        .await?;
    assert_eq!(status, 404);
    assert_refused(&emu, Some(&oid), &token).await?;

    // Managed identities too.
    for kind in ["system-assigned-identity", "user-assigned-identity"] {
        let (status, mi) = http
            .call(
                Method::POST,
                "/admin/identities",
                Some(json!({"kind": kind})),
            )
            .await?;
        assert_eq!(status, 201, "{mi}");
        assert_eq!(mi["kind"], kind);
        assert!(mi["resource_id"].is_string());
        assert_eq!(mi.get("secret"), None);
    }
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn admin_policies_are_created_listed_and_checked_by_redis() -> Result<()> {
    let emu = start().await?;
    let http = Http::new(&emu)?;
    let (status, body) = http
        .call(
            Method::POST,
            "/admin/policies",
            Some(json!({"name": "app-reader", "rules": "+@read ~app:*"})),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["backend_user"], "entra-custom-app-reader");
    let (status, _) = http
        .call(
            Method::POST,
            "/admin/policies",
            Some(json!({"name": "app-reader", "rules": "+@read ~app:* ~cfg:*"})),
        )
        .await?;
    assert_eq!(status, 200);
    let (status, body) = http
        .call(
            Method::POST,
            "/admin/policies",
            Some(json!({"name": "broken", "rules": "+@nonexistent"})),
        )
        .await?;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_policy");
    assert_eq!(
        body["message"],
        "ERR Error in ACL SETUSER modifier '+@nonexistent': Unknown command or category name in ACL"
    );
    let (_, list) = http.call(Method::GET, "/admin/policies", None).await?;
    let names: Vec<&str> = list
        .as_array()
        .ok_or_else(|| anyhow!("{list}"))?
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "Data Owner",
            "Data Contributor",
            "Data Reader",
            "app-reader"
        ]
    );
    assert_eq!(list[3]["rules"], "+@read ~app:* ~cfg:*");

    // Assigned by name.
    let principal = emu.directory().create_service_principal("cfg");
    let (status, _) = http
        .call(
            Method::PUT,
            &format!("/admin/assignments/{}", principal.object_id),
            Some(json!({"policy": "app-reader"})),
        )
        .await?;
    assert_eq!(status, 200);
    let mut con = connected(&emu, &principal.object_id, &token(&emu, &principal)?).await?;
    run(&mut con, &["GET", "cfg:1"]).await?;
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn admin_access_keys_rotate_and_disable() -> Result<()> {
    let emu = start().await?;
    let http = Http::new(&emu)?;
    let (status, keys) = http.call(Method::GET, "/admin/access-keys", None).await?;
    assert_eq!(status, 200);
    assert_eq!(keys["enabled"], true);
    assert_eq!(text(&keys["primary"])?, emu.primary_key());
    let old_secondary = emu.secondary_key();

    let (status, keys) = http
        .call(
            Method::POST,
            "/admin/access-keys/regenerate",
            Some(json!({"key": "secondary"})),
        )
        .await?;
    assert_eq!(status, 200);
    let new_secondary = text(&keys["secondary"])?;
    assert_ne!(new_secondary, old_secondary);
    assert_refused(&emu, None, &old_secondary).await?;
    let mut live = connected(&emu, "default", &new_secondary).await?;

    let (status, keys) = http
        .call(
            Method::PUT,
            "/admin/access-keys",
            Some(json!({"enabled": false})),
        )
        .await?;
    assert_eq!((status, keys["enabled"].clone()), (200, json!(false)));
    wait_closed(&mut live).await?;
    assert_refused(&emu, None, &new_secondary).await?;
    http.call(
        Method::PUT,
        "/admin/access-keys",
        Some(json!({"enabled": true})),
    )
    .await?;
    connected(&emu, "default", &new_secondary).await?;
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn admin_minted_tokens_are_accepted_unless_their_claims_are_wrong() -> Result<()> {
    let emu = start().await?;
    let http = Http::new(&emu)?;
    let oid = emu.service_principal().object_id.clone();
    let mint = |body: Value| http.call(Method::POST, "/admin/tokens", Some(body));

    let (status, minted) = mint(json!({"oid": oid, "lifetime_secs": 120})).await?;
    assert_eq!(status, 200, "{minted}");
    assert_eq!(minted["claims"]["aud"], REDIS_RESOURCE);
    assert_eq!(minted["claims"]["oid"], oid.as_str());
    assert_eq!(
        minted["claims"]["appid"],
        emu.service_principal().client_id.as_str()
    );
    let expires_in = minted["expires_in"].as_i64().unwrap_or(0);
    assert!((118..=120).contains(&expires_in), "{minted}");
    let good = text(&minted["access_token"])?;
    let mut con = connected(&emu, &oid, &good).await?;
    run(&mut con, &["SET", "k", "v"]).await?;

    // The GUID audience is Redis too.
    let (_, guid) =
        mint(json!({"oid": oid, "aud": "acca5fbb-b7e4-4009-81f1-37e38fd66d78"})).await?;
    connected(&emu, &oid, &text(&guid["access_token"])?).await?;

    // Wrong audience, expired, no oid, another tenant: all WRONGPASS.
    let refused = [
        json!({"oid": oid, "aud": "https://vault.azure.net"}),
        json!({"oid": oid, "lifetime_secs": -600}),
        json!({"oid": oid, "claims": {"oid": null}}),
        json!({"oid": oid, "claims": {"iss": "https://sts.windows.net/another-tenant/"}}),
    ];
    for body in refused {
        let (status, minted) = mint(body.clone()).await?;
        assert_eq!(status, 200, "{minted}");
        let token = text(&minted["access_token"])?;
        assert_refused(&emu, Some(&oid), &token).await?;
    }

    // A token for an object id outside the directory, once it is assigned a policy.
    let stranger = uuid::Uuid::new_v4().to_string();
    let (_, minted) = mint(json!({"oid": stranger, "claims": {"roles": ["x"]}})).await?;
    assert_eq!(minted["claims"]["roles"], json!(["x"]));
    let token = text(&minted["access_token"])?;
    assert_refused(&emu, Some(&stranger), &token).await?;
    http.call(
        Method::PUT,
        &format!("/admin/assignments/{stranger}"),
        Some(json!({"policy": "data-reader"})),
    )
    .await?;
    connected(&emu, &stranger, &token).await?;
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn admin_token_lifetime_and_faults_take_effect() -> Result<()> {
    let emu = start().await?;
    let http = Http::new(&emu)?;
    let sp = emu.service_principal().clone();
    let secret = sp.secret.clone().unwrap_or_default();

    let (status, body) = http
        .call(
            Method::PUT,
            "/admin/token-lifetime",
            Some(json!({"lifetime_secs": 90})),
        )
        .await?;
    assert_eq!((status, body["lifetime_secs"].clone()), (200, json!(90)));
    let (status, body) = http.token(&emu, &sp.client_id, &secret).await?;
    assert_eq!(status, 200);
    assert_eq!(body["expires_in"], 90, "{body}");
    let (status, _) = http
        .call(
            Method::PUT,
            "/admin/token-lifetime",
            Some(json!({"lifetime_secs": 0})),
        )
        .await?;
    assert_eq!(status, 400);
    // Longer than the gateway accepts (24 h by default): refused, not silently useless.
    let (status, body) = http
        .call(
            Method::PUT,
            "/admin/token-lifetime",
            Some(json!({"lifetime_secs": 24 * 3600 + 1})),
        )
        .await?;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("max-token-lifetime"), "{body}");

    let cases = [
        (json!({"fault": "unavailable"}), 503),
        (json!({"fault": "internal-error"}), 500),
        (
            json!({"fault": "TooManyRequests", "retry_after_secs": 7}),
            429,
        ),
    ];
    for (fault, expected) in cases {
        let (status, body) = http
            .call(Method::PUT, "/admin/faults/identity", Some(fault.clone()))
            .await?;
        assert_eq!(status, 200, "{body}");
        let (status, _) = http.token(&emu, &sp.client_id, &secret).await?;
        assert_eq!(status, expected, "{fault}");
    }
    let (_, current) = http
        .call(Method::GET, "/admin/faults/identity", None)
        .await?;
    assert_eq!(
        current,
        json!({"fault": "too-many-requests", "retry_after_secs": 7})
    );

    http.call(
        Method::PUT,
        "/admin/faults/identity",
        Some(json!({"fault": "malformed-json"})),
    )
    .await?;
    let response = http
        .client
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            emu.authority(),
            emu.tenant_id()
        ))
        .body("grant_type=client_credentials")
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 200);
    assert!(serde_json::from_slice::<Value>(&response.bytes().await?).is_err());

    http.call(
        Method::PUT,
        "/admin/faults/identity",
        Some(json!({"fault": "slow", "ms": 300})),
    )
    .await?;
    let started = tokio::time::Instant::now();
    let (status, _) = http.token(&emu, &sp.client_id, &secret).await?;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    let (_, healed) = http
        .call(
            Method::PUT,
            "/admin/faults/identity",
            Some(json!({"fault": "none"})),
        )
        .await?;
    assert_eq!(healed, json!({"fault": "none"}));
    let (status, _) = http.token(&emu, &sp.client_id, &secret).await?;
    assert_eq!(status, 200);

    // The gateway fault: refuse re-AUTH on authenticated connections.
    let (status, on) = http
        .call(
            Method::PUT,
            "/admin/faults/gateway",
            Some(json!({"refuse_reauth": true})),
        )
        .await?;
    assert_eq!((status, on), (200, json!({"refuse_reauth": true})));
    assert!(emu.faults().refuse_reauth());
    let (status, _) = http
        .call(
            Method::PUT,
            "/admin/faults/gateway",
            Some(json!({"refuse": 1})),
        )
        .await?;
    assert_eq!(status, 400, "unknown fields are refused");
    http.call(
        Method::PUT,
        "/admin/faults/gateway",
        Some(json!({"refuse_reauth": false})),
    )
    .await?;
    assert!(!emu.faults().refuse_reauth());
    emu.shutdown().await;
    Ok(())
}

// --- secrets ---------------------------------------------------------------------------------

#[tokio::test]
async fn keys_tokens_and_the_admin_key_never_reach_logs_or_debug() -> Result<()> {
    let emu = start().await?;
    let http = Http::new(&emu)?;
    let primary = emu.primary_key();
    let secondary = emu.secondary_key();
    connect(&emu, None, &primary).await??;
    assert_refused(&emu, None, "a-wrong-key-4242").await?;
    let (_, minted) = http
        .call(
            Method::POST,
            "/admin/tokens",
            Some(json!({"oid": emu.service_principal().object_id})),
        )
        .await?;
    let token = text(&minted["access_token"])?;
    connected(&emu, &emu.service_principal().object_id, &token).await?;
    let (_, created) = http
        .call(
            Method::POST,
            "/admin/identities",
            Some(json!({"kind": "service-principal"})),
        )
        .await?;
    let created_secret = text(&created["secret"])?;
    http.raw(
        Method::GET,
        "/admin/identities",
        Some("a-wrong-admin-key"),
        "",
    )
    .await?;
    let rotated = emu.regenerate_key(KeyType::Secondary);
    let debug = format!(
        "{emu:?} {:?} {:?} {:?}",
        emu.access_keys(),
        emu.directory(),
        emu.backend().access_key_user()
    );
    let admin_key = emu.admin_key().to_string();
    emu.shutdown().await;

    let logs = String::from_utf8(
        capture_logs()
            .0
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .clone(),
    )?;
    assert!(logs.contains("admin request"), "nothing was logged: {logs}");
    assert!(logs.contains("with an access key"), "{logs}");
    for secret in [
        primary.as_str(),
        secondary.as_str(),
        rotated.as_str(),
        "a-wrong-key-4242",
        token.as_str(),
        admin_key.as_str(),
        "a-wrong-admin-key",
        created_secret.as_str(),
    ] {
        assert!(!logs.contains(secret), "a secret was logged");
        assert!(!debug.contains(secret), "a secret is in Debug output");
    }
    Ok(())
}

/// Everything the emulator logs while this test binary runs (one global subscriber).
static LOGS: OnceLock<Captured> = OnceLock::new();

fn capture_logs() -> &'static Captured {
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "redis_entra_emulator=trace",
            ))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        captured
    })
}

/// A `MakeWriter` that keeps everything logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
