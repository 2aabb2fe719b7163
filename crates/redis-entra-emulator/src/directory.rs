//! The emulator's tenant and its cache's data-access configuration: the identities (service
//! principals, managed identities), the Redis access policies (the three built-ins and custom
//! ones), which policy each identity is assigned (with an optional alias), and the cache's
//! access keys.
//!
//! # Access policies
//!
//! As on Azure Cache for Redis, an identity authenticates as `AUTH <object id> <token>` and gets
//! the permissions of the one policy assigned to it; an identity without an assignment gets
//! `WRONGPASS`. Each policy is a real ACL user on the backend (see
//! [`Backend`](crate::backend::Backend)), so `NOPERM` replies come from Redis itself.
//!
//! - Changing or removing an assignment takes effect on the next `AUTH` (or `HELLO … AUTH`):
//!   connections that are already in keep the permissions they had until they re-authenticate
//!   or their token expires. A re-`AUTH` after the assignment was removed gets `WRONGPASS`
//!   and, as in Redis, leaves the connection as it was.
//! - Updating a custom policy's rules changes them in place, for live connections too (it is an
//!   `ACL SETUSER` on the policy's user), as Azure Managed Redis does "without disconnecting".
//! - An identity holds one assignment at a time; assigning another policy replaces it.
//!
//! # Aliases
//!
//! An assignment may carry an `objectIdAlias`, which Azure's API describes as a "user friendly
//! name for object id. Also represents username for token based authentication". Whether Azure
//! accepts `AUTH <alias> <token>` is unconfirmed (its docs say to use the object id). The
//! emulator accepts the alias as the username when it is the alias of the token's own `oid`,
//! and the object id always.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use uuid::Uuid;

use crate::access_keys::AccessKeys;
use crate::Error;

/// The Redis scope in its resource-URI form (`https://redis.azure.com`), as token requests
/// name it, and the application id of "Azure Cache for Redis" (the scope's GUID form).
pub use redis_entra_jwt::{REDIS_APP_ID, REDIS_RESOURCE};

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
    /// A person: signs in with a username and password (device code, browser, password grant).
    User,
}

/// A user's sign-in details (see [`Directory::create_user`]). `Debug` never shows the password.
#[derive(Clone)]
pub struct UserAccount {
    /// The sign-in name (`upn`), e.g. `developer@emulator.localhost`.
    pub username: String,
    /// The password.
    pub password: String,
    /// The object id: `oid` in tokens, and the Redis username.
    pub object_id: String,
}

impl std::fmt::Debug for UserAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserAccount")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("object_id", &self.object_id)
            .finish()
    }
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

impl Principal {
    /// A managed identity (system- or user-assigned) with these ids, its ARM resource id that
    /// of an App Service site (system-assigned) or a user-assigned identity called
    /// `display_name` in the emulator's resource group.
    pub fn managed_identity(
        display_name: &str,
        user_assigned: bool,
        client_id: &str,
        object_id: &str,
    ) -> Self {
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
        Self {
            display_name: display_name.to_string(),
            client_id: client_id.to_string(),
            object_id: object_id.to_string(),
            kind,
            secret: None,
            resource_id: Some(resource_id),
        }
    }
}

/// A certificate uploaded to an application: its thumbprints and public key (never a private
/// key).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UploadedCertificate {
    /// SHA-1 of the certificate's DER (`x5t`).
    pub sha1: Vec<u8>,
    /// SHA-256 of the certificate's DER (`x5t#S256`).
    pub sha256: Vec<u8>,
    /// The RSA public key, PKCS#1 `RSAPublicKey` DER.
    pub rsa_public_key: Vec<u8>,
}

impl UploadedCertificate {
    /// A certificate from its DER and its RSA public key (PKCS#1 DER).
    pub fn new(certificate_der: &[u8], rsa_public_key: Vec<u8>) -> Self {
        use aws_lc_rs::digest;
        Self {
            sha1: digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, certificate_der)
                .as_ref()
                .to_vec(),
            sha256: digest::digest(&digest::SHA256, certificate_der)
                .as_ref()
                .to_vec(),
            rsa_public_key,
        }
    }
}

