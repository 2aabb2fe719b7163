//! Hermetic mode (`--hermetic`): the fake Entra ID answers as `login.microsoftonline.com`, so
//! that an unmodified app, with the SDKs' default authority and instance discovery on, talks
//! to the emulator as if it were Entra ID.
//!
//! The traffic reaches it through one listener on 127.0.0.1 that takes two kinds of client:
//!
//! - **Proxy mode.** A plain HTTP proxy (the env file's `HTTPS_PROXY`): `CONNECT
//!   login.microsoftonline.com:443` is answered `200`, then the emulator terminates TLS itself
//!   with its certificate, which names `login.microsoftonline.com` (signed by the emulator's CA,
//!   which the env file makes the clients trust), and serves the
//!   [authority routes](super::authority_router) as `https://login.microsoftonline.com`: the
//!   OpenID Connect metadata and the v2 issuer carry Entra's real strings. Any other target (a
//!   sovereign cloud's host, any other site, a plain-HTTP request) is refused with `403` and a
//!   text body that says why: the emulator forwards nothing, there is no network behind it.
//! - **Hosts-file mode.** A TLS client hello as the first byte (`0x16`) is a client that was
//!   sent here directly, because `/etc/hosts` maps `login.microsoftonline.com` to 127.0.0.1 and
//!   port 443 leads here ([`HermeticConfig::port`]); its server name (SNI) must be one of
//!   [`HERMETIC_HOSTS`].
//!
//! Sovereign clouds (`login.microsoftonline.us`, `login.chinacloudapi.cn`,
//! `login.partner.microsoftonline.cn`) are not emulated: their v1 issuers and Redis audiences
//! are not the public cloud's, which is all the gateway and the token issuer know.
//!
//! Everything is bounded: at most [`MAX_PROXY_CONNECTIONS`] connections at once (more are
//! closed at once), a request head of at most [`MAX_REQUEST_HEAD`] bytes read within
//! [`REQUEST_HEAD_TIMEOUT`], the TLS handshake and the HTTP exchange as the other identity
//! listeners bound them.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::server::{accept_bounded, serve_http, HANDSHAKE_TIMEOUT};
use super::{authority_router, IdentityState};

/// The host names the hermetic listener answers for (and its certificate names).
pub const HERMETIC_HOSTS: &[&str] = &["login.microsoftonline.com"];
/// The authority the hermetic listener's routes answer as: the SDKs' default.
pub const PUBLIC_CLOUD_AUTHORITY: &str = "https://login.microsoftonline.com";
/// The most connections the hermetic listener holds at once; more are closed at once.
pub const MAX_PROXY_CONNECTIONS: usize = 256;
/// The longest proxy request head (request line and headers) read; longer gets `431`.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long a client has to send its proxy request head (or its first byte).
pub const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The sovereign clouds' hosts, refused with a word on why.
const SOVEREIGN_HOSTS: &[&str] = &[
    "login.microsoftonline.us",
    "login.chinacloudapi.cn",
    "login.partner.microsoftonline.cn",
    "login.microsoftonline.de",
];

/// Hermetic mode's settings ([`EmulatorConfig::hermetic`](crate::EmulatorConfig::hermetic)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HermeticConfig {
    /// The listener's port on 127.0.0.1 (0 picks a free one). 443 makes the hosts-file mode
    /// work without a port redirect (it needs the right to bind it).
    pub port: u16,
}

/// The env file's variables that send the clients' HTTPS through the hermetic listener at
/// `proxy` (`http://127.0.0.1:PORT`): `HTTPS_PROXY` and `https_proxy` (libraries read one or
/// the other), and `NO_PROXY`/`no_proxy` naming loopback and `hostname`, so that the gateway,
/// the managed-identity endpoints and the admin interface are reached directly.
pub fn hermetic_env(proxy: &str, hostname: &str) -> Vec<(String, String)> {
    let mut local = vec!["localhost", "127.0.0.1", "::1"];
    if !local.contains(&hostname) {
        local.push(hostname);
    }
    let no_proxy = local.join(",");
    vec![
        ("HTTPS_PROXY".into(), proxy.to_string()),
        ("https_proxy".into(), proxy.to_string()),
        ("NO_PROXY".into(), no_proxy.clone()),
        ("no_proxy".into(), no_proxy),
    ]
}

