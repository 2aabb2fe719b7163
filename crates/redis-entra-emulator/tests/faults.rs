//! The faults the emulator injects, switched through the admin API and observed through the
//! real identity endpoints and the real gateway (TLS, a spawned `redis-server`): tokens for the
//! wrong audience, connections closed at random or all at once, and backend restarts.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use redis_entra_emulator::stats::Stats;
use redis_entra_emulator::{Emulator, EmulatorConfig};
use reqwest::Method;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Generous bound on anything the tests wait for.
const WAIT: Duration = Duration::from_secs(20);
const WRONGPASS: &str = "-WRONGPASS invalid username-password pair or user is disabled.";
const UNREACHABLE: &str = "-ERR the emulator's Redis backend is unreachable";

async fn start() -> Result<Emulator> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    Ok(Emulator::start(EmulatorConfig::default()).await?)
}

/// The admin API and the identity endpoints over HTTP(S).
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

    /// An admin request; the status and the JSON answer (`null` when there is none).
    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)?
        };
        Ok((status, value))
    }

    /// `admin`, expecting 200.
    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let (status, value) = self.admin(method, path, body).await?;
        if status != 200 {
            bail!("{path}: {status} {value}");
        }
        Ok(value)
    }

    /// A token for the service principal from the token endpoint (client credentials).
    async fn token_endpoint(&self, emu: &Emulator) -> Result<String> {
        let sp = emu.service_principal();
        let secret = sp.secret.clone().ok_or_else(|| anyhow!("no secret"))?;
        let form: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", &sp.client_id)
            .append_pair("client_secret", &secret)
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
            .body(form)
            .send()
            .await?;
        access_token(response).await
    }

    /// A token for the system-assigned identity from the App Service endpoint.
    async fn managed_identity(&self, emu: &Emulator) -> Result<String> {
        let response = self
            .client
            .get(format!(
                "{}?api-version=2019-08-01&resource=https%3A%2F%2Fredis.azure.com",
                emu.managed_identity_endpoint()
            ))
            .header("X-IDENTITY-HEADER", emu.identity_header())
            .send()
            .await?;
        access_token(response).await
    }
}

async fn access_token(response: reqwest::Response) -> Result<String> {
    let status = response.status();
    let body: Value = serde_json::from_slice(&response.bytes().await?)?;
    if !status.is_success() {
        bail!("token request: {status} {body}");
    }
    body["access_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no access_token in {body}"))
}

