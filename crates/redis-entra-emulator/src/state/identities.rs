//! The ids and secrets of the emulator's identities, as the state file keeps them.

use serde::{Deserialize, Serialize};

use super::well_known as wk;

/// A client (application) id and an object id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ids {
    /// The client (application) id: `appid` in tokens.
    pub client_id: String,
    /// The object id: `oid` in tokens, and the Redis username.
    pub object_id: String,
}

impl Ids {
    fn of(client_id: &str, object_id: &str) -> Self {
        Self {
            client_id: client_id.to_string(),
            object_id: object_id.to_string(),
        }
    }
}

/// The tenant id and the ids and secrets of every identity the emulator starts with, and the
/// cache's access keys. `Debug` never shows a secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identities {
    /// The tenant id.
    pub tenant_id: String,
    /// The service principal (client secret).
    pub service_principal: Ids,
    /// The service principal's client secret.
    pub service_principal_secret: String,
    /// The system-assigned managed identity.
    pub managed_identity: Ids,
    /// The user-assigned managed identity.
    pub user_assigned_identity: Ids,
    /// The application that signs in with a certificate.
    pub certificate_app: Ids,
    /// The workload identity's application.
    pub workload_app: Ids,
    /// The user.
    pub user: Ids,
    /// The user's sign-in name.
    pub user_name: String,
    /// The user's password.
    pub user_password: String,
    /// The cache's primary access key.
    pub primary_key: String,
    /// The cache's secondary access key.
    pub secondary_key: String,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("tenant_id", &self.tenant_id)
            .field("service_principal", &self.service_principal)
            .field("managed_identity", &self.managed_identity)
            .field("user_assigned_identity", &self.user_assigned_identity)
            .field("certificate_app", &self.certificate_app)
            .field("workload_app", &self.workload_app)
            .field("user", &self.user)
            .field("user_name", &self.user_name)
            .finish_non_exhaustive()
    }
}

impl Identities {
    /// The well-known identities (see [`well_known`](super::well_known)).
    pub fn well_known() -> Self {
        Self {
            tenant_id: wk::TENANT_ID.to_string(),
            service_principal: Ids::of(
                wk::SERVICE_PRINCIPAL_CLIENT_ID,
                wk::SERVICE_PRINCIPAL_OBJECT_ID,
            ),
            service_principal_secret: wk::SERVICE_PRINCIPAL_SECRET.to_string(),
            managed_identity: Ids::of(
                wk::MANAGED_IDENTITY_CLIENT_ID,
                wk::MANAGED_IDENTITY_OBJECT_ID,
            ),
            user_assigned_identity: Ids::of(
                wk::USER_ASSIGNED_IDENTITY_CLIENT_ID,
                wk::USER_ASSIGNED_IDENTITY_OBJECT_ID,
            ),
            certificate_app: Ids::of(wk::CERTIFICATE_APP_CLIENT_ID, wk::CERTIFICATE_APP_OBJECT_ID),
            workload_app: Ids::of(wk::WORKLOAD_APP_CLIENT_ID, wk::WORKLOAD_APP_OBJECT_ID),
            user: Ids::of(wk::USER_CLIENT_ID, wk::USER_OBJECT_ID),
            user_name: wk::USER_NAME.to_string(),
            user_password: wk::USER_PASSWORD.to_string(),
            primary_key: wk::PRIMARY_KEY.to_string(),
            secondary_key: wk::SECONDARY_KEY.to_string(),
        }
    }

    /// Checks what a state file holds: every id a GUID, no secret empty, the user name an
    /// address. `Err` says which field is wrong.
    pub fn check(&self) -> Result<(), String> {
        let guids = [
            ("tenant_id", &self.tenant_id),
            (
                "service_principal.client_id",
                &self.service_principal.client_id,
            ),
            (
                "service_principal.object_id",
                &self.service_principal.object_id,
            ),
            (
                "managed_identity.client_id",
                &self.managed_identity.client_id,
            ),
            (
                "managed_identity.object_id",
                &self.managed_identity.object_id,
            ),
            (
                "user_assigned_identity.client_id",
                &self.user_assigned_identity.client_id,
            ),
            (
                "user_assigned_identity.object_id",
                &self.user_assigned_identity.object_id,
            ),
            ("certificate_app.client_id", &self.certificate_app.client_id),
            ("certificate_app.object_id", &self.certificate_app.object_id),
            ("workload_app.client_id", &self.workload_app.client_id),
            ("workload_app.object_id", &self.workload_app.object_id),
            ("user.client_id", &self.user.client_id),
            ("user.object_id", &self.user.object_id),
        ];
        for (field, value) in guids {
            if uuid::Uuid::parse_str(value).is_err() {
                return Err(format!("{field} is {value:?}, not a GUID"));
            }
        }
        let secrets = [
            ("service_principal_secret", &self.service_principal_secret),
            ("user_password", &self.user_password),
            ("primary_key", &self.primary_key),
            ("secondary_key", &self.secondary_key),
        ];
        if let Some((field, _)) = secrets.iter().find(|(_, v)| v.trim().is_empty()) {
            return Err(format!("{field} is empty"));
        }
        if !self.user_name.contains('@') {
            return Err(format!(
                "user_name is {:?}, not a sign-in name such as {}",
                self.user_name,
                wk::USER_NAME
            ));
        }
        Ok(())
    }
}
