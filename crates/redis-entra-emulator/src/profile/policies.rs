//! The access-policy model of each product.
//!
//! Azure Cache for Redis has three built-in policies (Data Owner, Data Contributor, Data
//! Reader) and named custom policies ("Configure role-based access control with Data Access
//! Policy"). Azure Managed Redis has neither: each user or identity added to the cache "is
//! assigned the same permissions as when using Access Keys" ("Use Microsoft Entra for cache
//! authentication with Azure Managed Redis"), through an assignment of its one policy,
//! `default` (`"accessPolicyName": "default"`); since API version `2026-05-01-preview` an
//! assignment may carry its own `accessString` (Redis ACL rules; `+@all ~*` when left out),
//! updated in place "without disconnecting the user" ("Configure custom data access
//! permissions (preview)").
//!
//! In the emulator, Azure Managed Redis' `default` policy is carried by the Data Owner backend
//! user (the same rules: every command, key and channel), and an assignment with an access
//! string by a custom policy of its own, `default-<object id>`; the admin interface shows both
//! as `default`.

use super::Profile;
use crate::directory::AccessPolicy;
use crate::Error;

/// Azure Managed Redis' one access policy.
pub const MANAGED_REDIS_POLICY: &str = "default";

/// The prefix of the custom policy that carries one assignment's access string.
const ACCESS_STRING_PREFIX: &str = "default-";

/// The policy of an Azure Managed Redis assignment of `policy` (which must be `default`) to
/// `object_id`, with an optional access string (`rules`). Any other policy name is an error
/// that says what Azure Managed Redis has instead.
pub fn managed_redis_assignment(
    object_id: &str,
    policy: &str,
    rules: Option<&str>,
) -> Result<AccessPolicy, Error> {
    if !policy.eq_ignore_ascii_case(MANAGED_REDIS_POLICY) {
        let builtin = AccessPolicy::builtin(policy)
            .map(|p| format!(" ({} is an Azure Cache for Redis policy)", p.name()))
            .unwrap_or_default();
        return Err(Error::InvalidPolicy(format!(
            "Azure Managed Redis has no access policy called {policy:?}{builtin}: its one policy \
             is \"default\" (full access); assign it, with \"rules\" for a per-user access \
             string such as \"+@read ~cache:*\""
        )));
    }
    match rules {
        None => Ok(AccessPolicy::DataOwner),
        Some(rules) => AccessPolicy::custom(
            &format!("{ACCESS_STRING_PREFIX}{}", object_id.to_ascii_lowercase()),
            rules,
        ),
    }
}

/// The refusal of an `objectIdAlias` under `profile`: Azure Managed Redis' assignments name
/// their identity by object id only (`"user": {"objectId": …}` in "Configure custom data
/// access permissions (preview)"; Azure Cache for Redis' have `objectIdAlias`).
pub fn check_alias(profile: Profile, alias: Option<&str>) -> Result<(), Error> {
    match (profile, alias) {
        (Profile::AzureManagedRedis, Some(_)) => Err(Error::InvalidPolicy(
            "Azure Managed Redis' access policy assignments have no alias (objectIdAlias is an \
             Azure Cache for Redis field): leave out \"alias\"; clients authenticate with the \
             object id as the username"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// The refusal of a named custom policy under `profile` (`Ok` for Azure Cache for Redis).
pub fn check_custom_policy(profile: Profile) -> Result<(), Error> {
    match profile {
        Profile::AzureCacheForRedis => Ok(()),
        Profile::AzureManagedRedis => Err(Error::InvalidPolicy(
            "Azure Managed Redis has no custom access policies: its one policy is \"default\" \
             (full access), and each assignment may carry its own access string instead: PUT \
             /admin/assignments/{object_id} with {\"policy\": \"default\", \"rules\": \"+@read \
             ~cache:*\"}"
                .into(),
        )),
    }
}

/// Whether `policy` exists in `profile`'s model: under Azure Managed Redis only `default`
/// (Data Owner's user) and the per-assignment access strings of
/// [`managed_redis_assignment`].
pub fn check_policy(profile: Profile, policy: &AccessPolicy) -> Result<(), Error> {
    match (profile, policy) {
        (Profile::AzureCacheForRedis, _) | (_, AccessPolicy::DataOwner) => Ok(()),
        (_, AccessPolicy::Custom { name, .. }) if name.starts_with(ACCESS_STRING_PREFIX) => Ok(()),
        (_, AccessPolicy::Custom { .. }) => check_custom_policy(profile),
        (_, other) => managed_redis_assignment("", other.name(), None).map(drop),
    }
}

/// The policy's name as `profile`'s portal shows it: `default` for every Azure Managed Redis
/// assignment.
pub fn display_name(profile: Profile, policy: &AccessPolicy) -> &str {
    match (profile, policy) {
        (Profile::AzureManagedRedis, AccessPolicy::DataOwner) => MANAGED_REDIS_POLICY,
        (Profile::AzureManagedRedis, AccessPolicy::Custom { name, .. })
            if name.starts_with(ACCESS_STRING_PREFIX) =>
        {
            MANAGED_REDIS_POLICY
        }
        _ => policy.name(),
    }
}

/// The rules shown for a policy: Azure Managed Redis' `default` shows its documented access
/// string, `+@all ~*` (the emulator also grants every channel, as an access key does).
pub fn display_rules(profile: Profile, policy: &AccessPolicy) -> &str {
    match (profile, policy) {
        (Profile::AzureManagedRedis, AccessPolicy::DataOwner) => "+@all ~*",
        _ => policy.acl_rules(),
    }
}

/// The built-in policies `profile` lists: Azure Cache for Redis' three, or Azure Managed
/// Redis' `default`.
pub fn builtins(profile: Profile) -> Vec<AccessPolicy> {
    match profile {
        Profile::AzureCacheForRedis => AccessPolicy::all().to_vec(),
        Profile::AzureManagedRedis => vec![AccessPolicy::DataOwner],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OID: &str = "3F2504E0-4F89-11D3-9A0C-0305E82C3301";

    #[test]
    fn managed_redis_has_one_policy_and_access_strings() {
        let amr = Profile::AzureManagedRedis;
        let full = managed_redis_assignment(OID, "default", None).unwrap();
        assert_eq!(display_name(amr, &full), "default");
        assert_eq!(display_rules(amr, &full), "+@all ~*");
        let reader = managed_redis_assignment(OID, "Default", Some("+@read ~cache:*")).unwrap();
        assert_eq!(display_name(amr, &reader), "default");
        assert_eq!(reader.acl_rules(), "+@read ~cache:*");
        assert!(check_policy(amr, &reader).is_ok());
        let owner = managed_redis_assignment(OID, "Data Owner", None).unwrap_err();
        assert!(
            owner.to_string().contains("Azure Cache for Redis policy"),
            "{owner}"
        );
        assert!(check_policy(amr, &AccessPolicy::DataReader).is_err());
        let custom = AccessPolicy::custom("app", "+get").unwrap();
        assert!(check_policy(amr, &custom).is_err());
        assert!(check_policy(Profile::AzureCacheForRedis, &custom).is_ok());
        assert_eq!(builtins(amr).len(), 1);
        assert_eq!(
            display_name(Profile::AzureCacheForRedis, &full),
            "Data Owner"
        );
    }
}
