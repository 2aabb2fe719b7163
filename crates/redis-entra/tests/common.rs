//! Helpers shared by the end-to-end tests: an emulator and clients pointed at it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use redis_entra::credential::{client_secret, ClientSecretOptions};
use redis_entra::{ConnectOptions, TlsOptions, TokenManagerOptions};
use redis_entra_emulator::{Emulator, EmulatorConfig};

/// Starts an emulator whose tokens live `lifetime`.
pub async fn emulator(lifetime: Duration) -> Emulator {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    Emulator::start(EmulatorConfig {
        token_lifetime: lifetime,
        ..EmulatorConfig::default()
    })
    .await
    .expect("the emulator starts")
}

/// Trust for the emulator's CA.
pub fn tls(emulator: &Emulator) -> TlsOptions {
    TlsOptions::with_ca_pem(emulator.ca_pem().to_string()).expect("the emulator's CA is PEM")
}

/// The emulator's service principal as a client secret credential.
pub fn service_principal(emulator: &Emulator) -> Arc<dyn TokenCredential> {
    let sp = emulator.service_principal();
    client_secret(
        ClientSecretOptions::new(
            emulator.tenant_id().to_string(),
            sp.client_id.clone(),
            sp.secret.clone().unwrap(),
        )
        .with_authority_host(emulator.authority().to_string())
        .with_tls(tls(emulator)),
    )
    .unwrap()
}

/// Where the gateway is.
pub fn connect_options(emulator: &Emulator) -> ConnectOptions {
    let mut o = ConnectOptions::new("localhost", emulator.gateway_addr().port());
    o.tls = tls(emulator);
    o
}

/// Token manager options with quick retries, for short-lived tokens.
pub fn quick_options() -> TokenManagerOptions {
    let mut o = TokenManagerOptions::default();
    o.retry.initial_delay = Duration::from_millis(100);
    o
}

/// Captured log output: a `tracing_subscriber` writer that keeps everything written to it.
#[derive(Clone, Default)]
pub struct LogBuffer(pub Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    /// Installs a global subscriber at trace level writing here, and returns the buffer.
    pub fn install_trace() -> Self {
        let buffer = Self::default();
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        buffer
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Heals the identity service, then waits for connection `id` to be replaced
/// (`TokenEvent::Reconnected`); returns how long after the manager's first new token that came.
pub async fn heal_and_time_reconnection(
    emulator: &Emulator,
    events: &mut tokio::sync::broadcast::Receiver<redis_entra::TokenEvent>,
    id: u64,
) -> Duration {
    use redis_entra::TokenEvent;
    emulator
        .faults()
        .set_identity(redis_entra_emulator::faults::IdentityFault::None);
    let mut token_at = None;
    let reconnected = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Ok(TokenEvent::Refreshed { .. }) => token_at = Some(Instant::now()),
                Ok(TokenEvent::Reconnected { connection_id, .. }) if connection_id == id => {
                    return Instant::now();
                }
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("the connection came back after the outage");
    let token_at = token_at.expect("a token before the reconnection");
    reconnected.duration_since(token_at)
}
