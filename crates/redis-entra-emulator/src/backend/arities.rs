//! The backend's commands and their arities (`COMMAND`), with which the gateway answers an
//! unauthenticated client's unknown command or wrong argument count as the server would.

use std::collections::HashMap;
use std::sync::Arc;

use super::admin_commands::{request, Value};
use super::connect::connect_to;
use super::Backend;
use crate::Error;

/// The backend's commands as `COMMAND` lists them: each name (lower case) with its arity
/// (Redis' convention: `n` exactly `n` arguments, `-n` at least `n`, the name included) and,
/// for a container command, its subcommands' arities.
#[derive(Debug, Default)]
pub struct CommandArities {
    commands: HashMap<String, (i64, HashMap<String, i64>)>,
    /// Whether the server answers an unauthenticated client's unknown command or wrong
    /// argument count with that error (Redis 7.0) rather than `NOAUTH` (Valkey 8 and later):
    /// read from the server itself.
    checks_commands_before_auth: bool,
}

impl CommandArities {
    /// Whether the server rejects an unknown command or a wrong argument count before it
    /// checks authentication (else it answers `NOAUTH` to everything first).
    pub fn checks_commands_before_auth(&self) -> bool {
        self.checks_commands_before_auth
    }

    /// The arity of `name` (any case), and its subcommands' (empty unless a container).
    pub fn get(&self, name: &[u8]) -> Option<(i64, &HashMap<String, i64>)> {
        let name = std::str::from_utf8(name).ok()?.to_ascii_lowercase();
        self.commands.get(&name).map(|(a, subs)| (*a, subs))
    }

    fn from_reply(reply: &Value) -> Self {
        let mut commands = HashMap::new();
        let Value::Array(entries) = reply else {
            return Self {
                commands,
                checks_commands_before_auth: true,
            };
        };
        let entry = |v: &Value| -> Option<(String, i64)> {
            let Value::Array(fields) = v else { return None };
            let name = fields.first()?.text()?.to_ascii_lowercase();
            let Value::Int(arity) = fields.get(1)? else {
                return None;
            };
            Some((name, *arity))
        };
        for v in entries {
            let Some((name, arity)) = entry(v) else {
                continue;
            };
            let mut subs = HashMap::new();
            if let Value::Array(fields) = v {
                if let Some(Value::Array(list)) = fields.get(9) {
                    for sub in list {
                        if let Some((full, arity)) = entry(sub) {
                            // `config|get` → `get`
                            let short = full.rsplit('|').next().unwrap_or(&full).to_string();
                            subs.insert(short, arity);
                        }
                    }
                }
            }
            commands.insert(name, (arity, subs));
        }
        Self {
            commands,
            checks_commands_before_auth: true,
        }
    }
}

impl Backend {
    /// The server's commands and arities (`COMMAND`, read at the first call), with which the
    /// gateway answers an unauthenticated client's unknown command or wrong argument count as
    /// the server does: before `NOAUTH` (Redis 7.0), or not at all (Valkey 8 and later answer
    /// `NOAUTH` first), as a probe of the server shows.
    pub async fn command_arities(&self) -> Result<Arc<CommandArities>, Error> {
        self.users
            .commands
            .get_or_try_init(|| async {
                let mut s = self.admin_connection().await?;
                let reply = request(&mut s, &["COMMAND"]).await?;
                let mut table = CommandArities::from_reply(&reply);
                // What does the server tell a client that has not authenticated about a command
                // it does not have? Its own words decide the gateway's.
                let mut anonymous = connect_to(&self.addr)
                    .await
                    .map_err(|e| Error::io("connecting to the backend", e))?;
                let probe = request(&mut anonymous, &["REDIS-ENTRA-NO-SUCH-COMMAND"]).await?;
                table.checks_commands_before_auth =
                    !matches!(&probe, Value::Error(text) if text.starts_with("NOAUTH"));
                Ok::<_, Error>(Arc::new(table))
            })
            .await
            .cloned()
    }
}
