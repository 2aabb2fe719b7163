//! The backend's commands, their arities and where their keys are (`COMMAND`): with the first
//! the gateway answers an unauthenticated client's unknown command or wrong argument count as
//! the server would; with the second it applies the Enterprise cluster policy's slot rules.

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
    /// Where each command's keys are, by name (lower case; `object|encoding` for a
    /// subcommand). Commands without keys are absent.
    keys: HashMap<String, KeyPositions>,
    /// Whether the server answers an unauthenticated client's unknown command or wrong
    /// argument count with that error (Redis 7.0) rather than `NOAUTH` (Valkey 8 and later):
    /// read from the server itself.
    checks_commands_before_auth: bool,
}

/// Where a command's keys are, as `COMMAND` gives them: the first key's index, the last's (a
/// negative index counts from the end: -1 is the last argument), and the step between keys.
/// A command with `movable` keys has others that only its arguments tell (`EVAL`'s numkeys,
/// `XREAD`'s `STREAMS`, `SORT`'s `STORE` …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPositions {
    /// The index of the first key (the command name is 0; a subcommand's keys count from the
    /// container's name too).
    pub first: i64,
    /// The index of the last key; negative counts from the end.
    pub last: i64,
    /// The distance between keys (2 for `MSET`'s key-value pairs).
    pub step: i64,
    /// Whether more keys are found from the arguments themselves.
    pub movable: bool,
}

impl CommandArities {
    /// Where the keys of `name` (lower case; `container|sub` for a subcommand) are, if it has
    /// any.
    pub fn keys(&self, name: &str) -> Option<KeyPositions> {
        self.keys.get(name).copied()
    }

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
        let mut keys = HashMap::new();
        let Value::Array(entries) = reply else {
            return Self {
                commands,
                keys,
                checks_commands_before_auth: true,
            };
        };
        // Fields 2 to 5: flags (`movablekeys` among them), first key, last key, step.
        let positions = |v: &Value| -> Option<KeyPositions> {
            let Value::Array(fields) = v else { return None };
            let int = |i: usize| match fields.get(i) {
                Some(Value::Int(n)) => Some(*n),
                _ => None,
            };
            let movable = matches!(fields.get(2), Some(Value::Array(flags))
                if flags.iter().any(|f| f.text().is_some_and(|t| t.eq_ignore_ascii_case("movablekeys"))));
            let (first, last, step) = (int(3)?, int(4)?, int(5)?);
            (first > 0 || movable).then_some(KeyPositions {
                first,
                last,
                step,
                movable,
            })
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
            if let Some(p) = positions(v) {
                keys.insert(name.clone(), p);
            }
            let mut subs = HashMap::new();
            if let Value::Array(fields) = v {
                if let Some(Value::Array(list)) = fields.get(9) {
                    for sub in list {
                        if let Some((full, arity)) = entry(sub) {
                            if let Some(p) = positions(sub) {
                                keys.insert(full.clone(), p);
                            }
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
            keys,
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
