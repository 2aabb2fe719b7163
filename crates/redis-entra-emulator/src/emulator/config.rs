//! What an [`Emulator`](super::Emulator) is started with: [`EmulatorConfig`], and the
//! identity its env file describes ([`IdentityKind`]).

use super::*;

/// Which identity the env file describes (`--identity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum IdentityKind {
    /// A service principal with a client secret.
    #[default]
    ServicePrincipal,
    /// A system-assigned managed identity (App Service protocol).
    ManagedIdentity,
    /// The cache's primary access key (`AZURE_REDIS_PASSWORD`, `AZURE_REDIS_CONNECTIONSTRING`),
    /// as Service Connector's "secret" authentication sets it.
    AccessKey,
    /// A user-assigned managed identity (App Service protocol plus `AZURE_CLIENT_ID` and
    /// `AZURE_REDIS_CLIENTID` naming it).
    UserAssignedIdentity,
    /// AKS workload identity: `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE`
    /// (a service-account token the emulator rotates) and `AZURE_REDIS_CLIENTID`.
    WorkloadIdentity,
    /// An application with a certificate: `AZURE_CLIENT_ID`, `AZURE_TENANT_ID` and
    /// `AZURE_CLIENT_CERTIFICATE_PATH` (PEM with the certificate and its key).
    Certificate,
}

impl IdentityKind {
    /// The name used on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ServicePrincipal => "service-principal",
            Self::ManagedIdentity => "managed-identity",
            Self::AccessKey => "access-key",
            Self::UserAssignedIdentity => "user-assigned-identity",
            Self::WorkloadIdentity => "workload-identity",
            Self::Certificate => "certificate",
        }
    }
}

impl std::str::FromStr for IdentityKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "service-principal" => Ok(Self::ServicePrincipal),
            "managed-identity" | "system-assigned-identity" => Ok(Self::ManagedIdentity),
            "access-key" => Ok(Self::AccessKey),
            "user-assigned-identity" => Ok(Self::UserAssignedIdentity),
            "workload-identity" => Ok(Self::WorkloadIdentity),
            "certificate" | "client-certificate" => Ok(Self::Certificate),
            other => Err(Error::Config(format!(
                "unknown identity kind {other:?}: use service-principal, managed-identity, user-assigned-identity, workload-identity, certificate or access-key"
            ))),
        }
    }
}

/// How to start the emulator.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// How long issued tokens live (default 1 hour).
    pub token_lifetime: Duration,
    /// Which identity the env file describes.
    pub identity: IdentityKind,
    /// An existing Redis to front (`redis://…` or `unix:///…`); `None` spawns `redis-server`.
    pub backend: Option<String>,
    /// The gateway's port on 127.0.0.1 (0 picks a free one).
    pub gateway_port: u16,
    /// The fake Entra ID's HTTPS port (0 picks a free one).
    pub authority_port: u16,
    /// The emulated VM's instance metadata service (IMDS), plain HTTP on 127.0.0.1, a listener
    /// of its own (0 picks a free one). In the env file as `REDIS_ENTRA_EMULATOR_IMDS`.
    pub imds_port: u16,
    /// The clock skew the gateway allows on `exp` and `nbf` (default 2 s).
    pub clock_skew: Duration,
    /// The longest token lifetime the gateway accepts (default 24 h, as Entra's
    /// managed-identity tokens; see [`DEFAULT_MAX_LIFETIME`]). Must be at least
    /// `token_lifetime`.
    pub max_token_lifetime: Duration,
    /// Cluster mode (`--cluster N`): `Some(n)` spawns `n` `redis-server` nodes in cluster mode
    /// (no replicas), each behind its own gateway, the first on `gateway_port`; `None` (the
    /// default) runs one standalone backend. Cannot be combined with `backend`.
    pub cluster: Option<usize>,
    /// How long the projected service-account tokens of the workload identity live (default
    /// 1 hour); the emulator rewrites `AZURE_FEDERATED_TOKEN_FILE` at 80 % of it.
    pub federated_token_lifetime: Duration,
    /// The gateway's limits (connections, time to authenticate) and the Azure product whose
    /// unsupported commands it refuses.
    pub gateway: crate::gateway::GatewayConfig,
    /// The server binary the emulator spawns behind its gateway (`--redis-server PATH`): any
    /// `redis-server` or `valkey-server`; Debian's `redis-server` from `PATH` by default.
    pub redis_server: ServerProgram,
    /// The address the fake Entra ID and the gateways listen on (`--listen`; default
    /// 127.0.0.1). The managed-identity endpoints, IMDS and the admin interface stay on
    /// 127.0.0.1: they are the emulated machine's own.
    pub listen: std::net::IpAddr,
    /// The host name clients use (`--hostname`; default `localhost`): in the authority URL, the
    /// env file, what cluster nodes announce, and the server certificate (with the `--listen`
    /// address when it is a specific one).
    pub hostname: String,
    /// A folder that keeps the CA, the signing key and the identities across restarts
    /// (`--state DIR`; see [`state`](crate::state)); `None` (the default): new at every start.
    pub state: Option<PathBuf>,
    /// The documented well-known identities instead of new ones (`--well-known`; see
    /// [`state::well_known`](crate::state::well_known)).
    pub well_known: bool,
    /// Hermetic mode (`--hermetic`; see [`identity::serve_hermetic`]): `Some` answers as
    /// `login.microsoftonline.com` through a proxy listener on 127.0.0.1, and the env file sets
    /// `HTTPS_PROXY` to it instead of `AZURE_AUTHORITY_HOST`. `None` (the default): off.
    pub hermetic: Option<identity::HermeticConfig>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            token_lifetime: Duration::from_secs(3600),
            identity: IdentityKind::ServicePrincipal,
            backend: None,
            gateway_port: 0,
            authority_port: 0,
            imds_port: 0,
            clock_skew: Duration::from_secs(2),
            max_token_lifetime: DEFAULT_MAX_LIFETIME,
            cluster: None,
            federated_token_lifetime: Duration::from_secs(3600),
            gateway: crate::gateway::GatewayConfig::default(),
            redis_server: ServerProgram::default(),
            listen: std::net::Ipv4Addr::LOCALHOST.into(),
            hostname: "localhost".into(),
            state: None,
            well_known: false,
            hermetic: None,
        }
    }
}
