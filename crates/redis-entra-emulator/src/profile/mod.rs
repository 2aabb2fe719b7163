//! What the emulator does differently when it plays Azure Managed Redis (`--profile
//! managed-redis`) rather than Azure Cache for Redis (the default), each difference from
//! Microsoft's documentation (docs/EMULATOR.md lists them with their sources):
//!
//! | | Azure Cache for Redis | Azure Managed Redis | source (Microsoft Learn page) |
//! |---|---|---|---|
//! | gateway port when none is given | a free one (Azure's is 6380) | 10000 | "Azure Managed Redis architecture" (cluster policies: "The initial connection is through port 10000") |
//! | access policies | Data Owner, Data Contributor, Data Reader, custom policies | one, `default` (full access), with an optional access string per assignment | "Use Microsoft Entra for cache authentication with Azure Managed Redis"; "Configure custom data access permissions (preview)" |
//! | assignment alias | `objectIdAlias` | none (object id only) | "Configure custom data access permissions (preview)" |
//! | changing access-key authentication | closes access-key connections when disabled | closes every connection, key or Entra, either way | "Use Microsoft Entra for cache authentication with Azure Managed Redis" |
//! | cluster policies | (`--cluster N`) | `oss` (`--cluster N`), `enterprise` (one endpoint, slot rules of Redis Enterprise's proxy), `non-clustered` | "Azure Managed Redis architecture" (cluster policies); Redis' "Multi-key operations" |
//! | unsupported commands | [`AZURE_CACHE_FOR_REDIS`](crate::unsupported::AZURE_CACHE_FOR_REDIS) | [`AZURE_MANAGED_REDIS`](crate::unsupported::AZURE_MANAGED_REDIS) | docs/UNSUPPORTED-COMMANDS.md |
//!
//! The product is [`GatewayConfig::profile`](crate::gateway::GatewayConfig::profile) (in
//! [`EmulatorConfig::gateway`](crate::EmulatorConfig::gateway)); [`policies`] holds the access
//! policy model and [`key_setting`] the reaction to access keys being switched.

pub mod key_setting;
pub mod policies;

use std::str::FromStr;

pub use crate::unsupported::Profile;
use crate::Error;

/// Azure Managed Redis' port, TLS or not ("The initial connection is through port 10000").
pub const MANAGED_REDIS_PORT: u16 = 10000;

/// Azure Cache for Redis' TLS port (for reference: the emulator picks a free port for this
/// profile unless told otherwise, so that several emulators can run at once).
pub const AZURE_CACHE_FOR_REDIS_TLS_PORT: u16 = 6380;

/// How many nodes `--cluster-policy oss` runs when `--cluster N` does not say.
pub const DEFAULT_OSS_NODES: usize = 3;

impl Profile {
    /// The name on the command line: `azure-cache-for-redis` or `managed-redis`.
    pub fn name(self) -> &'static str {
        match self {
            Self::AzureCacheForRedis => "azure-cache-for-redis",
            Self::AzureManagedRedis => "managed-redis",
        }
    }

    /// The gateway's port when none is given: 10000 for Azure Managed Redis (where clients
    /// expect it), 0 (a free port) for Azure Cache for Redis.
    pub fn default_gateway_port(self) -> u16 {
        match self {
            Self::AzureCacheForRedis => 0,
            Self::AzureManagedRedis => MANAGED_REDIS_PORT,
        }
    }

    /// Whether *enabling* access-key authentication closes every client connection too.
    /// Disabling it does on both products, Entra connections included: "Disabling access key
    /// authentication terminates all existing client connections" (Azure Cache for Redis).
    /// Azure Managed Redis closes them on any change: "When the Disable Access Keys
    /// Authentication setting is changed for a cache, all existing client connections, using
    /// access keys or Microsoft Entra, are terminated."
    pub fn enabling_keys_closes_all(self) -> bool {
        matches!(self, Self::AzureManagedRedis)
    }
}

impl FromStr for Profile {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "azure-cache-for-redis" | "cache-for-redis" | "azure-cache" => {
                Ok(Self::AzureCacheForRedis)
            }
            "managed-redis" | "azure-managed-redis" | "amr" => Ok(Self::AzureManagedRedis),
            _ => Err(Error::Config(format!(
                "unknown profile {s:?}: use azure-cache-for-redis (the default) or managed-redis"
            ))),
        }
    }
}

