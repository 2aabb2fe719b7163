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

mod config;
mod env;
mod start;
pub use config::{EmulatorConfig, IdentityKind};

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

impl Emulator {
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
