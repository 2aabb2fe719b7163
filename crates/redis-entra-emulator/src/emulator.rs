//! The whole local Azure, started together: PKI, tenant, token issuer, the fake Entra ID's
//! HTTPS endpoints, the managed-identity endpoint, the backend `redis-server`, the gateway and
//! the admin interface.
//!
//! Besides the identities of the env file, an [`Emulator`] can be driven at run time: access
//! keys ([`Emulator::set_access_keys_enabled`], [`Emulator::regenerate_key`]), access policies
//! ([`Emulator::create_custom_policy`], [`Emulator::assign_policy`],
//! [`Emulator::remove_policy_assignment`]), and all of that and more over HTTP through the
//! [`admin`](crate::admin) interface at [`Emulator::admin_url`].
//!
//! With [`EmulatorConfig::cluster`] set to `Some(n)` the backend is a [cluster](crate::cluster)
//! of `n` `redis-server` nodes, each behind its own gateway ([`Emulator::cluster_nodes`]); the
//! env file names node 0, and clients find the others with `CLUSTER SLOTS`, as with Azure
//! Managed Redis' OSS cluster policy. [`Emulator::restart_node`] and
//! [`Emulator::migrate_slot`] disturb it the ways a real cluster is disturbed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::access_keys::{AccessKeys, KeyType};
use crate::admin::{self, AdminState};
use crate::app_certificate::{AppCertificate, CertificateFiles};
use crate::backend::Backend;
use crate::cluster::Cluster;
use crate::directory::{AccessPolicy, Directory, FederatedCredential, Principal};
use crate::faults::Faults;
use crate::gateway::validate::{TokenValidator, DEFAULT_MAX_LIFETIME};
use crate::gateway::{Gateway, GatewayState};
use crate::identity::{self, IdentityState};
use crate::server_program::ServerProgram;
use crate::signing::TokenIssuer;
use crate::stats::Stats;
use crate::tls::Pki;
use crate::workload::{self, ServiceAccountIssuer};
use crate::{env_file, Error};

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

/// A running emulator. Dropping it stops its servers; [`Emulator::shutdown`] does it cleanly.
pub struct Emulator {
    config: EmulatorConfig,
    /// The identity server's sign-ins in progress.
    sign_in: Arc<identity::SignInState>,
    directory: Arc<Directory>,
    issuer: Arc<TokenIssuer>,
    faults: Arc<Faults>,
    stats: Arc<Stats>,
    pki: Pki,
    backend: Arc<Backend>,
    /// The gateways: one, or one per cluster node in node order.
    gateways: Vec<Gateway>,
    cluster: Option<Arc<Cluster>>,
    authority: String,
    msi_endpoint: String,
    imds_endpoint: String,
    arc_endpoint: String,
    identity_header: String,
    admin_url: String,
    admin_key: String,
    /// Hermetic mode's proxy, `http://127.0.0.1:PORT`.
    hermetic_proxy: Option<String>,
    service_principal: Principal,
    managed_identity: Principal,
    user_assigned_identity: Principal,
    certificate_app: Principal,
    app_certificate: AppCertificate,
    certificate_files: Option<CertificateFiles>,
    workload_app: Principal,
    service_account_issuer: Arc<ServiceAccountIssuer>,
    federated_token_file: PathBuf,
    files: tempfile::TempDir,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("authority", &self.authority)
            .field("gateway", &self.gateway_addr())
            .field("backend", &self.backend)
            .field("cluster", &self.cluster)
            .field("admin", &self.admin_url)
            .finish_non_exhaustive()
    }
}

async fn bind(port: u16, what: &str) -> Result<TcpListener, Error> {
    bind_on(std::net::Ipv4Addr::LOCALHOST.into(), port, what).await
}

async fn bind_on(ip: std::net::IpAddr, port: u16, what: &str) -> Result<TcpListener, Error> {
    TcpListener::bind((ip, port))
        .await
        .map_err(|e| Error::io(format!("binding the {what} to {ip}:{port}"), e))
}

