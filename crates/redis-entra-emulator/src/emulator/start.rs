//! Starting an [`Emulator`](super::Emulator): the PKI and tenant, the backend (one server or
//! a cluster), the fake Entra ID's listeners, the gateways and the admin interface.

use super::*;

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
        servers.push(crate::profile::key_setting::spawn(
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
