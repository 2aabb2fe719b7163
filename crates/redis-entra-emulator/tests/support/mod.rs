//! A gateway in front of a fresh `redis-server`, a tenant with one Data Owner service
//! principal, and a raw RESP client over TLS: for the token-check tests.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use redis_entra_emulator::backend::Backend;
use redis_entra_emulator::directory::{AccessPolicy, Directory, Principal, REDIS_RESOURCE};
use redis_entra_emulator::gateway::{Gateway, GatewayState, TokenValidator};
use redis_entra_emulator::signing::{now_secs, TokenIssuer};
use redis_entra_emulator::stats::Stats;
use redis_entra_emulator::tls::Pki;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// How long a test waits for a reply or a close.
pub const WAIT: Duration = Duration::from_secs(15);
/// The validator's clock skew in these tests.
pub const SKEW: Duration = Duration::from_secs(1);
/// The fake Entra ID authority the validator is told about (nothing listens there).
pub const AUTHORITY: &str = "https://localhost:8443";
/// Redis' answer to a refused `AUTH`.
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// A gateway and what the test needs to drive it.
pub struct Env {
    pub directory: Arc<Directory>,
    pub issuer: TokenIssuer,
    pub principal: Principal,
    pub validator: Arc<TokenValidator>,
    pub stats: Arc<Stats>,
    pki: Pki,
    _backend: Arc<Backend>,
    gateway: Option<Gateway>,
    pub port: u16,
}

impl Env {
    /// A tenant with a Data Owner service principal, a fresh backend and a gateway whose
    /// validator trusts the issuer's key and knows [`AUTHORITY`].
    pub async fn start() -> Result<Env> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let directory = Arc::new(Directory::new());
        let principal = directory.create_service_principal("app");
        directory.assign(&principal.object_id, AccessPolicy::DataOwner);
        let issuer = TokenIssuer::new(directory.tenant_id(), Duration::from_secs(3600))?;
        let validator = Arc::new(
            TokenValidator::new(directory.clone())
                .with_authority(AUTHORITY)
                .with_skew(SKEW),
        );
        validator.trust(&issuer)?;
        let backend = Arc::new(Backend::spawn().await?);
        let stats = Arc::new(Stats::default());
        let pki = Pki::generate()?;
        let state = GatewayState {
            directory: directory.clone(),
            validator: validator.clone(),
            backend: backend.clone(),
            stats: stats.clone(),
            faults: Arc::default(),
            config: redis_entra_emulator::gateway::GatewayConfig::default(),
        };
        let gateway = Gateway::bind(([127, 0, 0, 1], 0).into(), pki.server_config(), state).await?;
        let port = gateway.local_addr().port();
        Ok(Env {
            directory,
            issuer,
            principal,
            validator,
            stats,
            pki,
            _backend: backend,
            gateway: Some(gateway),
            port,
        })
    }

    pub fn oid(&self) -> &str {
        &self.principal.object_id
    }

    /// The backend behind the gateway.
    pub fn backend(&self) -> &Arc<Backend> {
        &self._backend
    }

    pub fn tenant_id(&self) -> &str {
        self.directory.tenant_id()
    }

    /// A fresh token for the principal, as the issuer issues them.
    pub fn token(&self) -> Result<String> {
        Ok(self.issuer.issue(&self.principal, REDIS_RESOURCE)?.token)
    }

    /// Claims as the issuer puts them in a v1 token living 5 minutes, edited by `edit`, signed
    /// with the trusted key.
    pub fn signed_with(
        &self,
        edit: impl FnOnce(&mut serde_json::Map<String, Value>),
    ) -> Result<String> {
        let now = now_secs();
        let mut claims = json!({
            "aud": REDIS_RESOURCE,
            "iss": self.issuer.v1_issuer(),
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "oid": self.principal.object_id,
            "tid": self.directory.tenant_id(),
            "ver": "1.0",
        });
        let map = claims
            .as_object_mut()
            .ok_or_else(|| anyhow!("claims are not an object"))?;
        edit(map);
        Ok(self.issuer.sign(&claims)?)
    }

    /// A TLS connection to the gateway.
    pub async fn connect(&self) -> Result<Conn> {
        connect_to(self.port, self.pki.ca_pem()).await
    }

    /// A connection authenticated with a fresh token.
    pub async fn authenticated(&self) -> Result<Conn> {
        let mut conn = self.connect().await?;
        let token = self.token()?;
        assert_eq!(conn.cmd(&["AUTH", self.oid(), &token]).await?, ok());
        Ok(conn)
    }
}

/// A TLS connection to a gateway on `localhost:port` whose certificate `ca_pem` signed.
pub async fn connect_to(port: u16, ca_pem: &str) -> Result<Conn> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    Ok(Conn {
        stream: BufReader::new(tls),
    })
}

impl Drop for Env {
    fn drop(&mut self) {
        drop(self.gateway.take());
    }
}

/// A RESP2 reply (what these tests need).
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

pub fn ok() -> Reply {
    Reply::Simple("OK".into())
}

pub fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}

/// A RESP request.
pub fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// A raw RESP client over TLS.
pub struct Conn {
    stream: BufReader<TlsStream<TcpStream>>,
}

impl Conn {
    /// A connection over `stream` (one taken apart with [`into_stream`](Self::into_stream)).
    pub fn from_stream(stream: TlsStream<TcpStream>) -> Conn {
        Conn {
            stream: BufReader::new(stream),
        }
    }

    /// The TLS stream, for a test that drives it itself (nothing read is buffered between
    /// replies).
    pub fn into_stream(self) -> TlsStream<TcpStream> {
        self.stream.into_inner()
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let s = self.stream.get_mut();
        s.write_all(bytes).await?;
        s.flush().await?;
        Ok(())
    }

    pub async fn cmd(&mut self, args: &[&str]) -> Result<Reply> {
        self.send(&encode(args)).await?;
        self.read().await
    }

    pub async fn read(&mut self) -> Result<Reply> {
        tokio::time::timeout(WAIT, self.value())
            .await
            .context("no reply in time")?
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

    async fn value(&mut self) -> Result<Reply> {
        let line = self.line().await?;
        let (kind, rest) = line.split_at(1);
        Ok(match kind {
            "+" => Reply::Simple(rest.into()),
            "-" => Reply::Error(rest.into()),
            ":" => Reply::Int(rest.parse()?),
            "$" => {
                let len: i64 = rest.parse()?;
                if len < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut data = vec![0; len as usize + 2];
                    self.stream.read_exact(&mut data).await?;
                    data.truncate(len as usize);
                    Reply::Bulk(Some(data))
                }
            }
            "*" => {
                let n: i64 = rest.parse()?;
                if n < 0 {
                    Reply::Array(None)
                } else {
                    let mut items = Vec::new();
                    for _ in 0..n {
                        items.push(Box::pin(self.value()).await?);
                    }
                    Reply::Array(Some(items))
                }
            }
            other => bail!("unexpected reply type {other:?}"),
        })
    }

    /// Waits for the server to close the connection, returning what it sent first.
    pub async fn closed(&mut self) -> Result<Vec<u8>> {
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(WAIT, self.stream.read_to_end(&mut rest))
            .await
            .context("the connection was not closed in time")?;
        Ok(rest)
    }
}