/// An Azure Managed Redis cluster policy (`--cluster-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterPolicy {
    /// OSS: the Redis Cluster API; clients see every node through `CLUSTER SLOTS`/`NODES`
    /// and follow `MOVED`/`ASK` (the emulator's `--cluster N`).
    Oss,
    /// Non-Clustered: one node, no sharding.
    NonClustered,
    /// Enterprise: one endpoint, Redis Enterprise's proxy in front of the shards. Clients need
    /// no cluster support; commands with keys in several hash slots are refused but for
    /// `DEL`, `EXISTS`, `MGET`, `MSET`, `TOUCH` and `UNLINK`, and a transaction's keys must
    /// share one slot (the gateway plays the proxy in front of one `redis-server`).
    Enterprise,
}

impl ClusterPolicy {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Oss => "oss",
            Self::NonClustered => "non-clustered",
            Self::Enterprise => "enterprise",
        }
    }
}

impl FromStr for ClusterPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "oss" => Ok(Self::Oss),
            "non-clustered" | "nonclustered" | "none" => Ok(Self::NonClustered),
            "enterprise" => Ok(Self::Enterprise),
            _ => Err(Error::Config(format!(
                "unknown cluster policy {s:?}: use oss, enterprise or non-clustered"
            ))),
        }
    }
}

/// How many cluster nodes to run (`None`: one standalone backend), from the profile, the
/// cluster policy (`--cluster-policy`) and the node count (`--cluster N`). A cluster policy
/// needs the Azure Managed Redis profile; `non-clustered` and `enterprise` (one endpoint) take
/// no node count; `oss` runs [`DEFAULT_OSS_NODES`] unless told otherwise.
pub fn cluster_nodes(
    profile: Profile,
    policy: Option<ClusterPolicy>,
    nodes: Option<usize>,
) -> Result<Option<usize>, Error> {
    match (profile, policy, nodes) {
        (_, None, nodes) => Ok(nodes),
        (Profile::AzureCacheForRedis, Some(policy), _) => Err(Error::Config(format!(
            "--cluster-policy {} is an Azure Managed Redis setting: add --profile managed-redis \
             (for Azure Cache for Redis, --cluster N alone runs a cluster)",
            policy.name()
        ))),
        (_, Some(policy @ (ClusterPolicy::NonClustered | ClusterPolicy::Enterprise)), Some(n)) => {
            Err(Error::Config(format!(
                "--cluster-policy {} has one endpoint: leave out --cluster {n}, or use \
                 --cluster-policy oss",
                policy.name()
            )))
        }
        (_, Some(ClusterPolicy::NonClustered | ClusterPolicy::Enterprise), None) => Ok(None),
        (_, Some(ClusterPolicy::Oss), nodes) => Ok(Some(nodes.unwrap_or(DEFAULT_OSS_NODES))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ports_and_cluster_policies() {
        let amr: Profile = "managed-redis".parse().unwrap();
        assert_eq!(amr, Profile::AzureManagedRedis);
        assert_eq!(amr.default_gateway_port(), 10000);
        assert_eq!(Profile::default().default_gateway_port(), 0);
        assert!(amr.enabling_keys_closes_all());
        assert!(!Profile::AzureCacheForRedis.enabling_keys_closes_all());
        let bad = "premium".parse::<Profile>().unwrap_err().to_string();
        assert!(bad.contains("managed-redis"), "{bad}");

        let oss = Some(ClusterPolicy::Oss);
        let single = Some(ClusterPolicy::NonClustered);
        assert_eq!(cluster_nodes(amr, oss, None).unwrap(), Some(3));
        assert_eq!(cluster_nodes(amr, oss, Some(2)).unwrap(), Some(2));
        assert_eq!(cluster_nodes(amr, single, None).unwrap(), None);
        assert_eq!(cluster_nodes(amr, None, Some(2)).unwrap(), Some(2));
        assert!(cluster_nodes(amr, single, Some(2)).is_err());
        let acr = cluster_nodes(Profile::AzureCacheForRedis, oss, None).unwrap_err();
        assert!(acr.to_string().contains("--profile managed-redis"), "{acr}");
        let enterprise = Some(ClusterPolicy::Enterprise);
        assert_eq!(cluster_nodes(amr, enterprise, None).unwrap(), None);
        let nodes = cluster_nodes(amr, enterprise, Some(3)).unwrap_err();
        assert!(nodes.to_string().contains("one endpoint"), "{nodes}");
        let bad = "enterprize".parse::<ClusterPolicy>().unwrap_err();
        assert!(bad.to_string().contains("enterprise"), "{bad}");
    }
}
