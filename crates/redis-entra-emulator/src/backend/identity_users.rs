//! Identities' own backend users, named by their object ids: created at an identity's first
//! `AUTH` or assignment, updated in place when its policy's rules change, deleted when it is
//! revoked.

use std::sync::PoisonError;

use super::admin_commands::{command, simple_command, Reply};
use super::users::{random_password, setuser_args};
use super::{Backend, BackendUser};
use crate::directory::AccessPolicy;
use crate::Error;

/// An identity's own backend user, named by its object id (as on Azure, so that `ACL WHOAMI`,
/// `CLIENT LIST` and `NOPERM` name the object id).
#[derive(Clone)]
pub(super) struct IdentityUser {
    pub(super) password: String,
    /// The name of the policy whose rules it has.
    pub(super) policy: String,
    /// Those rules, to compare with the policy's current ones and to create it again.
    pub(super) rules: String,
}

impl Backend {
    /// The backend user of the identity `oid`, if it exists with `policy`'s current rules
    /// (else [`ensure_identity`](Self::ensure_identity) creates or updates it).
    pub fn identity_user(&self, oid: &str, policy: &AccessPolicy) -> Option<BackendUser> {
        let identities = self
            .users
            .identities
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let user = identities.get(oid)?;
        (user.rules == policy.acl_rules()).then(|| BackendUser {
            name: oid.to_string(),
            password: user.password.clone(),
        })
    }

    /// Creates or updates, on every node, the identity's own backend user, named by its object
    /// id, with `policy`'s rules (`ACL SETUSER <oid> reset on >password <rules>`). An update
    /// keeps the password, so the identity's live connections stay in and follow the new rules
    /// at once (Redis applies ACL changes to authenticated connections), as Azure Managed Redis
    /// documents for an assignment update.
    pub async fn ensure_identity(
        &self,
        oid: &str,
        policy: &AccessPolicy,
    ) -> Result<BackendUser, Error> {
        if uuid::Uuid::parse_str(oid).is_err() {
            return Err(Error::Backend(format!("{oid:?} is not an object id")));
        }
        let _guard = self.users.acl.lock().await;
        if let Some(user) = self.identity_user(oid, policy) {
            return Ok(user);
        }
        let password = self
            .users
            .identities
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(oid)
            .map(|u| u.password.clone())
            .unwrap_or_else(random_password);
        let rules = policy.acl_rules().to_string();
        self.set_on_every_node(oid, &password, &rules).await?;
        self.users
            .identities
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                oid.to_string(),
                IdentityUser {
                    password: password.clone(),
                    policy: policy.name().to_string(),
                    rules,
                },
            );
        Ok(BackendUser {
            name: oid.to_string(),
            password,
        })
    }

    /// Gives every identity that holds `policy` (by name) the policy's current rules, in
    /// place (after a custom policy is redefined).
    pub async fn update_identities(&self, policy: &AccessPolicy) -> Result<(), Error> {
        let holders: Vec<String> = self
            .users
            .identities
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, u)| u.policy == policy.name() && u.rules != policy.acl_rules())
            .map(|(oid, _)| oid.clone())
            .collect();
        for oid in holders {
            self.ensure_identity(&oid, policy).await?;
        }
        Ok(())
    }

    /// Deletes the identity's backend user on every node (`ACL DELUSER`): Redis closes the
    /// connections authenticated as it, so a removed assignment takes effect at once.
    pub async fn remove_identity(&self, oid: &str) -> Result<(), Error> {
        let _guard = self.users.acl.lock().await;
        let removed = self
            .users
            .identities
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(oid);
        if removed.is_none() {
            return Ok(());
        }
        for addr in &self.users.nodes {
            let mut s = self.users.admin_connection(addr).await?;
            command(&mut s, &["ACL", "DELUSER", oid]).await?;
            if self.users.persist {
                simple_command(&mut s, &["ACL", "SAVE"]).await?;
            }
        }
        Ok(())
    }

    /// `ACL SETUSER <user> reset on >password <rules>` on every node (the first one first, so
    /// that rules Redis refuses change no node). Called with the ACL lock held.
    async fn set_on_every_node(
        &self,
        user: &str,
        password: &str,
        rules: &str,
    ) -> Result<(), Error> {
        let args = setuser_args(user, password, rules);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        for (i, addr) in self.users.nodes.iter().enumerate() {
            let mut s = self.users.admin_connection(addr).await?;
            match command(&mut s, &refs).await? {
                Reply::Error(text) if i == 0 => return Err(Error::InvalidPolicy(text)),
                Reply::Error(text) => {
                    return Err(Error::Backend(format!(
                        "node {addr} refused the rules the first node took: {text}"
                    )))
                }
                Reply::Other(_) => {}
            }
            if self.users.persist {
                simple_command(&mut s, &["ACL", "SAVE"]).await?;
            }
        }
        Ok(())
    }
}