impl Emulator {
    /// Starts everything; returns once every endpoint accepts connections.
    pub async fn start(config: EmulatorConfig) -> Result<Self, Error> {
        if config.hostname.is_empty() || config.hostname.contains(['/', ':', '@', ' ']) {
            return Err(Error::Config(format!(
                "{:?} is not a host name clients can reach the emulator by (--hostname): give a \
                 name such as localhost or redis-entra.test, without a port or a scheme",
                config.hostname
            )));
        }
        if config.token_lifetime > config.max_token_lifetime {
            return Err(Error::Config(format!(
                "the token lifetime ({} s) exceeds the longest lifetime the gateway accepts ({} s): \
                 raise --max-token-lifetime (max_token_lifetime) or shorten --token-lifetime (token_lifetime)",
                config.token_lifetime.as_secs(),
                config.max_token_lifetime.as_secs()
            )));
        }
        let mut names = vec![config.hostname.clone()];
        if !config.listen.is_unspecified() {
            names.push(config.listen.to_string());
        }
        if config.hermetic.is_some() {
            names.extend(identity::HERMETIC_HOSTS.iter().map(|h| h.to_string()));
        }
        let tenant = crate::state::prepare(
            config.state.as_deref(),
            config.well_known,
            &names,
            config.token_lifetime,
        )?;
        let (pki, directory, issuer) = (
            tenant.pki,
            Arc::new(tenant.directory),
            Arc::new(tenant.issuer),
        );
        let faults = Arc::new(Faults::default());
        let stats = Arc::new(Stats::default());
        let (service_principal, managed_identity, user_assigned_identity) = (
            tenant.service_principal,
            tenant.managed_identity,
            tenant.user_assigned_identity,
        );
        let (certificate_app, app_certificate, workload_app) = (
            tenant.certificate_app,
            tenant.app_certificate,
            tenant.workload_app,
        );

        let authority_listener =
            bind_on(config.listen, config.authority_port, "fake Entra ID").await?;
        let authority_addr = local(&authority_listener)?;
        let authority = format!("https://{}:{}", config.hostname, authority_addr.port());
        let msi_listener = bind(0, "managed identity endpoint").await?;
        let mut listeners: Vec<(&'static str, SocketAddr)> = vec![
            ("fake Entra ID", authority_addr),
            ("managed identity endpoint", local(&msi_listener)?),
        ];
        let msi_endpoint = format!(
            "http://127.0.0.1:{}/msi/token",
            local(&msi_listener)?.port()
        );
        let imds_listener = bind(config.imds_port, "instance metadata service (IMDS)").await?;
        listeners.push(("instance metadata service (IMDS)", local(&imds_listener)?));
        let imds_endpoint = format!(
            "http://127.0.0.1:{}/metadata/identity/oauth2/token",
            local(&imds_listener)?.port()
        );
        let identity_header = uuid::Uuid::new_v4().simple().to_string();
        let service_account_issuer = Arc::new(ServiceAccountIssuer::new(
            &identity::oidc_issuer_url(&authority, "aks-emulator"),
        )?);
        directory.trust_oidc_issuer(
            service_account_issuer.issuer(),
            vec![service_account_issuer.jwk().clone()],
        );
        directory.add_federated_credential(
            &workload_app.client_id,
            FederatedCredential::new(
                service_account_issuer.issuer(),
                &workload::service_account_subject(workload::NAMESPACE, workload::SERVICE_ACCOUNT),
            ),
        );

        let sign_in = Arc::new(identity::SignInState::default());
        let state = IdentityState {
            directory: directory.clone(),
            issuer: issuer.clone(),
            faults: faults.clone(),
            stats: stats.clone(),
            authority: authority.clone(),
            identity_header: identity_header.clone(),
            sign_in: sign_in.clone(),
        };
        let (stop, stop_rx) = watch::channel(false);
        let until_stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let mut servers = vec![
            identity::serve(
                authority_listener,
                Some(pki.server_config()),
                identity::authority_router(state.clone()),
                until_stopped(stop_rx.clone()),
            ),
            identity::serve(
                msi_listener,
                None,
                identity::managed_identity_router(state.clone()),
                until_stopped(stop_rx.clone()),
            ),
            identity::serve(
                imds_listener,
                None,
                identity::imds_router(state.clone()),
                until_stopped(stop_rx.clone()),
            ),
        ];

        let mut hermetic_proxy = None;
        if let Some(hermetic) = config.hermetic {
            let listener = bind(hermetic.port, "hermetic proxy").await?;
            listeners.push(("hermetic proxy", local(&listener)?));
            hermetic_proxy = Some(format!("http://127.0.0.1:{}", local(&listener)?.port()));
            servers.push(identity::serve_hermetic(
                listener,
                pki.server_config(),
                state.clone(),
                until_stopped(stop_rx.clone()),
            ));
        }

        let pending = PendingBackend::start(&config).await?;
        let backend = pending.first_backend()?;
        for listener in &pending.listeners {
            listeners.push(("Redis gateway", local(listener)?));
        }

        let admin_listener = bind(0, "admin interface").await?;
        let admin_url = format!("http://127.0.0.1:{}", local(&admin_listener)?.port());
        let admin_key = admin::generate_admin_key();
        servers.push(identity::serve(
            admin_listener,
            None,
            admin::router(AdminState {
                directory: directory.clone(),
                issuer: issuer.clone(),
                faults: faults.clone(),
                backend: backend.clone(),
                cluster: pending.cluster.clone(),
                stats: stats.clone(),
                admin_key: admin_key.clone(),
                max_token_lifetime: config.max_token_lifetime,
                listeners,
                profile: config.gateway.profile,
            }),
            until_stopped(stop_rx.clone()),
        ));
        let validator = Arc::new(
            TokenValidator::new(directory.clone())
                .with_authority(&authority)
                .with_skew(config.clock_skew)
                .with_max_lifetime(config.max_token_lifetime),
        );
        validator.trust(&issuer)?;
        let mut gateways = Vec::with_capacity(pending.listeners.len());
        for (listener, node_backend) in pending.listeners.into_iter().zip(pending.backends) {
            gateways.push(Gateway::serve(
                listener,
                pki.server_config(),
                GatewayState {
                    directory: directory.clone(),
                    validator: validator.clone(),
                    backend: node_backend,
                    stats: stats.clone(),
                    faults: faults.clone(),
                    config: config.gateway,
                },
            )?);
        }
        let cluster = pending.cluster;
        servers.extend(crate::profile::key_setting::spawn(
            config.gateway.profile,
            directory.access_keys(),
            backend.clone(),
            stop_rx.clone(),
        ));

        let files = tempfile::Builder::new()
            .prefix("redis-entra-emulator-")
            .tempdir()
            .map_err(|e| Error::io("creating the emulator's folder", e))?;
        let ca = files.path().join("ca.pem");
        std::fs::write(&ca, pki.ca_pem()).map_err(|e| Error::io("writing the CA file", e))?;
        let certificate_files = Some(app_certificate.write_files(files.path())?);
        let arc_listener = bind(0, "Azure Arc identity endpoint").await?;
        let arc_endpoint = format!(
            "http://127.0.0.1:{}/metadata/identity/oauth2/token",
            local(&arc_listener)?.port()
        );
        let arc_keys = files.path().join("azcmagent-tokens");
        std::fs::create_dir_all(&arc_keys)
            .map_err(|e| Error::io("creating the Arc key folder", e))?;
        servers.push(identity::serve(
            arc_listener,
            None,
            identity::arc_router(state, arc_keys),
            until_stopped(stop_rx.clone()),
        ));
        let federated_token_file = files.path().join("azure-identity-token");
        workload::write_token(
            &service_account_issuer,
            &federated_token_file,
            config.federated_token_lifetime,
        )?;
        servers.push(workload::spawn_rotation(
            service_account_issuer.clone(),
            federated_token_file.clone(),
            config.federated_token_lifetime,
            stop_rx.clone(),
        ));

        let gateway_addr = gateways
            .first()
            .map(Gateway::local_addr)
            .ok_or_else(|| Error::Config("the emulator has no gateway".into()))?;
        tracing::info!(%authority, gateway = %gateway_addr, backend = %backend.addr(), nodes = gateways.len(), admin = %admin_url, "emulator ready");
        Ok(Self {
            config,
            sign_in,
            directory,
            issuer,
            faults,
            stats,
            pki,
            backend,
            gateways,
            cluster,
            authority,
            msi_endpoint,
            imds_endpoint,
            arc_endpoint,
            identity_header,
            admin_url,
            admin_key,
            hermetic_proxy,
            service_principal,
            managed_identity,
            user_assigned_identity,
            certificate_app,
            app_certificate,
            certificate_files,
            workload_app,
            service_account_issuer,
            federated_token_file,
            files,
            stop,
            servers,
        })
    }

