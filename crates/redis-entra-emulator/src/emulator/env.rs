//! The environment an app gets from the emulator: the env file's variables, per identity
//! kind.

use super::*;

impl Emulator {
    /// The environment for the configured identity kind.
    pub fn env(&self) -> Vec<(String, String)> {
        self.env_for(self.config.identity)
    }

    /// The environment for an identity kind (DESIGN.md §4.2). Every kind also gets
    /// `REDIS_ENTRA_EMULATOR_ADMIN` and `REDIS_ENTRA_EMULATOR_ADMIN_KEY` (the admin interface),
    /// and `REDIS_ENTRA_EMULATOR_IMDS` (the emulated VM's IMDS, `http://127.0.0.1:PORT`; no SDK
    /// reads it: IMDS is at a fixed address on Azure). In hermetic mode `AZURE_AUTHORITY_HOST`
    /// gives way to `HTTPS_PROXY`, `https_proxy`, `NO_PROXY` and `no_proxy`.
    pub fn env_for(&self, kind: IdentityKind) -> Vec<(String, String)> {
        let addr = self.gateway_addr();
        let ca = self.ca_file().display().to_string();
        let mut vars: Vec<(String, String)> = vec![
            ("AZURE_REDIS_HOST".into(), self.config.hostname.clone()),
            ("AZURE_REDIS_PORT".into(), addr.port().to_string()),
            ("AZURE_TENANT_ID".into(), self.tenant_id().to_string()),
            ("SSL_CERT_FILE".into(), ca.clone()),
            ("REQUESTS_CA_BUNDLE".into(), ca.clone()),
            ("NODE_EXTRA_CA_CERTS".into(), ca),
            ("REDIS_ENTRA_EMULATOR_ADMIN".into(), self.admin_url.clone()),
            (
                "REDIS_ENTRA_EMULATOR_IMDS".into(),
                self.imds_endpoint
                    .trim_end_matches("/metadata/identity/oauth2/token")
                    .to_string(),
            ),
            (
                "REDIS_ENTRA_EMULATOR_ADMIN_KEY".into(),
                self.admin_key.clone(),
            ),
        ];
        match &self.hermetic_proxy {
            Some(proxy) => vars.extend(crate::identity::hermetic_env(proxy, &self.config.hostname)),
            None => vars.insert(2, ("AZURE_AUTHORITY_HOST".into(), self.authority.clone())),
        }
        match kind {
            IdentityKind::ServicePrincipal => {
                let sp = &self.service_principal;
                let secret = sp.secret.clone().unwrap_or_default();
                vars.extend([
                    ("AZURE_CLIENT_ID".into(), sp.client_id.clone()),
                    ("AZURE_CLIENT_SECRET".into(), secret.clone()),
                    ("AZURE_REDIS_CLIENTID".into(), sp.client_id.clone()),
                    ("AZURE_REDIS_CLIENTSECRET".into(), secret),
                    ("AZURE_REDIS_TENANTID".into(), self.tenant_id().to_string()),
                ]);
            }
            IdentityKind::UserAssignedIdentity => {
                let id = &self.user_assigned_identity.client_id;
                vars.extend([
                    ("IDENTITY_ENDPOINT".into(), self.msi_endpoint.clone()),
                    ("IDENTITY_HEADER".into(), self.identity_header.clone()),
                    ("AZURE_CLIENT_ID".into(), id.clone()),
                    ("AZURE_REDIS_CLIENTID".into(), id.clone()),
                ]);
            }
            IdentityKind::WorkloadIdentity => {
                let id = &self.workload_app.client_id;
                vars.extend([
                    ("AZURE_CLIENT_ID".into(), id.clone()),
                    (
                        "AZURE_FEDERATED_TOKEN_FILE".into(),
                        self.federated_token_file.display().to_string(),
                    ),
                    ("AZURE_REDIS_CLIENTID".into(), id.clone()),
                ]);
            }
            IdentityKind::Certificate => {
                vars.push((
                    "AZURE_CLIENT_ID".into(),
                    self.certificate_app.client_id.clone(),
                ));
                if let Some(files) = &self.certificate_files {
                    vars.push((
                        "AZURE_CLIENT_CERTIFICATE_PATH".into(),
                        files.pem.display().to_string(),
                    ));
                }
            }
            IdentityKind::ManagedIdentity => {
                vars.extend([
                    ("IDENTITY_ENDPOINT".into(), self.msi_endpoint.clone()),
                    ("IDENTITY_HEADER".into(), self.identity_header.clone()),
                ]);
            }
            IdentityKind::AccessKey => {
                let key = self.primary_key();
                let encoded: String =
                    url::form_urlencoded::byte_serialize(key.as_bytes()).collect();
                vars.extend([
                    ("AZURE_REDIS_PASSWORD".into(), key),
                    (
                        "AZURE_REDIS_CONNECTIONSTRING".into(),
                        format!(
                            "rediss://:{encoded}@{}:{}/0",
                            self.config.hostname,
                            addr.port()
                        ),
                    ),
                    ("AZURE_REDIS_SSL".into(), "true".into()),
                    ("AZURE_REDIS_DATABASE".into(), "0".into()),
                ]);
            }
        }
        vars
    }

    /// Writes the env file for the configured identity kind to `path`, atomically.
    pub fn write_env_file(&self, path: &Path) -> Result<(), Error> {
        env_file::write_atomic(path, &env_file::render(&self.env()))
    }
}
