//! Disabling access-key authentication terminates every client connection, Entra ones
//! included: "Disabling access key authentication terminates all existing client connections"
//! (Microsoft Learn, "Use Microsoft Entra for cache authentication", Azure Cache for Redis).
//! Azure Managed Redis does it when the setting is switched either way: "When the Disable
//! Access Keys Authentication setting is changed for a cache, all existing client connections,
//! using access keys or Microsoft Entra, are terminated" (Microsoft Learn, "Use Microsoft Entra
//! for cache authentication with Azure Managed Redis").
//!
//! The emulator does it with a task that watches [`AccessKeys::revocations`] (disabling) or,
//! for Managed Redis, [`AccessKeys::changes`] (either way) and then closes the
//! backend connections of every user it manages
//! ([`Backend::close_client_connections`]), on every node; the gateway closes each client's
//! connection when its backend connection ends. The admin call (or
//! [`Emulator::set_access_keys_enabled`](crate::Emulator::set_access_keys_enabled)) returns
//! before the connections are closed, as Azure's setting change takes a while too: a client
//! sees its connection end moments later.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Profile;
use crate::access_keys::AccessKeys;
use crate::backend::Backend;

/// Starts the watcher: it closes every connection when access keys are disabled, or, where
/// `profile` says so ([`Profile::enabling_keys_closes_all`]), switched either way; it ends
/// when `stop` turns true.
pub fn spawn(
    profile: Profile,
    keys: &AccessKeys,
    backend: Arc<Backend>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let mut changes = if profile.enabling_keys_closes_all() {
        keys.changes()
    } else {
        keys.revocations()
    };
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    match backend.close_client_connections().await {
                        Ok(n) => tracing::info!(
                            connections = n,
                            "access-key setting changed: every client connection closed"
                        ),
                        Err(e) => tracing::warn!(
                            error = %e,
                            "access-key setting changed, but closing the connections failed"
                        ),
                    }
                }
                () = &mut stopped => return,
            }
        }
    })
}
