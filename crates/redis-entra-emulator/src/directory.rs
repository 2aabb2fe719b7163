//! The emulator's tenant: its identities (service principals, managed identities) and the Redis
//! access policies assigned to them, as an Azure cache's "Data Access Configuration" holds them.

use std::collections::HashMap;
use std::sync::RwLock;

use uuid::Uuid;

/// The Redis scope in its resource-URI form, as token requests name it.
pub const REDIS_RESOURCE: &str = "https://redis.azure.com";
/// The application id of "Azure Cache for Redis" (the scope's GUID form).
pub const REDIS_APP_ID: &str = "acca5fbb-b7e4-4009-81f1-37e38fd66d78";

/// What kind of identity a principal is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PrincipalKind {
    /// An application's service principal, signing in with a client secret.
    ServicePrincipal,
    /// A system-assigned managed identity.
    SystemAssignedIdentity,
    /// A user-assigned managed identity.
    UserAssignedIdentity,
}

/// One identity of the tenant.
#[derive(Clone)]
pub struct Principal {
    /// A name for people.
    pub display_name: String,
    /// The application (client) id: `appid` in tokens.
    pub client_id: String,
    /// The object id: `oid` in tokens, and the Redis username.
    pub object_id: String,
    /// What kind of identity this is.
    pub kind: PrincipalKind,
    /// The client secret of a service principal.
    pub secret: Option<String>,
    /// The ARM resource id of a managed identity (`xms_mirid`).
    pub resource_id: Option<String>,
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("display_name", &self.display_name)
            .field("client_id", &self.client_id)
            .field("object_id", &self.object_id)
            .field("kind", &self.kind)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("resource_id", &self.resource_id)
            .finish()
    }
}

/// A Redis data-access policy, as Azure Cache for Redis defines them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AccessPolicy {
    /// `+@all allkeys`
    DataOwner,
    /// `+@all -@dangerous +cluster|info +cluster|nodes +cluster|slots allkeys`
    DataContributor,
    /// `+@read +@connection +cluster|info +cluster|nodes +cluster|slots allkeys`
    DataReader,
}

impl AccessPolicy {
    /// The policy's name as the Azure portal shows it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::DataOwner => "Data Owner",
            Self::DataContributor => "Data Contributor",
            Self::DataReader => "Data Reader",
        }
    }

    /// The Redis ACL rules the policy grants.
    pub fn acl_rules(&self) -> &'static str {
        match self {
            Self::DataOwner => "+@all allkeys allchannels",
            Self::DataContributor => {
                "+@all -@dangerous +cluster|info +cluster|nodes +cluster|slots allkeys allchannels"
            }
            Self::DataReader => {
                "+@read +@connection +cluster|info +cluster|nodes +cluster|slots allkeys allchannels"
            }
        }
    }

    /// The backend ACL user that carries this policy.
    pub fn backend_user(&self) -> &'static str {
        match self {
            Self::DataOwner => "entra-data-owner",
            Self::DataContributor => "entra-data-contributor",
            Self::DataReader => "entra-data-reader",
        }
    }

    /// Every built-in policy.
    pub fn all() -> [AccessPolicy; 3] {
        [Self::DataOwner, Self::DataContributor, Self::DataReader]
    }
}

/// The tenant: identities and their access-policy assignments.
#[derive(Debug)]
pub struct Directory {
    tenant_id: String,
    principals: RwLock<Vec<Principal>>,
    assignments: RwLock<HashMap<String, AccessPolicy>>,
}

impl Directory {
    /// A tenant with a fresh id and no identities.
    pub fn new() -> Self {
        Self {
            tenant_id: Uuid::new_v4().to_string(),
            principals: RwLock::new(Vec::new()),
            assignments: RwLock::new(HashMap::new()),
        }
    }

    /// The tenant id (`tid`).
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// Creates a service principal with a fresh client secret.
    pub fn create_service_principal(&self, display_name: &str) -> Principal {
        let secret = format!(
            "emu~{}",
            Uuid::new_v4().simple().to_string().replace('-', "")
        );
        self.add(Principal {
            display_name: display_name.to_string(),
            client_id: Uuid::new_v4().to_string(),
            object_id: Uuid::new_v4().to_string(),
            kind: PrincipalKind::ServicePrincipal,
            secret: Some(secret),
            resource_id: None,
        })
    }

    /// Creates a managed identity (system- or user-assigned).
    pub fn create_managed_identity(&self, display_name: &str, user_assigned: bool) -> Principal {
        let (kind, resource_id) = if user_assigned {
            (
                PrincipalKind::UserAssignedIdentity,
                format!(
                    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/emulator/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{display_name}"
                ),
            )
        } else {
            (
                PrincipalKind::SystemAssignedIdentity,
                format!(
                    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/emulator/providers/Microsoft.Web/sites/{display_name}"
                ),
            )
        };
        self.add(Principal {
            display_name: display_name.to_string(),
            client_id: Uuid::new_v4().to_string(),
            object_id: Uuid::new_v4().to_string(),
            kind,
            secret: None,
            resource_id: Some(resource_id),
        })
    }

    fn add(&self, principal: Principal) -> Principal {
        self.principals
            .write()
            .expect("directory lock poisoned")
            .push(principal.clone());
        principal
    }

    /// The principal with this client (application) id.
    pub fn by_client_id(&self, client_id: &str) -> Option<Principal> {
        self.find(|p| p.client_id.eq_ignore_ascii_case(client_id))
    }

    /// The principal with this object id.
    pub fn by_object_id(&self, object_id: &str) -> Option<Principal> {
        self.find(|p| p.object_id.eq_ignore_ascii_case(object_id))
    }

    /// The managed identity with this ARM resource id.
    pub fn by_resource_id(&self, resource_id: &str) -> Option<Principal> {
        self.find(|p| {
            p.resource_id
                .as_deref()
                .is_some_and(|r| r.eq_ignore_ascii_case(resource_id))
        })
    }

    /// The tenant's system-assigned managed identity, if it has one.
    pub fn system_assigned_identity(&self) -> Option<Principal> {
        self.find(|p| p.kind == PrincipalKind::SystemAssignedIdentity)
    }

    fn find(&self, pred: impl Fn(&Principal) -> bool) -> Option<Principal> {
        self.principals
            .read()
            .expect("directory lock poisoned")
            .iter()
            .find(|p| pred(p))
            .cloned()
    }

    /// Assigns a policy to an object id (replacing any previous assignment).
    pub fn assign(&self, object_id: &str, policy: AccessPolicy) {
        self.assignments
            .write()
            .expect("directory lock poisoned")
            .insert(object_id.to_ascii_lowercase(), policy);
    }

    /// Removes an object id's assignment.
    pub fn unassign(&self, object_id: &str) {
        self.assignments
            .write()
            .expect("directory lock poisoned")
            .remove(&object_id.to_ascii_lowercase());
    }

    /// The policy assigned to an object id.
    pub fn policy_of(&self, object_id: &str) -> Option<AccessPolicy> {
        self.assignments
            .read()
            .expect("directory lock poisoned")
            .get(&object_id.to_ascii_lowercase())
            .cloned()
    }
}

impl Default for Directory {
    fn default() -> Self {
        Self::new()
    }
}
