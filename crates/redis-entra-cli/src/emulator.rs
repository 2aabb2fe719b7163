//! `redis-entra emulator`: run the local Azure until interrupted.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use redis_entra_emulator::profile::{ClusterPolicy, Profile};
use redis_entra_emulator::{Emulator, EmulatorConfig, IdentityKind};

use crate::Outcome;

/// Parses `20s`, `5m`, `1h` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.trim().parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}): write it like 20s, 5m or 1h"))
}

/// `emulator`'s flags.
#[derive(Debug, Args)]
pub struct EmulatorArgs {
    /// How long tokens live (e.g. 5s, 20s, 1h).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub token_lifetime: Duration,
    /// The identity the env file describes: service-principal, managed-identity,
    /// user-assigned-identity, workload-identity, certificate or access-key.
    #[arg(long, default_value = "service-principal")]
    pub identity: IdentityKind,
    /// Write `export NAME=VALUE` lines here once ready (atomically).
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// Front an existing Redis (redis://USER:PASS@HOST:PORT or unix:///PATH) instead of
    /// spawning redis-server.
    #[arg(long)]
    pub backend: Option<String>,
    /// The gateway's TLS port on 127.0.0.1 (0: a free one). Default: a free one, or 10000 with
    /// --profile managed-redis (Azure Managed Redis' port).
    #[arg(long)]
    pub port: Option<u16>,
    /// The Azure product to play: azure-cache-for-redis (the default) or managed-redis (Azure
    /// Managed Redis: port 10000, one `default` access policy, every connection closed when
    /// access keys are switched, --cluster-policy).
    #[arg(long, default_value = "azure-cache-for-redis")]
    pub profile: Profile,
    /// Azure Managed Redis' cluster policy (with --profile managed-redis): oss (a cluster of
    /// --cluster N nodes, 3 by default, which clients see through CLUSTER SLOTS), enterprise
    /// (one endpoint; commands and transactions across hash slots refused as Redis
    /// Enterprise's proxy refuses them) or non-clustered (one node).
    #[arg(long, value_name = "POLICY")]
    pub cluster_policy: Option<ClusterPolicy>,
    /// The fake Entra ID's HTTPS port on 127.0.0.1 (0: a free one).
    #[arg(long, default_value_t = 0)]
    pub authority_port: u16,
    /// The emulated VM's instance metadata service (IMDS) port on 127.0.0.1, plain HTTP, a
    /// listener of its own (0: a free one); the env file names it as REDIS_ENTRA_EMULATOR_IMDS.
    #[arg(long, default_value_t = 0)]
    pub imds_port: u16,
    /// Run an OSS-policy cluster of N redis-server nodes, each behind its own gateway listener
    /// (CLUSTER SLOTS, MOVED and ASK name the gateways); the env file names the first node.
    #[arg(long = "cluster", id = "cluster_nodes", value_name = "N")]
    pub cluster_nodes: Option<usize>,
    /// How long the workload identity's service-account tokens live; the emulator rewrites
    /// AZURE_FEDERATED_TOKEN_FILE at 80 % of it.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub federated_token_lifetime: Duration,
    /// Clock skew the gateway tolerates on exp/nbf.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub clock_skew: Duration,
    /// The longest token lifetime the gateway accepts (exp - iat, exp - nbf and exp - now,
    /// each plus the clock skew); at least --token-lifetime.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub max_token_lifetime: Duration,
    /// The most client connections the gateway keeps open at once (as an Azure SKU's limit);
    /// one more gets `ERR max number of clients reached`.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,
    /// How long a client has to authenticate after its TLS handshake (or a RESET).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub auth_timeout: Duration,
    /// The server to run behind the gateway: any redis-server or valkey-server binary (a path,
    /// or a name looked up in PATH).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "redis-server",
        env = "REDIS_ENTRA_EMULATOR_REDIS_SERVER"
    )]
    pub redis_server: PathBuf,
    /// The address the fake Entra ID and the gateways listen on (0.0.0.0 for every interface,
    /// e.g. to serve other containers); the managed-identity endpoints, IMDS and the admin
    /// interface stay on 127.0.0.1.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub listen: std::net::IpAddr,
    /// The host name clients reach the emulator by: in the authority URL, the env file and what
    /// cluster nodes announce; the server certificate names it (and --listen's address).
    #[arg(long, value_name = "NAME", default_value = "localhost")]
    pub hostname: String,
    /// Keep the CA, the token signing key and the identities (tenant, client ids, object ids,
    /// secrets, access keys) in this folder across restarts: a missing or empty folder is
    /// filled at the first start, and read at later ones (DIR/ca.pem is the CA to trust).
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Use the documented well-known identities (fixed tenant, client ids, object ids and
    /// public test secrets; see docs/EMULATOR.md) instead of new ones.
    #[arg(long)]
    pub well_known: bool,
    /// Write the CA certificate (PEM, what clients must trust) to this file once ready.
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// Answer as Entra ID itself: the env file sets HTTPS_PROXY to a listener on 127.0.0.1 that
    /// serves CONNECT login.microsoftonline.com:443 with Entra's real issuers (no
    /// AZURE_AUTHORITY_HOST, instance discovery on), and refuses every other host.
    #[arg(long)]
    pub hermetic: bool,
    /// The --hermetic listener's port on 127.0.0.1 (0: a free one; 443 serves clients sent
    /// there by /etc/hosts, which needs the right to bind it).
    #[arg(long, value_name = "PORT", requires = "hermetic")]
    pub hermetic_port: Option<u16>,
}

