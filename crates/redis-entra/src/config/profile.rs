//! Azure profiles: which Azure Redis service a host name belongs to, in which cloud, and what
//! follows from it (TLS port, protocol, authority host).

use crate::connect::options::Protocol;

/// The scope of Azure Cache for Redis and Azure Managed Redis, resource-URI form.
pub const SCOPE: &str = "https://redis.azure.com/.default";
/// The same scope in its application-id form.
pub const SCOPE_APP_ID: &str = "acca5fbb-b7e4-4009-81f1-37e38fd66d78/.default";

/// Which Azure Redis service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AzureService {
    /// Azure Cache for Redis (Basic/Standard/Premium): TLS on 6380.
    CacheForRedis,
    /// Azure Managed Redis (and Azure Cache for Redis Enterprise): TLS on 10000, RESP3.
    ManagedRedis,
    /// A host name of no known Azure domain (a private endpoint alias, the emulator…).
    Unknown,
}

/// Which Azure cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AzureCloud {
    /// The public cloud.
    Public,
    /// Azure Government.
    UsGovernment,
    /// Azure operated by 21Vianet (China).
    China,
}

impl AzureCloud {
    /// The Entra ID authority host of the cloud.
    pub fn authority_host(&self) -> &'static str {
        match self {
            Self::Public => "https://login.microsoftonline.com",
            Self::UsGovernment => "https://login.microsoftonline.us",
            Self::China => "https://login.chinacloudapi.cn",
        }
    }
}

const DOMAINS: &[(&str, AzureService, AzureCloud)] = &[
    (
        ".redis.cache.windows.net",
        AzureService::CacheForRedis,
        AzureCloud::Public,
    ),
    (
        ".redis.cache.usgovcloudapi.net",
        AzureService::CacheForRedis,
        AzureCloud::UsGovernment,
    ),
    (
        ".redis.cache.chinacloudapi.cn",
        AzureService::CacheForRedis,
        AzureCloud::China,
    ),
    (
        ".redisenterprise.cache.azure.net",
        AzureService::ManagedRedis,
        AzureCloud::Public,
    ),
    (
        ".redis.azure.net",
        AzureService::ManagedRedis,
        AzureCloud::Public,
    ),
    (
        ".redis.usgovcloudapi.net",
        AzureService::ManagedRedis,
        AzureCloud::UsGovernment,
    ),
    (
        ".redis.chinacloudapi.cn",
        AzureService::ManagedRedis,
        AzureCloud::China,
    ),
];

/// What a host name says about the service behind it.
///
/// ```
/// use redis_entra::config::{AzureProfile, AzureService, AzureCloud};
/// let p = AzureProfile::from_host("mycache.redis.cache.windows.net");
/// assert_eq!((p.service, p.cloud, p.default_port()), (AzureService::CacheForRedis, AzureCloud::Public, 6380));
/// let p = AzureProfile::from_host("myredis.westeurope.redis.azure.net");
/// assert_eq!((p.service, p.default_port()), (AzureService::ManagedRedis, 10000));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AzureProfile {
    /// The service.
    pub service: AzureService,
    /// The cloud.
    pub cloud: AzureCloud,
}

impl AzureProfile {
    /// The profile of a host name (case-insensitive; unknown domains are `Unknown` in the
    /// public cloud).
    pub fn from_host(host: &str) -> Self {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        DOMAINS
            .iter()
            .find(|(suffix, _, _)| host.ends_with(suffix))
            .map(|&(_, service, cloud)| Self { service, cloud })
            .unwrap_or(Self {
                service: AzureService::Unknown,
                cloud: AzureCloud::Public,
            })
    }

    /// The TLS port: 6380 for Azure Cache for Redis, 10000 for Azure Managed Redis.
    pub fn default_port(&self) -> u16 {
        match self.service {
            AzureService::ManagedRedis => 10000,
            _ => 6380,
        }
    }

    /// RESP3 on Azure Managed Redis (Redis ≥ 7.4 there), RESP2 elsewhere.
    pub fn default_protocol(&self) -> Protocol {
        match self.service {
            AzureService::ManagedRedis => Protocol::Resp3,
            _ => Protocol::Resp2,
        }
    }
}