/// A federated identity credential: which external tokens an application accepts as
/// assertions (AKS workload identity: the cluster's OIDC issuer, the service account).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FederatedCredential {
    /// The external issuer (`iss`), e.g. the cluster's OIDC issuer URL.
    pub issuer: String,
    /// The subject (`sub`): `system:serviceaccount:<namespace>:<service account>`.
    pub subject: String,
    /// The audience (`aud`): `api://AzureADTokenExchange`.
    pub audience: String,
}

impl FederatedCredential {
    /// A federated credential for `issuer` and `subject` with the standard audience.
    pub fn new(issuer: &str, subject: &str) -> Self {
        Self {
            issuer: issuer.to_string(),
            subject: subject.to_string(),
            audience: TOKEN_EXCHANGE_AUDIENCE.to_string(),
        }
    }
}

/// The audience of a token exchanged through a federated credential.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// A Redis data-access policy: one of Azure Cache for Redis' three built-ins, or a custom one
/// with its own Redis ACL rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AccessPolicy {
    /// `+@all allkeys`
    DataOwner,
    /// `+@all -@dangerous +cluster|info +cluster|nodes +cluster|slots allkeys`
    DataContributor,
    /// `+@read +@connection +cluster|info +cluster|nodes +cluster|slots allkeys`
    DataReader,
    /// A custom policy: Redis ACL rules (`+@read ~app:*`) under a name. Build it with
    /// [`AccessPolicy::custom`], which checks both.
    Custom {
        /// The policy's name (ASCII letters, digits, `-`, `_`, `.`; at most 64).
        name: String,
        /// The Redis ACL rules it grants, as `ACL SETUSER` takes them.
        rules: String,
    },
}

/// The longest custom policy name.
const MAX_POLICY_NAME: usize = 64;

/// ACL modifiers that change a user's passwords or state rather than its permissions: the
/// emulator manages those itself, so custom rules may not use them.
fn is_state_modifier(token: &str) -> bool {
    let lower = token.to_ascii_lowercase();
    matches!(
        lower.as_str(),
        "on" | "off" | "nopass" | "resetpass" | "reset"
    ) || token.starts_with(['>', '<', '#', '!'])
}