/// Serves hermetic mode on `listener` until `shutdown` completes: proxy `CONNECT`s to
/// [`HERMETIC_HOSTS`] and direct TLS for them, with `tls` (whose certificate must name them),
/// answering as [`PUBLIC_CLOUD_AUTHORITY`] with `state`'s tenant. Spawns the task and returns
/// its handle; the task ends once the listener is closed and its connections drained.
///
/// # Panics
///
/// When called outside a Tokio runtime.
pub fn serve_hermetic(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: IdentityState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    let router = authority_router(IdentityState {
        authority: PUBLIC_CLOUD_AUTHORITY.into(),
        ..state
    });
    tokio::spawn(accept_loop(
        listener,
        TlsAcceptor::from(tls),
        router,
        shutdown,
    ))
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    accept_bounded(
        listener,
        MAX_PROXY_CONNECTIONS,
        "hermetic listener",
        shutdown,
        move |stream, peer, stop| connection(stream, peer, acceptor.clone(), router.clone(), stop),
    )
    .await;
}

/// How a connection opened.
enum Opening {
    /// A `CONNECT` to a served host, answered `200`: TLS follows.
    Tunnel,
    /// A TLS client hello straight away (hosts-file mode).
    DirectTls,
    /// Refused (already answered) or closed.
    Closed,
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let opening = tokio::select! {
        opened = tokio::time::timeout(REQUEST_HEAD_TIMEOUT, open(&mut stream)) => opened,
        _ = stop.changed() => return,
    };
    let direct = match opening {
        Ok(Ok(Opening::Tunnel)) => false,
        Ok(Ok(Opening::DirectTls)) => true,
        Ok(Ok(Opening::Closed)) => return,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "hermetic listener: connection failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "hermetic listener: no request within the time allowed");
            return;
        }
    };
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let tls = tokio::select! {
        result = handshake => match result {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "hermetic listener: TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "hermetic listener: TLS handshake timed out");
                return;
            }
        },
        _ = stop.changed() => return,
    };
    if direct {
        let name = tls.get_ref().1.server_name().map(str::to_ascii_lowercase);
        if !name.as_deref().is_some_and(|n| HERMETIC_HOSTS.contains(&n)) {
            tracing::info!(%peer, server_name = ?name,
                "hermetic listener: a direct TLS client asked for another host than {HERMETIC_HOSTS:?}; closed");
            return;
        }
    }
    serve_http(TokioIo::new(tls), router, stop).await;
}

/// Reads how the connection opens, and answers a proxy request.
async fn open(stream: &mut TcpStream) -> std::io::Result<Opening> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Ok(Opening::Closed);
    }
    if first[0] == 0x16 {
        return Ok(Opening::DirectTls);
    }
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if head.len() >= MAX_REQUEST_HEAD {
            let refusal = Refusal::new(
                431,
                "Request Header Fields Too Large",
                format!("the proxy request head is longer than {MAX_REQUEST_HEAD} bytes"),
            );
            refuse(stream, &refusal).await?;
            return Ok(Opening::Closed);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Opening::Closed);
        }
        head.extend_from_slice(&chunk[..n]);
    };
    let decision = if head.len() > end {
        Err(Refusal::new(
            400,
            "Bad Request",
            "the client sent data after CONNECT before the tunnel was established".into(),
        ))
    } else {
        decide(&head[..end])
    };
    match decision {
        Ok(host) => {
            tracing::debug!(%host, "hermetic listener: tunnel to the emulated Entra ID");
            stream
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await?;
            Ok(Opening::Tunnel)
        }
        Err(refusal) => {
            tracing::info!(status = refusal.status, why = %refusal.body.trim_end(), "hermetic listener: refused");
            refuse(stream, &refusal).await?;
            Ok(Opening::Closed)
        }
    }
}

/// How much of what a refused client still sends is read (and dropped) before closing.
const DRAIN_LIMIT: usize = 64 * 1024;
/// How long a refused client's remaining bytes are waited for.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// Writes a refusal and closes: our side first, then what the client still sends is read and
/// dropped (bounded), so that the close does not reset the connection before the client has
/// read the reply (unread bytes make the kernel send RST).
async fn refuse(stream: &mut TcpStream, refusal: &Refusal) -> std::io::Result<()> {
    stream.write_all(&refusal.reply()).await?;
    stream.shutdown().await?;
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < DRAIN_LIMIT {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
    Ok(())
}

/// A refused proxy request: status, reason phrase and a text body that says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    status: u16,
    reason: &'static str,
    body: String,
}

impl Refusal {
    fn new(status: u16, reason: &'static str, why: String) -> Self {
        Self {
            status,
            reason,
            body: format!("redis-entra emulator (hermetic mode): {why}\n"),
        }
    }