/// Writes the CA certificate to `path` atomically, readable by everyone (it is public).
fn write_ca_file(path: &std::path::Path, pem: &str) -> anyhow::Result<()> {
    redis_entra_emulator::env_file::write_atomic(path, pem)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The gateway's port: `--port`, or the profile's default, which must then be free (a clear
/// error rather than a bind failure deep in the start-up when 10000 is taken).
fn gateway_port(args: &EmulatorArgs) -> anyhow::Result<u16> {
    if let Some(port) = args.port {
        return Ok(port);
    }
    let port = args.profile.default_gateway_port();
    if port != 0 {
        if let Err(e) = std::net::TcpListener::bind((args.listen, port)) {
            anyhow::bail!(
                "port {port}, the default of --profile {} (the port its clients expect), is not \
                 free on {} ({e}): stop what listens there, or pass --port N (--port 0 for any \
                 free port)",
                args.profile.name(),
                args.listen
            );
        }
    }
    Ok(port)
}

/// Runs the emulator until SIGINT or SIGTERM.
pub async fn run(args: EmulatorArgs) -> Outcome {
    let cluster = redis_entra_emulator::profile::cluster_nodes(
        args.profile,
        args.cluster_policy,
        args.cluster_nodes,
    )
    .map_err(anyhow::Error::from)?;
    let gateway_port = gateway_port(&args)?;
    let emulator = Emulator::start(EmulatorConfig {
        token_lifetime: args.token_lifetime,
        identity: args.identity,
        backend: args.backend,
        gateway_port,
        authority_port: args.authority_port,
        imds_port: args.imds_port,
        clock_skew: args.clock_skew,
        max_token_lifetime: args.max_token_lifetime,
        cluster,
        federated_token_lifetime: args.federated_token_lifetime,
        gateway: redis_entra_emulator::gateway::GatewayConfig {
            max_connections: args.max_connections,
            auth_timeout: args.auth_timeout,
            profile: args.profile,
            cluster_policy: args.cluster_policy,
        },
        redis_server: redis_entra_emulator::ServerProgram::new(args.redis_server),
        listen: args.listen,
        hostname: args.hostname.clone(),
        state: args.state.clone(),
        well_known: args.well_known,
        hermetic: args
            .hermetic
            .then(|| redis_entra_emulator::identity::HermeticConfig {
                port: args.hermetic_port.unwrap_or(0),
            }),
    })
    .await
    .context("starting the emulator")?;
    if let Some(path) = &args.ca_file {
        write_ca_file(path, emulator.ca_pem())
            .with_context(|| format!("writing the CA certificate to {}", path.display()))?;
    }
    if let Some(path) = &args.env_file {
        emulator
            .write_env_file(path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!(
        "redis-entra emulator ({}): Entra ID at {}, Redis gateway at {}:{}, backend {}, tokens live {:?}, identity {}",
        args.profile.name(),
        emulator.authority(),
        args.hostname,
        emulator.gateway_addr().port(),
        emulator.backend().addr(),
        args.token_lifetime,
        args.identity.name(),
    );
    if let Some(dir) = &args.state {
        eprintln!(
            "redis-entra emulator: CA, signing key and identities kept in {} (trust {})",
            dir.display(),
            redis_entra_emulator::state::files::ca_file(dir).display()
        );
    }
    if let Some(proxy) = emulator.hermetic_proxy() {
        eprintln!(
            "redis-entra emulator: hermetic: answering as {} through the proxy at {proxy} (HTTPS_PROXY)",
            redis_entra_emulator::identity::PUBLIC_CLOUD_AUTHORITY
        );
    }
    let nodes = emulator.cluster_nodes();
    if !nodes.is_empty() {
        let ports: Vec<String> = nodes.iter().map(|a| a.port().to_string()).collect();
        eprintln!(
            "redis-entra emulator: cluster of {} nodes at {} ports {}",
            nodes.len(),
            args.hostname,
            ports.join(", ")
        );
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    terminated().await;
    eprintln!(
        "redis-entra emulator: stopping: {}",
        emulator.stats().summary()
    );
    emulator.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