impl AccessPolicy {
    /// A custom policy, after checking that `name` is usable (1 to 64 ASCII letters, digits,
    /// `-`, `_` or `.`, and not a built-in's name) and that `rules` only grant permissions
    /// (no `on`/`off`, passwords, `nopass`, `reset`…). Whether Redis understands the rules is
    /// checked when the backend user is created ([`Backend::ensure_policy`]), with Redis' own
    /// error text.
    ///
    /// [`Backend::ensure_policy`]: crate::backend::Backend::ensure_policy
    pub fn custom(name: &str, rules: &str) -> Result<Self, Error> {
        let name_ok = !name.is_empty()
            && name.len() <= MAX_POLICY_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            return Err(Error::InvalidPolicy(format!(
                "the policy name {name:?} is not usable: use 1 to {MAX_POLICY_NAME} ASCII letters, digits, '-', '_' or '.'"
            )));
        }
        if Self::builtin(name).is_some() {
            return Err(Error::InvalidPolicy(format!(
                "{name:?} is a built-in policy's name: choose another name for a custom policy"
            )));
        }
        if rules.trim().is_empty() {
            return Err(Error::InvalidPolicy(
                "the policy's rules are empty: give Redis ACL rules such as \"+@read ~app:*\""
                    .into(),
            ));
        }
        if let Some(bad) = rules.split_whitespace().find(|t| is_state_modifier(t)) {
            return Err(Error::InvalidPolicy(format!(
                "the rule {bad:?} changes the user's password or state, which the emulator manages: \
                 custom rules may only grant commands, categories, keys and channels"
            )));
        }
        Ok(Self::Custom {
            name: name.to_string(),
            rules: rules.split_whitespace().collect::<Vec<_>>().join(" "),
        })
    }

    /// The built-in policy called `name`: `Data Owner`, `Data Contributor` or `Data Reader`,
    /// in any case, with or without the space (`data-owner`, `DataOwner`, `data_owner` too).
    pub fn builtin(name: &str) -> Option<Self> {
        let squashed: String = name
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '_'))
            .map(|c| c.to_ascii_lowercase())
            .collect();
        match squashed.as_str() {
            "dataowner" => Some(Self::DataOwner),
            "datacontributor" => Some(Self::DataContributor),
            "datareader" => Some(Self::DataReader),
            _ => None,
        }
    }

    /// Whether this is one of the three built-in policies.
    pub fn is_builtin(&self) -> bool {
        !matches!(self, Self::Custom { .. })
    }

    /// The policy's name as the Azure portal shows it (a custom policy's own name).
    pub fn name(&self) -> &str {
        match self {
            Self::DataOwner => "Data Owner",
            Self::DataContributor => "Data Contributor",
            Self::DataReader => "Data Reader",
            Self::Custom { name, .. } => name,
        }
    }

    /// The Redis ACL rules the policy grants.
    pub fn acl_rules(&self) -> &str {
        match self {
            Self::DataOwner => "+@all allkeys allchannels",
            Self::DataContributor => {
                "+@all -@dangerous +cluster|info +cluster|nodes +cluster|slots allkeys allchannels"
            }
            Self::DataReader => {
                "+@read +@connection +cluster|info +cluster|nodes +cluster|slots allkeys allchannels"
            }
            Self::Custom { rules, .. } => rules,
        }
    }

    /// The backend ACL user that carries this policy (`entra-custom-<name>` for a custom one).
    pub fn backend_user(&self) -> Cow<'static, str> {
        match self {
            Self::DataOwner => Cow::Borrowed("entra-data-owner"),
            Self::DataContributor => Cow::Borrowed("entra-data-contributor"),
            Self::DataReader => Cow::Borrowed("entra-data-reader"),
            Self::Custom { name, .. } => Cow::Owned(format!("entra-custom-{name}")),
        }
    }

    /// Every built-in policy.
    pub fn all() -> [AccessPolicy; 3] {
        [Self::DataOwner, Self::DataContributor, Self::DataReader]
    }
}

/// An access-policy assignment: which policy an identity has, and its alias.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Assignment {
    /// The identity's object id (lower case).
    pub object_id: String,
    /// The policy assigned (a custom policy with its current rules).
    pub policy: AccessPolicy,
    /// The `objectIdAlias`: a friendly name the gateway also accepts as the username.
    pub alias: Option<String>,
}