    /// The gateway's TLS address (host `localhost`, port as bound); in cluster mode node 0's.
    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateways
            .first()
            .map(|g| g.local_addr())
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// In cluster mode, each node's gateway TLS address (host `localhost`), in node order: the
    /// endpoints the nodes announce. Empty when not in cluster mode.
    pub fn cluster_nodes(&self) -> Vec<SocketAddr> {
        match &self.cluster {
            Some(_) => self.gateways.iter().map(Gateway::local_addr).collect(),
            None => Vec::new(),
        }
    }

    /// The cluster, in cluster mode.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    fn require_cluster(&self) -> Result<&Arc<Cluster>, Error> {
        self.cluster.as_ref().ok_or_else(|| {
            Error::Config("the emulator is not in cluster mode (start it with --cluster N)".into())
        })
    }

    /// Restarts cluster node `index`'s `redis-server` with the same ports, `nodes.conf`, users
    /// and data (see [`Cluster::restart_node`]); returns once the cluster is healthy again.
    pub async fn restart_node(&self, index: usize) -> Result<(), Error> {
        self.require_cluster()?.restart_node(index).await
    }

    /// Restarts the standalone backend `redis-server` (see [`Backend::restart`]): live gateway
    /// connections are cut (their clients see the connection closed), the server stays down for
    /// `down_for` (new connections get an error after their `AUTH`), then comes back on the same
    /// socket with its data and every access policy's user, so clients that reconnect
    /// authenticate as before. Returns once it answers again. Counted in
    /// [`Stats::backend_restarts`](crate::stats::Stats::backend_restarts).
    ///
    /// In cluster mode this is an error: use [`restart_node`](Self::restart_node). A backend the
    /// emulator did not spawn (`--backend`) cannot be restarted either.
    pub async fn restart_backend(&self, down_for: Duration) -> Result<(), Error> {
        if self.cluster.is_some() {
            return Err(Error::Config(
                "the emulator is in cluster mode: restart a node with restart_node (POST \
                 /admin/cluster/nodes/{index}/restart)"
                    .into(),
            ));
        }
        self.backend.restart(down_for).await?;
        crate::stats::Stats::bump(&self.stats.backend_restarts);
        Ok(())
    }

    /// Moves `slot` and its keys from cluster node `from` to node `to` (see
    /// [`Cluster::migrate_slot`]); clients see `-ASK` during the move and `-MOVED` after.
    /// Returns how many keys moved.
    pub async fn migrate_slot(&self, slot: u16, from: usize, to: usize) -> Result<usize, Error> {
        self.require_cluster()?.migrate_slot(slot, from, to).await
    }

    /// Hermetic mode's proxy, `http://127.0.0.1:PORT` (the env file's `HTTPS_PROXY`); `None`
    /// unless [`EmulatorConfig::hermetic`] is set.
    pub fn hermetic_proxy(&self) -> Option<&str> {
        self.hermetic_proxy.as_deref()
    }

    /// `https://localhost:PORT`: the fake Entra ID's authority host.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The Azure Arc managed-identity endpoint (himds' shape: a 401 challenge naming a key
    /// file, then IMDS's reply), `http://127.0.0.1:PORT/metadata/identity/oauth2/token`.
    pub fn arc_endpoint(&self) -> &str {
        &self.arc_endpoint
    }

    /// The App Service managed-identity endpoint (`IDENTITY_ENDPOINT`).
    pub fn managed_identity_endpoint(&self) -> &str {
        &self.msi_endpoint
    }

    /// The emulated VM's instance metadata service token endpoint,
    /// `http://127.0.0.1:PORT/metadata/identity/oauth2/token`: a listener of its own, needing
    /// only `Metadata: true`, serving the identities attached to the emulated compute resource.
    pub fn imds_endpoint(&self) -> &str {
        &self.imds_endpoint
    }

    /// The `IDENTITY_HEADER` secret.
    pub fn identity_header(&self) -> &str {
        &self.identity_header
    }

    /// The tenant id.
    pub fn tenant_id(&self) -> &str {
        self.directory.tenant_id()
    }

    /// The CA certificate (PEM) clients must trust.
    pub fn ca_pem(&self) -> &str {
        self.pki.ca_pem()
    }

    /// A file holding [`Self::ca_pem`].
    pub fn ca_file(&self) -> PathBuf {
        self.files.path().join("ca.pem")
    }

    /// The user created at start (`developer@emulator.localhost`, a random password, Data
    /// Owner), who signs in with the device code, username/password and browser flows.
    pub fn user(&self) -> crate::directory::UserAccount {
        self.directory
            .users()
            .into_iter()
            .next()
            .unwrap_or_else(|| crate::directory::UserAccount {
                username: String::new(),
                password: String::new(),
                object_id: String::new(),
            })
    }

    /// The service principal created at start (Data Owner).
    pub fn service_principal(&self) -> &Principal {
        &self.service_principal
    }

    /// The system-assigned managed identity created at start (Data Owner).
    pub fn managed_identity(&self) -> &Principal {
        &self.managed_identity
    }

    /// The user-assigned managed identity created at start (Data Owner).
    pub fn user_assigned_identity(&self) -> &Principal {
        &self.user_assigned_identity
    }

    /// The application that signs in with a certificate, created at start (Data Owner).
    pub fn certificate_app(&self) -> &Principal {
        &self.certificate_app
    }

    /// The certificate uploaded to [`Self::certificate_app`] (with its private key).
    pub fn app_certificate(&self) -> &AppCertificate {
        &self.app_certificate
    }

    /// Where the certificate and key of [`Self::certificate_app`] were written: PEM and
    /// password-protected PKCS#12, in the emulator's folder.
    pub fn certificate_files(&self) -> Option<&CertificateFiles> {
        self.certificate_files.as_ref()
    }

    /// The application of the workload identity, created at start with a federated
    /// credential for the emulator's cluster issuer and service account (Data Owner).
    pub fn workload_app(&self) -> &Principal {
        &self.workload_app
    }

    /// The cluster OIDC issuer that signs the service-account tokens (to mint tokens with
    /// other subjects or lifetimes).
    pub fn service_account_issuer(&self) -> &Arc<ServiceAccountIssuer> {
        &self.service_account_issuer
    }

    /// The projected service-account token file (`AZURE_FEDERATED_TOKEN_FILE`), rewritten at
    /// 80 % of [`EmulatorConfig::federated_token_lifetime`].
    pub fn federated_token_file(&self) -> &Path {
        &self.federated_token_file
    }

    /// The tenant's identities and access policies.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// The token issuer (to mint tokens with chosen claims, or change the lifetime).
    pub fn issuer(&self) -> &Arc<TokenIssuer> {
        &self.issuer
    }

    /// The faults in force.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// Counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The backend Redis (in cluster mode, node 0; every node shares its users).
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// The admin interface's URL, `http://127.0.0.1:PORT` (plain HTTP, loopback only; see
    /// [`admin`](crate::admin)). In the env file as `REDIS_ENTRA_EMULATOR_ADMIN`.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// The bearer key the admin interface requires (`Authorization: Bearer <key>`), generated
    /// at start. In the env file as `REDIS_ENTRA_EMULATOR_ADMIN_KEY`.
    pub fn admin_key(&self) -> &str {
        &self.admin_key
    }

    /// The cache's access keys.
    pub fn access_keys(&self) -> &AccessKeys {
        self.directory.access_keys()
    }

    /// The primary access key (44 characters of base64, as Azure's).
    pub fn primary_key(&self) -> String {
        self.access_keys().primary()
    }

    /// The secondary access key.
    pub fn secondary_key(&self) -> String {
        self.access_keys().secondary()
    }

    /// Whether access-key authentication is enabled (it is at start).
    pub fn access_keys_enabled(&self) -> bool {
        self.access_keys().enabled()
    }

    /// Enables or disables access-key authentication. While disabled, `AUTH <key>` and
    /// `AUTH default <key>` get `WRONGPASS`; disabling closes every connection in with a key
    /// at once, and every other one, Entra ones included, moments later, as Azure documents. As
    /// Azure Managed Redis (`--profile managed-redis`), enabling closes every connection too
    /// (see [`profile::key_setting`](crate::profile::key_setting)).
    pub fn set_access_keys_enabled(&self, enabled: bool) {
        self.access_keys().set_enabled(enabled);
    }

    /// Replaces an access key with a fresh one and returns it: the old one is refused for new
    /// `AUTH`s; connections already in with it stay open.
    pub fn regenerate_key(&self, which: KeyType) -> String {
        self.access_keys().regenerate(which)
    }

    /// Creates or updates a custom access policy with Redis ACL `rules` (`+@read ~app:*`): its
    /// backend user `entra-custom-<name>` is created or updated with `ACL SETUSER`. Rules Redis
    /// refuses give [`Error::InvalidPolicy`] with Redis' own text, and so does Azure Managed
    /// Redis' profile, which has no custom policies.
    pub async fn create_custom_policy(
        &self,
        name: &str,
        rules: &str,
    ) -> Result<AccessPolicy, Error> {
        crate::profile::policies::check_custom_policy(self.config.gateway.profile)?;
        let policy = AccessPolicy::custom(name, rules)?;
        self.backend.ensure_policy(&policy).await?;
        self.directory.define_policy(policy.clone());
        self.backend.update_identities(&policy).await?;
        Ok(policy)
    }

    /// Assigns `policy` to an object id, with an optional alias the gateway also accepts as the
    /// username, replacing any previous assignment. The identity's backend user (named by its
    /// object id) gets the policy's rules in place: connections already in follow at once.
    /// Under Azure Managed Redis' profile only its `default` policy can be assigned (see
    /// [`profile::policies::managed_redis_assignment`](crate::profile::policies::managed_redis_assignment)).
    pub async fn assign_policy(
        &self,
        object_id: &str,
        policy: AccessPolicy,
        alias: Option<&str>,
    ) -> Result<(), Error> {
        crate::profile::policies::check_policy(self.config.gateway.profile, &policy)?;
        crate::profile::policies::check_alias(self.config.gateway.profile, alias)?;
        self.backend.ensure_policy(&policy).await?;
        self.directory.define_policy(policy.clone());
        self.directory
            .assign_with_alias(object_id, policy.clone(), alias);
        if uuid::Uuid::parse_str(object_id).is_ok() {
            self.backend.ensure_identity(object_id, &policy).await?;
        }
        Ok(())
    }

    /// Removes an object id's assignment; returns whether it had one. Its next `AUTH`
    /// (including a re-`AUTH` with a new token) gets `WRONGPASS`; connections already in keep
    /// running until their token expires (see
    /// [`revoke_policy_assignment`](Self::revoke_policy_assignment) for Azure Managed Redis'
    /// in-place revocation).
    pub fn remove_policy_assignment(&self, object_id: &str) -> bool {
        self.directory.remove_assignment(object_id).is_some()
    }

    /// Removes an object id's assignment and its backend ACL user (`ACL DELUSER`), which makes
    /// Redis close the identity's live connections at once, as the admin plane's
    /// `DELETE /admin/assignments/{object_id}` does; returns whether it had one.
    pub async fn revoke_policy_assignment(&self, object_id: &str) -> Result<bool, Error> {
        let removed = self.directory.remove_assignment(object_id).is_some();
        if removed {
            self.backend.remove_identity(object_id).await?;
        }
        Ok(removed)
    }

    /// Users' sign-ins in progress (device codes, authorization codes, refresh tokens) and how
    /// the identity server approves them.
    pub fn sign_in(&self) -> &identity::SignInState {
        &self.sign_in
    }

    /// The configuration it started with.
    pub fn config(&self) -> &EmulatorConfig {
        &self.config
    }

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

    /// Stops the servers and a spawned `redis-server` (every node, in cluster mode).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for gateway in self.gateways.drain(..) {
            gateway.shutdown().await;
        }
        for server in self.servers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
        }
        if let Some(cluster) = self.cluster.take() {
            cluster.shutdown().await;
        }
        self.backend.shutdown().await;
    }
}

