//! The HTTP pipeline options every credential of ours uses: our TLS trust (so the emulator's
//! CA, or a proxy's, can be added), and no retries inside the Azure SDK, because the token
//! manager owns retrying (with its own backoff, timeout and `Retry-After` handling).

use std::sync::Arc;

use azure_core::http::{ClientOptions, RetryOptions, Transport};

use crate::error::{Error, Result};
use crate::tls::TlsOptions;

/// Client options for azure_identity credentials: our TLS trust, no internal retries.
pub fn client_options(tls: &TlsOptions) -> Result<ClientOptions> {
    let config = tls.client_config()?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| Error::Tls(format!("building the HTTP client: {e}")))?;
    Ok(ClientOptions {
        transport: Some(Transport::new(Arc::new(client))),
        retry: RetryOptions::none(),
        ..Default::default()
    })
}