    /// The whole HTTP reply.
    fn reply(&self) -> Vec<u8> {
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            self.status,
            self.reason,
            self.body.len(),
            self.body
        )
        .into_bytes()
    }
}

/// The longest target echoed in a refusal.
const ECHO_LIMIT: usize = 200;

/// Decides on a proxy request head: the host to tunnel to, or why not.
pub(crate) fn decide(head: &[u8]) -> Result<String, Refusal> {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head.len());
    let line = std::str::from_utf8(&head[..line_end])
        .map_err(|_| Refusal::new(400, "Bad Request", "the request line is not UTF-8".into()))?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::new(
            400,
            "Bad Request",
            "the request line is not `METHOD TARGET HTTP/1.x`".into(),
        ));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Refusal::new(
            400,
            "Bad Request",
            "only HTTP/1.x proxy requests are served".into(),
        ));
    }
    let shown: String = target.chars().take(ECHO_LIMIT).collect();
    let served = HERMETIC_HOSTS.join(", ");
    if method != "CONNECT" {
        return Err(Refusal::new(
            403,
            "Forbidden",
            format!(
                "{method} {shown:?} refused: this proxy serves only CONNECT to {served} on port \
                 443, and forwards nothing (there is no network behind it); put local hosts \
                 in NO_PROXY"
            ),
        ));
    }
    let (host, port) = target.rsplit_once(':').unwrap_or((target, ""));
    let host = host.to_ascii_lowercase();
    if port == "443" && HERMETIC_HOSTS.contains(&host.as_str()) {
        return Ok(host);
    }
    let why = if SOVEREIGN_HOSTS.contains(&host.as_str()) {
        format!(
            "CONNECT {shown:?} refused: sovereign clouds are not emulated, only the public \
             cloud ({served}:443); use the SDK's default authority"
        )
    } else {
        format!(
            "CONNECT {shown:?} refused: only {served}:443 is emulated, and nothing is \
             forwarded (there is no network behind this proxy); put local hosts in NO_PROXY"
        )
    };
    Err(Refusal::new(403, "Forbidden", why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_to_the_public_cloud_is_tunnelled() {
        let head = b"CONNECT login.microsoftonline.com:443 HTTP/1.1\r\nHost: login.microsoftonline.com:443\r\n\r\n";
        assert_eq!(decide(head).unwrap(), "login.microsoftonline.com");
        let upper = b"CONNECT LOGIN.microsoftonline.COM:443 HTTP/1.0\r\n\r\n";
        assert_eq!(decide(upper).unwrap(), "login.microsoftonline.com");
    }

    #[test]
    fn other_targets_are_refused_with_a_reason() {
        let other = decide(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n").unwrap_err();
        assert_eq!(other.status, 403);
        assert!(other.body.contains("\"example.com:443\""), "{}", other.body);
        assert!(other.body.contains("no network"), "{}", other.body);
        let port = decide(b"CONNECT login.microsoftonline.com:80 HTTP/1.1\r\n\r\n").unwrap_err();
        assert_eq!(port.status, 403);
        let sovereign =
            decide(b"CONNECT login.microsoftonline.us:443 HTTP/1.1\r\n\r\n").unwrap_err();
        assert!(sovereign.body.contains("sovereign"), "{}", sovereign.body);
        let plain = decide(b"GET http://example.com/ HTTP/1.1\r\n\r\n").unwrap_err();
        assert_eq!(plain.status, 403);
        assert!(plain.body.contains("NO_PROXY"), "{}", plain.body);
        let garbage = decide(b"\xff\xfe\r\n\r\n").unwrap_err();
        assert_eq!(garbage.status, 400);
        assert_eq!(decide(b"CONNECT\r\n\r\n").unwrap_err().status, 400);
        assert_eq!(
            decide(b"CONNECT a:443 SPDY/3\r\n\r\n").unwrap_err().status,
            400
        );
    }

    #[test]
    fn a_long_target_is_echoed_cut_short() {
        let target = "a".repeat(5000);
        let head = format!("CONNECT {target}:443 HTTP/1.1\r\n\r\n");
        let refusal = decide(head.as_bytes()).unwrap_err();
        assert!(refusal.body.len() < 600, "{}", refusal.body.len());
        let reply = String::from_utf8(refusal.reply()).unwrap();
        assert!(reply.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{reply}");
        assert!(reply.contains(&format!("Content-Length: {}\r\n", refusal.body.len())));
    }
}