/// The tenant (identities) and the cache's data-access configuration (policies, assignments,
/// access keys).
#[derive(Debug)]
pub struct Directory {
    tenant_id: String,
    principals: RwLock<Vec<Principal>>,
    assignments: RwLock<HashMap<String, Assignment>>,
    custom_policies: RwLock<BTreeMap<String, AccessPolicy>>,
    access_keys: AccessKeys,
    /// Users' sign-in names and passwords.
    users: RwLock<Vec<UserAccount>>,
    /// Certificates uploaded to applications, by lower-case client id.
    certificates: RwLock<HashMap<String, Vec<UploadedCertificate>>>,
    /// Federated identity credentials of applications, by lower-case client id.
    federated: RwLock<HashMap<String, Vec<FederatedCredential>>>,
    /// The OIDC issuers Entra can fetch signing keys from, by issuer URL.
    oidc_issuers: RwLock<HashMap<String, Vec<jsonwebtoken::jwk::Jwk>>>,
    /// The managed identities attached to the emulated compute resource (VM, app), by
    /// lower-case object id: the only ones its managed-identity endpoints serve.
    attached: RwLock<HashSet<String>>,
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl Directory {
    /// A tenant with a fresh id, no identities, no custom policies and fresh access keys
    /// (enabled).
    pub fn new() -> Self {
        Self {
            tenant_id: Uuid::new_v4().to_string(),
            principals: RwLock::new(Vec::new()),
            assignments: RwLock::new(HashMap::new()),
            custom_policies: RwLock::new(BTreeMap::new()),
            access_keys: AccessKeys::new(),
            users: RwLock::new(Vec::new()),
            certificates: RwLock::new(HashMap::new()),
            federated: RwLock::new(HashMap::new()),
            oidc_issuers: RwLock::new(HashMap::new()),
            attached: RwLock::new(HashSet::new()),
        }
    }

    /// A tenant with this id and these access keys, no identities and no custom policies (a
    /// kept or well-known tenant; see [`state`](crate::state)).
    pub fn with_tenant(tenant_id: &str, access_keys: AccessKeys) -> Self {
        Self {
            tenant_id: tenant_id.to_string(),
            access_keys,
            ..Self::new()
        }
    }

    /// The tenant id (`tid`).
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// The cache's access keys.
    pub fn access_keys(&self) -> &AccessKeys {
        &self.access_keys
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

    /// Creates an application's service principal with no secret: it signs in with a
    /// certificate ([`Directory::add_certificate`]) or a federated credential
    /// ([`Directory::add_federated_credential`]).
    pub fn create_application(&self, display_name: &str) -> Principal {
        self.add(Principal {
            display_name: display_name.to_string(),
            client_id: Uuid::new_v4().to_string(),
            object_id: Uuid::new_v4().to_string(),
            kind: PrincipalKind::ServicePrincipal,
            secret: None,
            resource_id: None,
        })
    }

    /// Uploads a certificate (its public part) to the application `client_id`.
    pub fn add_certificate(&self, client_id: &str, certificate: UploadedCertificate) {
        write(&self.certificates)
            .entry(client_id.to_ascii_lowercase())
            .or_default()
            .push(certificate);
    }

    /// The certificates uploaded to the application `client_id`.
    pub fn certificates_of(&self, client_id: &str) -> Vec<UploadedCertificate> {
        read(&self.certificates)
            .get(&client_id.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default()
    }

    /// Adds a federated identity credential to the application (or user-assigned identity)
    /// `client_id`.
    pub fn add_federated_credential(&self, client_id: &str, credential: FederatedCredential) {
        write(&self.federated)
            .entry(client_id.to_ascii_lowercase())
            .or_default()
            .push(credential);
    }

    /// The federated identity credentials of `client_id`.
    pub fn federated_credentials_of(&self, client_id: &str) -> Vec<FederatedCredential> {
        read(&self.federated)
            .get(&client_id.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default()
    }

    /// Publishes an OIDC issuer's signing keys (what Entra would fetch from its JWKS), so that
    /// assertions it signs can be verified.
    pub fn trust_oidc_issuer(&self, issuer: &str, keys: Vec<jsonwebtoken::jwk::Jwk>) {
        write(&self.oidc_issuers).insert(issuer.to_string(), keys);
    }

    /// The signing keys of the OIDC issuer `issuer`, if it is known.
    pub fn oidc_issuer_keys(&self, issuer: &str) -> Option<Vec<jsonwebtoken::jwk::Jwk>> {
        read(&self.oidc_issuers).get(issuer).cloned()
    }

    /// Attaches a managed identity to the emulated compute resource, so that its
    /// managed-identity endpoints (App Service, IMDS, Arc) serve it.
    pub fn attach_identity(&self, object_id: &str) {
        write(&self.attached).insert(object_id.to_ascii_lowercase());
    }

    /// Detaches a managed identity from the emulated compute resource: its endpoints answer
    /// as for an identity they do not have. Returns whether it was attached.
    pub fn detach_identity(&self, object_id: &str) -> bool {
        write(&self.attached).remove(&object_id.to_ascii_lowercase())
    }

    /// Whether a managed identity is attached to the emulated compute resource.
    pub fn is_attached(&self, object_id: &str) -> bool {
        read(&self.attached).contains(&object_id.to_ascii_lowercase())
    }

    /// Creates a managed identity (system- or user-assigned), attached to the emulated compute
    /// resource (see [`detach_identity`](Self::detach_identity)).
    pub fn create_managed_identity(&self, display_name: &str, user_assigned: bool) -> Principal {
        let principal = self.create_detached_identity(display_name, user_assigned);
        self.attach_identity(&principal.object_id);
        principal
    }

    /// Creates a managed identity that exists in the tenant but is attached to nothing: the
    /// emulated compute resource's endpoints do not serve it until
    /// [`attach_identity`](Self::attach_identity).
    pub fn create_detached_identity(&self, display_name: &str, user_assigned: bool) -> Principal {
        self.add(Principal::managed_identity(
            display_name,
            user_assigned,
            &Uuid::new_v4().to_string(),
            &Uuid::new_v4().to_string(),
        ))
    }

    /// Creates a user (a person who signs in with `username` and `password`); with an empty
    /// password, a fresh random one.
    pub fn create_user(&self, username: &str, password: &str) -> UserAccount {
        let password = if password.is_empty() {
            format!("Emu!{}", Uuid::new_v4().simple())
        } else {
            password.to_string()
        };
        let account = UserAccount {
            username: username.to_string(),
            password,
            object_id: Uuid::new_v4().to_string(),
        };
        self.add_user(account, &Uuid::new_v4().to_string())
    }

    /// The user with this sign-in name (case-insensitive).
    pub fn user_by_name(&self, username: &str) -> Option<UserAccount> {
        read(&self.users)
            .iter()
            .find(|u| u.username.eq_ignore_ascii_case(username))
            .cloned()
    }

    /// Every user, in the order they were created.
    pub fn users(&self) -> Vec<UserAccount> {
        read(&self.users).clone()
    }

    /// Adds a user with the given ids and sign-in details (a kept or well-known one; see
    /// [`create_user`](Self::create_user) for a new one).
    pub fn add_user(&self, account: UserAccount, client_id: &str) -> UserAccount {
        self.add(Principal {
            display_name: account
                .username
                .split('@')
                .next()
                .unwrap_or(&account.username)
                .to_string(),
            client_id: client_id.to_string(),
            object_id: account.object_id.clone(),
            kind: PrincipalKind::User,
            secret: None,
            resource_id: None,
        });
        write(&self.users).push(account.clone());
        account
    }

    /// Adds an identity with the given ids (a kept or well-known one; the `create_*` methods
    /// make new ones). A managed identity added this way is not attached (see
    /// [`attach_identity`](Self::attach_identity)).
    pub fn add_principal(&self, principal: Principal) -> Principal {
        self.add(principal)
    }

    fn add(&self, principal: Principal) -> Principal {
        write(&self.principals).push(principal.clone());
        principal
    }

    /// Every identity, in the order they were created.
    pub fn principals(&self) -> Vec<Principal> {
        read(&self.principals).clone()
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

    /// The tenant's system-assigned managed identity, if it has one (the first created).
    pub fn system_assigned_identity(&self) -> Option<Principal> {
        self.find(|p| p.kind == PrincipalKind::SystemAssignedIdentity)
    }

    fn find(&self, pred: impl Fn(&Principal) -> bool) -> Option<Principal> {
        read(&self.principals).iter().find(|p| pred(p)).cloned()
    }

    /// Assigns a policy to an object id (replacing any previous assignment, alias included).
    ///
    /// A custom policy's backend user must exist for the identity to get in (see
    /// [`Backend::ensure_policy`](crate::backend::Backend::ensure_policy); `Emulator`'s
    /// `assign_policy` does both). A custom policy not yet defined here is defined with these
    /// rules.
    pub fn assign(&self, object_id: &str, policy: AccessPolicy) {
        self.assign_with_alias(object_id, policy, None);
    }

    /// Assigns a policy to an object id with an optional `objectIdAlias` (replacing any
    /// previous assignment).
    pub fn assign_with_alias(&self, object_id: &str, policy: AccessPolicy, alias: Option<&str>) {
        if let AccessPolicy::Custom { name, .. } = &policy {
            write(&self.custom_policies)
                .entry(name.clone())
                .or_insert_with(|| policy.clone());
        }
        let object_id = object_id.to_ascii_lowercase();
        write(&self.assignments).insert(
            object_id.clone(),
            Assignment {
                object_id,
                policy,
                alias: alias.map(str::to_string),
            },
        );
    }

    /// Removes an object id's assignment.
    pub fn unassign(&self, object_id: &str) {
        self.remove_assignment(object_id);
    }

    /// Removes an object id's assignment and returns it, if it had one.
    pub fn remove_assignment(&self, object_id: &str) -> Option<Assignment> {
        write(&self.assignments).remove(&object_id.to_ascii_lowercase())
    }

    /// The policy assigned to an object id (a custom policy with its current rules).
    pub fn policy_of(&self, object_id: &str) -> Option<AccessPolicy> {
        self.assignment_of(object_id).map(|a| a.policy)
    }

    /// The assignment of an object id (a custom policy with its current rules).
    pub fn assignment_of(&self, object_id: &str) -> Option<Assignment> {
        let assignment = read(&self.assignments)
            .get(&object_id.to_ascii_lowercase())
            .cloned()?;
        Some(self.resolved(assignment))
    }

    /// Every assignment, by object id.
    pub fn assignments(&self) -> Vec<Assignment> {
        let mut all: Vec<Assignment> = read(&self.assignments).values().cloned().collect();
        all.sort_by(|a, b| a.object_id.cmp(&b.object_id));
        all.into_iter().map(|a| self.resolved(a)).collect()
    }

    fn resolved(&self, mut assignment: Assignment) -> Assignment {
        if let AccessPolicy::Custom { name, .. } = &assignment.policy {
            if let Some(current) = read(&self.custom_policies).get(name) {
                assignment.policy = current.clone();
            }
        }
        assignment
    }

    /// Defines (or redefines) a custom policy; built-in policies need no definition and are
    /// ignored. Returns whether the policy is new. Assignments of a policy of that name see
    /// the new rules at once.
    pub fn define_policy(&self, policy: AccessPolicy) -> bool {
        match &policy {
            AccessPolicy::Custom { name, .. } => write(&self.custom_policies)
                .insert(name.clone(), policy.clone())
                .is_none(),
            _ => false,
        }
    }

    /// The custom policies, by name.
    pub fn custom_policies(&self) -> Vec<AccessPolicy> {
        read(&self.custom_policies).values().cloned().collect()
    }

    /// The policy called `name`: a built-in (see [`AccessPolicy::builtin`]) or a custom one
    /// (exact name).
    pub fn policy_named(&self, name: &str) -> Option<AccessPolicy> {
        AccessPolicy::builtin(name).or_else(|| read(&self.custom_policies).get(name).cloned())
    }
}

impl Default for Directory {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_policies_are_checked() {
        assert!(AccessPolicy::custom("app-reader", "+@read ~app:*").is_ok());
        for (name, rules) in [
            ("", "+@read"),
            ("has space", "+@read"),
            ("Data-Reader", "+@read"),
            ("x", "   "),
            ("x", "+@read nopass"),
            ("x", "+@read >secret"),
            ("x", "on +@all"),
        ] {
            assert!(
                matches!(
                    AccessPolicy::custom(name, rules),
                    Err(Error::InvalidPolicy(_))
                ),
                "{name:?} {rules:?}"
            );
        }
        assert_eq!(
            AccessPolicy::builtin("data reader"),
            Some(AccessPolicy::DataReader)
        );
    }

    #[test]
    fn assignments_see_redefined_policies() -> Result<(), Error> {
        let d = Directory::new();
        d.assign_with_alias("ABC", AccessPolicy::custom("p", "+get")?, Some("app"));
        let redefined = AccessPolicy::custom("p", "+get   +set")?;
        assert_eq!(redefined.acl_rules(), "+get +set");
        assert!(!d.define_policy(redefined.clone()));
        let a = d.assignment_of("abc");
        assert_eq!(a.as_ref().map(|a| &a.policy), Some(&redefined));
        assert_eq!(a.and_then(|a| a.alias).as_deref(), Some("app"));
        assert_eq!(d.policy_named("p"), Some(redefined));
        assert!(d.remove_assignment("abc").is_some());
        assert_eq!(d.policy_of("abc"), None);
        Ok(())
    }
}
