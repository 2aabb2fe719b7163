//! The network checks: DNS, TCP and a TLS handshake that verifies the server's certificate
//! with the same trust the Redis connection uses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis_entra::TlsOptions;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::Check;
use crate::exit;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves `host`.
pub async fn dns(host: &str, port: u16) -> (Check, Vec<SocketAddr>) {
    const NAME: &str = "DNS";
    match tokio::time::timeout(TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addrs)) => {
            let mut addrs: Vec<SocketAddr> = addrs.collect();
            addrs.dedup();
            if addrs.is_empty() {
                return (
                    Check::fail(
                        NAME,
                        exit::CONNECTION,
                        format!("{host} resolves to no address"),
                        dns_fix(),
                    ),
                    addrs,
                );
            }
            let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            (
                Check::ok(NAME, format!("{host} resolves to {}", list.join(", "))),
                addrs,
            )
        }
        Ok(Err(e)) => (
            Check::fail(
                NAME,
                exit::CONNECTION,
                format!("cannot resolve {host}: {e}"),
                dns_fix(),
            ),
            Vec::new(),
        ),
        Err(_) => (
            Check::fail(
                NAME,
                exit::CONNECTION,
                format!("resolving {host} took longer than {}s", TIMEOUT.as_secs()),
                "check this machine's DNS servers; then the host name, as below",
            ),
            Vec::new(),
        ),
    }
}

fn dns_fix() -> &'static str {
    "check the host name: NAME.redis.cache.windows.net for Azure Cache for Redis, NAME.REGION.redis.azure.net for Azure Managed Redis (the portal's Overview shows it); with a private endpoint, resolve it from inside the virtual network (the privatelink DNS zone must be linked to it)"
}

/// Connects to the first address that answers.
pub async fn tcp(host: &str, port: u16, addrs: &[SocketAddr]) -> (Check, Option<SocketAddr>) {
    const NAME: &str = "TCP";
    let mut errors = Vec::new();
    let mut refused = false;
    for addr in addrs {
        let started = Instant::now();
        match tokio::time::timeout(TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(_)) => {
                return (
                    Check::ok(
                        NAME,
                        format!(
                            "connected to {addr} in {:.1} ms",
                            started.elapsed().as_secs_f64() * 1000.0
                        ),
                    ),
                    Some(*addr),
                )
            }
            Ok(Err(e)) => {
                refused |= e.kind() == std::io::ErrorKind::ConnectionRefused;
                errors.push(format!("{addr}: {e}"));
            }
            Err(_) => errors.push(format!("{addr}: no answer within {}s", TIMEOUT.as_secs())),
        }
    }
    let fix = if refused {
        format!("nothing accepts connections on {host}:{port}: Azure Cache for Redis takes TLS on 6380 and Azure Managed Redis on 10000; check -p / AZURE_REDIS_PORT, and that the cache exists and is running")
    } else {
        "the connection gets no answer: a firewall, a network security group, or the cache's network settings (public network access disabled, firewall rules, a private endpoint only reachable from its virtual network) block this machine; check the cache's Networking page".to_string()
    };
    (
        Check::fail(
            NAME,
            exit::CONNECTION,
            format!("cannot connect to {host}:{port} ({})", errors.join("; ")),
            fix,
        ),
        None,
    )
}

/// The rustls error inside an I/O error from the handshake, if that is what it is.
fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// A TLS handshake with certificate verification.
pub async fn tls(host: &str, addr: SocketAddr, trust: &TlsOptions) -> Check {
    const NAME: &str = "TLS";
    let config = match trust.client_config() {
        Ok(c) => c,
        Err(e) => {
            return Check::fail(
                NAME,
                exit::USAGE,
                format!("cannot set up TLS: {e}"),
                "check --cacert / SSL_CERT_FILE: they must name PEM files with CA certificates",
            )
        }
    };
    let server_name = match ServerName::try_from(host.to_string()) {
        Ok(n) => n,
        Err(e) => {
            return Check::fail(
                NAME,
                exit::USAGE,
                format!("{host:?} cannot be a TLS server name: {e}"),
                "use the cache's host name",
            )
        }
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let handshake = async {
        let stream = TcpStream::connect(addr).await?;
        connector.connect(server_name, stream).await
    };
    match tokio::time::timeout(TIMEOUT, handshake).await {
        Ok(Ok(stream)) => {
            let (_, session) = stream.get_ref();
            let version = session
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_else(|| "TLS".into());
            let verified = if trust.danger_accept_invalid_certs {
                "certificate NOT verified (--insecure-skip-tls-verify)".to_string()
            } else {
                format!("certificate for {host} verified")
            };
            Check::ok(NAME, format!("handshake done ({version}), {verified}"))
        }
        Ok(Err(e)) => {
            let (line, fix) = match rustls_error(&e) {
                Some(rustls::Error::InvalidCertificate(cert)) => explain_certificate(host, cert),
                Some(other) => (
                    format!("the TLS handshake failed: {other}"),
                    "check that the port is the cache's TLS port (6380, or 10000 on Managed Redis), not the non-TLS 6379".to_string(),
                ),
                None if e.kind() == std::io::ErrorKind::UnexpectedEof => (
                    format!("the server closed the connection during the TLS handshake: {e}"),
                    "check that this port speaks TLS (6380, or 10000 on Managed Redis) and that a proxy or firewall does not cut TLS".to_string(),
                ),
                None => (
                    format!("the TLS handshake failed: {e}"),
                    "check that this port speaks TLS (6380, or 10000 on Managed Redis)".to_string(),
                ),
            };
            Check::fail(NAME, exit::CONNECTION, line, fix)
        }
        Err(_) => Check::fail(
            NAME,
            exit::CONNECTION,
            format!("the TLS handshake took longer than {}s", TIMEOUT.as_secs()),
            "check that this port speaks TLS (6380, or 10000 on Managed Redis); a port that speaks plain Redis waits for a command",
        ),
    }
}

/// What a certificate error means and what to do about it.
fn explain_certificate(host: &str, error: &rustls::CertificateError) -> (String, String) {
    use rustls::CertificateError as E;
    match error {
        E::UnknownIssuer => (
            format!("the server's certificate is signed by a CA this machine does not trust ({error:?})"),
            "pass --cacert FILE with the CA's PEM certificate, or set SSL_CERT_FILE=FILE (for the emulator: the SSL_CERT_FILE line of its env file); behind a TLS-inspecting proxy, use the proxy's CA".to_string(),
        ),
        E::NotValidForName | E::NotValidForNameContext { .. } => (
            format!("the server's certificate does not cover {host} ({error:?})"),
            "connect with the name the certificate was issued for (NAME.redis.cache.windows.net, not an IP address or a CNAME alias); with a private endpoint, keep the public name and let the privatelink DNS zone resolve it".to_string(),
        ),
        E::Expired | E::ExpiredContext { .. } | E::NotValidYet | E::NotValidYetContext { .. } => (
            format!("the server's certificate is not valid now ({error:?})"),
            "check this machine's clock (date, time zone, NTP)".to_string(),
        ),
        other => (
            format!("the server's certificate was refused: {other:?}"),
            "pass --cacert FILE with the CA that issued it, or check the host name".to_string(),
        ),
    }
}