fn local(listener: &TcpListener) -> Result<SocketAddr, Error> {
    listener
        .local_addr()
        .map_err(|e| Error::io("reading a listener's address", e))
}

/// The backend side, started before the admin interface and the gateways: one backend and one
/// bound gateway listener per node.
struct PendingBackend {
    listeners: Vec<TcpListener>,
    backends: Vec<Arc<Backend>>,
    cluster: Option<Arc<Cluster>>,
}

impl PendingBackend {
    async fn start(config: &EmulatorConfig) -> Result<Self, Error> {
        let Some(n) = config.cluster else {
            let backend = Arc::new(match &config.backend {
                Some(url) => Backend::external(url).await?,
                None => Backend::spawn_with(&config.redis_server).await?,
            });
            let listener = bind_on(config.listen, config.gateway_port, "Redis gateway").await?;
            return Ok(Self {
                listeners: vec![listener],
                backends: vec![backend],
                cluster: None,
            });
        };
        if config.backend.is_some() {
            return Err(Error::Config(
                "cluster mode spawns its own redis-server nodes: it cannot front --backend".into(),
            ));
        }
        if n == 0 || n > usize::from(crate::cluster::SLOTS) {
            return Err(Error::Config(format!(
                "--cluster needs between 1 and {} nodes, not {n}",
                crate::cluster::SLOTS
            )));
        }
        // The gateways' ports first: each node announces its gateway's.
        let mut listeners = Vec::with_capacity(n);
        let mut ports = Vec::with_capacity(n);
        for i in 0..n {
            let port = if i == 0 { config.gateway_port } else { 0 };
            let listener = bind_on(config.listen, port, "Redis gateway").await?;
            ports.push(local(&listener)?.port());
            listeners.push(listener);
        }
        let cluster =
            Arc::new(Cluster::start_with(&ports, &config.redis_server, &config.hostname).await?);
        let backends = (0..n)
            .map(|i| {
                cluster
                    .backend(i)
                    .cloned()
                    .ok_or_else(|| Error::Backend(format!("cluster node {i} has no backend")))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Self {
            listeners,
            backends,
            cluster: Some(cluster),
        })
    }

    fn first_backend(&self) -> Result<Arc<Backend>, Error> {
        self.backends
            .first()
            .cloned()
            .ok_or_else(|| Error::Backend("no backend".into()))
    }
}
