//! Custom policies' backend users (`entra-custom-<name>`): created or updated on every node
//! with the policy's rules, which Redis checks.

use std::sync::PoisonError;

use super::admin_commands::{command, simple_command, Reply};
use super::users::{random_password, setuser_args};
use super::Backend;
use crate::directory::AccessPolicy;
use crate::Error;

/// The backend user of a custom policy.
pub(super) struct CustomUser {
    pub(super) password: String,
    /// Its ACL rules, to create it again on a node that lost it.
    pub(super) rules: String,
    /// Whether the rules let a client run `SUBSCRIBE` (on some channel).
    pub(super) pubsub: bool,
}

impl Backend {
    /// Creates or updates the backend user of a custom policy (`ACL SETUSER
    /// entra-custom-<name> reset on >password <rules>`) on every node (each node of a
    /// cluster); built-in policies' users exist from the start, so for them this does nothing.
    ///
    /// An update keeps the user's password, so connections already in stay in and get the new
    /// rules at once. Rules Redis refuses leave the user as it was and give
    /// [`Error::InvalidPolicy`] with Redis' own text (the first node is asked first, so a
    /// refusal changes no node).
    pub async fn ensure_policy(&self, policy: &AccessPolicy) -> Result<(), Error> {
        let AccessPolicy::Custom { name, rules } = policy else {
            return Ok(());
        };
        // Built directly, the variant skipped the checks: run them.
        let _ = AccessPolicy::custom(name, rules)?;
        let _guard = self.users.acl.lock().await;
        let existing = self
            .users
            .custom
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .map(|u| u.password.clone());
        let password = existing.unwrap_or_else(random_password);
        let user = policy.backend_user();
        let args = setuser_args(&user, &password, rules);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut pubsub = true;
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
            if i == 0 {
                // Can a client of this policy subscribe at all? (`ACL DRYRUN` exists since
                // Redis 7.)
                let probe = [
                    "ACL",
                    "DRYRUN",
                    user.as_ref(),
                    "SUBSCRIBE",
                    "entra-emulator-probe",
                ];
                pubsub = match command(&mut s, &probe).await? {
                    Reply::Other(text) => !text.contains("command"),
                    // An older Redis: assume it can, as for the built-ins that allow pub/sub.
                    Reply::Error(_) => true,
                };
            }
        }
        self.users
            .custom
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                name.clone(),
                CustomUser {
                    password,
                    rules: rules.clone(),
                    pubsub,
                },
            );
        Ok(())
    }
}
