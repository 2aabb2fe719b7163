//! A system-assigned managed identity over the App Service protocol, found through
//! `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` as on App Service, Functions and Container Apps.
//! (Its own test binary: it sets process-wide environment variables.)

mod common;

use std::time::Duration;

use redis::AsyncCommands;
use redis_entra::credential::{from_env, FromEnvOptions};
use redis_entra::{EntraConnection, TokenManager};

use common::*;

#[tokio::test]
async fn hello_world_with_a_managed_identity_from_the_environment() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    for (name, _) in emulator.env_for(redis_entra_emulator::IdentityKind::ServicePrincipal) {
        std::env::remove_var(name);
    }
    for (name, value) in emulator.env_for(redis_entra_emulator::IdentityKind::ManagedIdentity) {
        std::env::set_var(name, value);
    }
    assert_eq!(
        redis_entra::config::Auth::entra_from_env().unwrap(),
        redis_entra::config::Auth::ManagedIdentity { client_id: None }
    );
    let credential = from_env(&{
        let mut o = FromEnvOptions::default();
        o.tls = tls(&emulator);
        o
    })
    .unwrap();
    let manager = TokenManager::new(credential, quick_options());
    let creds = manager.credentials().await.unwrap();
    assert_eq!(creds.username(), emulator.managed_identity().object_id);
    assert!(creds.claims().managed_identity_resource_id.is_some());
    let mut conn = EntraConnection::connect(connect_options(&emulator), manager)
        .await
        .unwrap();
    let _: () = conn.set("Az:key1", "value1").await.unwrap();
    let v: String = conn.get("Az:key1").await.unwrap();
    assert_eq!(v, "value1");
    emulator.shutdown().await;
}
