//! Whether the Azure instance metadata service (IMDS, the managed identity endpoint of VMs) is
//! there at all, asked with a bare TCP connect before any token request.
//!
//! `REDIS_ENTRA_IMDS_ADDR` (`host:port`) points the probe elsewhere; the tests point it at a
//! closed local port, so that nothing on a developer's or CI machine talks to 169.254.169.254.

use std::time::Duration;

/// The IMDS address: `REDIS_ENTRA_IMDS_ADDR`, or `169.254.169.254:80`.
pub fn address() -> String {
    std::env::var("REDIS_ENTRA_IMDS_ADDR")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "169.254.169.254:80".to_string())
}

/// Whether a TCP connection to [`address`] opens within `timeout`.
pub async fn reachable(timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address())).await,
        Ok(Ok(_))
    )
}