/// A JWT's claims, unverified.
fn claims(token: &str) -> Result<Value> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| anyhow!("not a JWT"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// A raw RESP client over TLS. Replies are read as text: a status, error or integer as its
/// line (`+OK`), a bulk string as its content (`yes`), a nil as `(nil)`; the tests need no
/// more.
struct Conn {
    stream: BufReader<TlsStream<TcpStream>>,
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Closed {
    /// With a TLS close_notify, as the gateway closes connections normally.
    Cleanly,
    /// TCP closed without close_notify (or reset): an abrupt close.
    Abruptly,
}

impl Conn {
    async fn open(emu: &Emulator) -> Result<Conn> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(emu.ca_pem().as_bytes()) {
            roots.add(cert?)?;
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(emu.gateway_addr()).await?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        Ok(Conn {
            stream: BufReader::new(tls),
        })
    }

    /// A connection authenticated as the service principal with a fresh token.
    async fn authenticated(emu: &Emulator) -> Result<Conn> {
        let mut conn = Conn::open(emu).await?;
        let token = emu
            .issuer()
            .issue(emu.service_principal(), "https://redis.azure.com")?
            .token;
        let reply = conn
            .cmd(&["AUTH", &emu.service_principal().object_id, &token])
            .await?;
        if reply != "+OK" {
            bail!("AUTH: {reply}");
        }
        Ok(conn)
    }

    /// Sends a command and reads its reply.
    async fn cmd(&mut self, args: &[&str]) -> Result<String> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        let s = self.stream.get_mut();
        s.write_all(&out).await?;
        s.flush().await?;
        tokio::time::timeout(WAIT, self.reply())
            .await
            .context("no reply in time")?
    }

    async fn reply(&mut self) -> Result<String> {
        let line = self.line().await?;
        match line.strip_prefix('$').map(str::parse::<i64>) {
            Some(Ok(len)) if len < 0 => Ok("(nil)".into()),
            Some(Ok(_)) => self.line().await,
            Some(Err(_)) => bail!("a bad bulk header: {line:?}"),
            None => Ok(line),
        }
    }

    async fn line(&mut self) -> Result<String> {
        let mut line = Vec::new();
        loop {
            let b = self.stream.read_u8().await.context("connection closed")?;
            if b == b'\n' && line.last() == Some(&b'\r') {
                line.pop();
                return Ok(String::from_utf8(line)?);
            }
            line.push(b);
        }
    }

    /// Waits (up to `within`) for the server to close the connection without a word.
    async fn closed(&mut self, within: Duration) -> Result<Closed> {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(within, self.stream.read_to_end(&mut rest))
            .await
            .context("the connection was not closed in time")?;
        if !rest.is_empty() {
            bail!("got {:?} before the close", String::from_utf8_lossy(&rest));
        }
        Ok(match read {
            Ok(_) => Closed::Cleanly,
            Err(_) => Closed::Abruptly,
        })
    }
}

#[tokio::test]
async fn wrong_audience_tokens_are_issued_and_the_gateway_refuses_them() -> Result<()> {
    let emu = start().await?;
    let http = Http::new(&emu)?;
    let sp = emu.service_principal().object_id.clone();
    let mi = emu.managed_identity().object_id.clone();

    let on = http
        .ok(
            Method::PUT,
            "/admin/faults/identity",
            Some(json!({"fault": "wrong-audience"})),
        )
        .await?;
    assert_eq!(
        on,
        json!({"fault": "wrong-audience", "audience": "https://management.azure.com/"})
    );
    let from_endpoint = http.token_endpoint(&emu).await?;
    let from_mi = http.managed_identity(&emu).await?;
    for (what, user, token) in [
        ("token endpoint", &sp, &from_endpoint),
        ("managed identity", &mi, &from_mi),
    ] {
        let c = claims(token)?;
        assert_eq!(c["aud"], "https://management.azure.com/", "{what}");
        // Otherwise as valid as ever.
        assert_eq!(c["oid"], user.as_str(), "{what}");
        assert_eq!(c["tid"], emu.tenant_id(), "{what}");
        let mut conn = Conn::open(&emu).await?;
        assert_eq!(conn.cmd(&["AUTH", user, token]).await?, WRONGPASS, "{what}");
        assert_eq!(
            conn.cmd(&["PING"]).await?,
            "-NOAUTH Authentication required.",
            "{what}"
        );
    }
    // Another audience, by name.
    http.ok(
        Method::PUT,
        "/admin/faults/identity",
        Some(json!({"fault": "wrong-audience", "audience": "https://vault.azure.net"})),
    )
    .await?;
    assert_eq!(
        claims(&http.token_endpoint(&emu).await?)?["aud"],
        "https://vault.azure.net"
    );
    assert_eq!(
        http.ok(Method::GET, "/admin/faults/identity", None).await?,
        json!({"fault": "wrong-audience", "audience": "https://vault.azure.net"})
    );

    // Healed: the same requests give tokens the gateway takes.
    http.ok(
        Method::PUT,
        "/admin/faults/identity",
        Some(json!({"fault": "none"})),
    )
    .await?;
    let healed = http.token_endpoint(&emu).await?;
    assert_eq!(claims(&healed)?["aud"], "https://redis.azure.com");
    let mut conn = Conn::open(&emu).await?;
    assert_eq!(conn.cmd(&["AUTH", &sp, &healed]).await?, "+OK");
    assert_eq!(Stats::get(&emu.stats().auth_failed), 2);
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn random_close_cuts_authenticated_connections_abruptly() -> Result<()> {
    let emu = start().await?;
    let http = Http::new(&emu)?;
    let mut unauthenticated = Conn::open(&emu).await?;
    let mut conns = Vec::new();
    for _ in 0..8 {
        conns.push(Conn::authenticated(&emu).await?);
    }

    // Mean time to a close: 0.25 s; the chance that one of 8 lasts past WAIT is nil.
    let on = http
        .ok(
            Method::PUT,
            "/admin/faults/gateway",
            Some(json!({"random_close": {"per_connection_per_second": 4.0}})),
        )
        .await?;
    assert_eq!(
        on,
        json!({"refuse_reauth": false, "random_close": {"per_connection_per_second": 4.0}})
    );
    assert_eq!(emu.faults().random_close(), 4.0);
    let started = Instant::now();
    for conn in &mut conns {
        assert_eq!(conn.closed(WAIT).await?, Closed::Abruptly);
    }
    let all_closed = started.elapsed();
    assert_eq!(Stats::get(&emu.stats().closed_by_fault), 8);
    // Unauthenticated connections are left alone.
    assert_eq!(
        unauthenticated.cmd(&["PING"]).await?,
        "-NOAUTH Authentication required."
    );

    // Switched off: a connection survives what would have been 8 mean lifetimes.
    let off = http
        .ok(
            Method::PUT,
            "/admin/faults/gateway",
            Some(json!({"random_close": null})),
        )
        .await?;
    assert_eq!(off, json!({"refuse_reauth": false}));
    let mut survivor = Conn::authenticated(&emu).await?;
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(2) {
        assert_eq!(survivor.cmd(&["PING"]).await?, "+PONG");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(Stats::get(&emu.stats().closed_by_fault), 8);

    // The fields are independent; a rate of 0 is off too; bad rates change nothing.
    http.ok(
        Method::PUT,
        "/admin/faults/gateway",
        Some(json!({"refuse_reauth": true})),
    )
    .await?;
    assert!(emu.faults().refuse_reauth());
    assert_eq!(emu.faults().random_close(), 0.0);
    for bad in [json!(-1.0), json!(1e9), json!("often")] {
        let (status, body) = http
            .admin(
                Method::PUT,
                "/admin/faults/gateway",
                Some(json!({"random_close": {"per_connection_per_second": bad}})),
            )
            .await?;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _) = http
        .admin(
            Method::PUT,
            "/admin/faults/gateway",
            Some(json!({"random_close": {"rate": 1}})),
        )
        .await?;
    assert_eq!(status, 400, "unknown fields are refused");
    assert_eq!(
        http.ok(Method::GET, "/admin/faults/gateway", None).await?,
        json!({"refuse_reauth": true})
    );
    eprintln!("random close at 4/s: 8 connections closed in {all_closed:?}");
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn close_all_closes_every_client_connection_now() -> Result<()> {
    let emu = start().await?;
    let http = Http::new(&emu)?;
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(Conn::authenticated(&emu).await?);
    }
    for _ in 0..2 {
        let mut c = Conn::open(&emu).await?;
        // Answered: past its handshake on the gateway's side too.
        assert_eq!(c.cmd(&["PING"]).await?, "-NOAUTH Authentication required.");
        conns.push(c);
    }
    let answer = http
        .ok(Method::POST, "/admin/faults/gateway/close-all", None)
        .await?;
    assert_eq!(answer, json!({"connections": 5}));
    for conn in &mut conns {
        assert_eq!(conn.closed(WAIT).await?, Closed::Abruptly);
    }
    assert_eq!(Stats::get(&emu.stats().closed_by_fault), 5);
    // New connections are served as usual.
    let mut fresh = Conn::authenticated(&emu).await?;
    assert_eq!(fresh.cmd(&["PING"]).await?, "+PONG");
    assert_eq!(emu.faults().close_all_connections(), 1);
    assert_eq!(fresh.closed(WAIT).await?, Closed::Abruptly);
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn backend_restart_cuts_connections_and_keeps_users_and_data() -> Result<()> {
    let emu = start().await?;
    let http = Http::new(&emu)?;
    // A custom policy's user, a built-in one and the access-key user, all in use.
    let reader = emu.directory().create_service_principal("reader-app");
    http.ok(
        Method::PUT,
        &format!("/admin/assignments/{}", reader.object_id),
        Some(json!({"policy": "app-reader", "rules": "+@read +ping ~app:*"})),
    )
    .await?;
    let reader_token = emu
        .issuer()
        .issue(&reader, "https://redis.azure.com")?
        .token;
    let mut owner = Conn::authenticated(&emu).await?;
    assert_eq!(owner.cmd(&["SET", "app:kept", "yes"]).await?, "+OK");
    let mut custom = Conn::open(&emu).await?;
    assert_eq!(
        custom
            .cmd(&["AUTH", &reader.object_id, &reader_token])
            .await?,
        "+OK"
    );
    let mut keyed = Conn::open(&emu).await?;
    assert_eq!(keyed.cmd(&["AUTH", &emu.primary_key()]).await?, "+OK");

    // Restart through the admin API, down for a second, while probing the gateway.
    let restart = {
        let http = Http::new(&emu)?;
        tokio::spawn(async move {
            http.ok(
                Method::POST,
                "/admin/faults/backend/restart",
                Some(json!({"down_for_ms": 1000})),
            )
            .await
        })
    };
    let started = Instant::now();
    // Live connections are cut (the gateway closes them when the backend goes).
    for conn in [&mut owner, &mut custom, &mut keyed] {
        conn.closed(WAIT).await?;
    }
    let cut_after = started.elapsed();
    // While it is down, new connections get an error after their AUTH.
    let mut saw_down = 0;
    let back_after = loop {
        assert!(started.elapsed() < WAIT, "the backend did not come back");
        match Conn::authenticated(&emu).await {
            Ok(mut conn) => {
                if conn.cmd(&["GET", "app:kept"]).await.ok().as_deref() == Some("yes") {
                    break started.elapsed();
                }
            }
            Err(e) if e.to_string().contains(UNREACHABLE) => saw_down += 1,
            // Between the shutdown and the listener: the connection may just close.
            Err(e) => eprintln!("probe: {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let answer = restart.await??;
    assert_eq!(answer["down_for_ms"], 1000);
    assert!(answer["took_ms"].as_u64().unwrap_or(0) >= 1000, "{answer}");
    assert!(saw_down > 0, "no connection saw the backend down");
    assert_eq!(Stats::get(&emu.stats().backend_restarts), 1);
    assert!(Stats::get(&emu.stats().closed_by_backend) >= 3);

    // Every user is back with its rules, and the data with them.
    let mut owner = Conn::authenticated(&emu).await?;
    assert_eq!(
        owner.cmd(&["ACL", "WHOAMI"]).await?,
        emu.service_principal().object_id
    );
    let mut custom = Conn::open(&emu).await?;
    assert_eq!(
        custom
            .cmd(&["AUTH", &reader.object_id, &reader_token])
            .await?,
        "+OK"
    );
    assert_eq!(custom.cmd(&["GET", "app:kept"]).await?, "yes");
    let refused = custom.cmd(&["SET", "app:kept", "no"]).await?;
    assert!(
        refused.starts_with("-NOPERM"),
        "the custom policy's rules were lost: {refused}"
    );
    let mut keyed = Conn::open(&emu).await?;
    assert_eq!(keyed.cmd(&["AUTH", &emu.primary_key()]).await?, "+OK");
    assert_eq!(keyed.cmd(&["PING"]).await?, "+PONG");

    // A policy created after the restart works, and the API restarts it too (no downtime).
    let writer = emu.directory().create_service_principal("writer-app");
    emu.assign_policy(
        &writer.object_id,
        emu.create_custom_policy("app-writer", "+@write +@read ~app:*")
            .await?,
        None,
    )
    .await?;
    emu.restart_backend(Duration::ZERO).await?;
    assert_eq!(Stats::get(&emu.stats().backend_restarts), 2);
    let writer_token = emu
        .issuer()
        .issue(&writer, "https://redis.azure.com")?
        .token;
    let mut w = Conn::open(&emu).await?;
    assert_eq!(
        w.cmd(&["AUTH", &writer.object_id, &writer_token]).await?,
        "+OK"
    );
    assert_eq!(w.cmd(&["SET", "app:new", "1"]).await?, "+OK");
    eprintln!(
        "backend restart (down 1 s): connections cut after {cut_after:?}, {saw_down} probes saw \
         it down, back after {back_after:?} (admin call took {} ms)",
        answer["took_ms"]
    );
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn backend_restart_in_cluster_mode_points_at_node_restarts() -> Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let emu = Emulator::start(EmulatorConfig {
        cluster: Some(1),
        ..EmulatorConfig::default()
    })
    .await?;
    let http = Http::new(&emu)?;
    let e = emu
        .restart_backend(Duration::ZERO)
        .await
        .err()
        .ok_or_else(|| anyhow!("restart_backend worked in cluster mode"))?;
    assert!(e.to_string().contains("restart_node"), "{e}");
    let (status, body) = http
        .admin(Method::POST, "/admin/faults/backend/restart", None)
        .await?;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("/admin/cluster/nodes/{index}/restart"),
        "{body}"
    );
    // restart_node still works.
    emu.restart_node(0).await?;
    emu.shutdown().await;
    Ok(())
}
