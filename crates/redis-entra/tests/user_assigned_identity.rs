//! A user-assigned managed identity over the App Service protocol, chosen by Service
//! Connector's `AZURE_REDIS_CLIENTID` as the emulator's `user-assigned-identity` env sets it.
//! (Its own test binary: it sets process-wide environment variables.)

mod common;

use std::time::Duration;

use redis::AsyncCommands;
use redis_entra::config::{Auth, RedisConfig};
use redis_entra::EntraConnection;
use redis_entra::TokenManager;
use redis_entra_emulator::IdentityKind;

use common::*;

#[tokio::test]
async fn user_assigned_identity_from_the_environment() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    for kind in [
        IdentityKind::ServicePrincipal,
        IdentityKind::WorkloadIdentity,
    ] {
        for (name, _) in emulator.env_for(kind) {
            std::env::remove_var(name);
        }
    }
    for (name, value) in emulator.env_for(IdentityKind::UserAssignedIdentity) {
        std::env::set_var(name, value);
    }
    let ua = emulator.user_assigned_identity().clone();
    let mut config = RedisConfig::from_env().unwrap();
    assert_eq!(
        config.auth,
        Auth::ManagedIdentity {
            client_id: Some(ua.client_id.clone())
        }
    );
    config.tls = tls(&emulator);
    let credential = config.credential().unwrap().unwrap();
    let manager = TokenManager::new(credential, quick_options());
    let creds = manager.credentials().await.unwrap();
    assert_eq!(creds.username(), ua.object_id);
    let mut conn = EntraConnection::connect(connect_options(&emulator), manager)
        .await
        .unwrap();
    let _: () = conn.set("Az:ua", "value1").await.unwrap();
    let v: String = conn.get("Az:ua").await.unwrap();
    assert_eq!(v, "value1");
    emulator.shutdown().await;
}
