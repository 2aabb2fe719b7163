//! The Redis commands Azure does not run, per product, as data (the gateway refuses them, the
//! backend's users lack them; neither module owns the table).
//!
//! Azure Cache for Redis documents a list of "Redis commands not supported", refused for every
//! client whatever its access policy or key, "with an error message similar to
//! `(error) ERR unknown command`"; Azure Managed Redis (Redis Enterprise underneath) has its own
//! list. docs/UNSUPPORTED-COMMANDS.md gives both tables, their sources and what is confirmed.
//!
//! The gateway refuses them in order and in Redis' own words: it forwards a command no Redis
//! has in the request's place, so that Redis answers with an error at that point (inside
//! `MULTI` this flags the transaction, so `EXEC` answers `-EXECABORT`, as for any unknown
//! command), and rewrites that error into `-ERR unknown command 'CONFIG', with args beginning
//! with: 'SET' …` (or `-ERR unknown subcommand 'SETUSER'. Try ACL HELP.`) for the name the
//! client sent. [`acl_removals`] strips the same commands from the backend's ACL users, so that
//! scripts (`redis.call('MIGRATE', …)`) are refused by Redis too.

/// Which Azure product the emulator plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Profile {
    /// Azure Cache for Redis (Basic, Standard, Premium): the product with data access policies.
    #[default]
    AzureCacheForRedis,
    /// Azure Managed Redis.
    AzureManagedRedis,
}

/// One row of a table: a command refused whole (`subcommands` empty), or only the listed
/// subcommands of a container command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsupported {
    /// The command, upper case.
    pub command: &'static str,
    /// The refused subcommands, upper case; empty: the whole command.
    pub subcommands: &'static [&'static str],
}

const fn whole(command: &'static str) -> Unsupported {
    Unsupported {
        command,
        subcommands: &[],
    }
}

/// `ACL` subcommands that change or reveal users; `ACL WHOAMI`, `ACL CAT` and `ACL HELP` stay.
const ACL_REFUSED: &[&str] = &[
    "SETUSER", "DELUSER", "GETUSER", "LIST", "USERS", "LOAD", "SAVE", "LOG", "DRYRUN", "GENPASS",
];

/// `CLUSTER` subcommands that change the cluster ("Cluster write commands are disabled, but
/// read-only Cluster commands are permitted").
const CLUSTER_WRITES: &[&str] = &[
    "ADDSLOTS",
    "ADDSLOTSRANGE",
    "BUMPEPOCH",
    "DELSLOTS",
    "DELSLOTSRANGE",
    "FAILOVER",
    "FLUSHSLOTS",
    "FORGET",
    "MEET",
    "REPLICATE",
    "RESET",
    "SAVECONFIG",
    "SET-CONFIG-EPOCH",
    "SETSLOT",
];

/// Azure Cache for Redis.
pub const AZURE_CACHE_FOR_REDIS: &[Unsupported] = &[
    whole("BGREWRITEAOF"),
    whole("BGSAVE"),
    whole("CONFIG"),
    whole("DEBUG"),
    whole("MIGRATE"),
    whole("SAVE"),
    whole("SHUTDOWN"),
    whole("SLAVEOF"),
    whole("REPLICAOF"),
    whole("SYNC"),
    whole("PSYNC"),
    whole("REPLCONF"),
    whole("FAILOVER"),
    whole("MODULE"),
    Unsupported {
        command: "ACL",
        subcommands: ACL_REFUSED,
    },
    Unsupported {
        command: "CLUSTER",
        subcommands: CLUSTER_WRITES,
    },
];

/// Azure Managed Redis.
pub const AZURE_MANAGED_REDIS: &[Unsupported] = &[
    whole("BGREWRITEAOF"),
    whole("BGSAVE"),
    whole("CONFIG"),
    whole("DEBUG"),
    whole("MIGRATE"),
    whole("SAVE"),
    whole("SHUTDOWN"),
    whole("SLAVEOF"),
    whole("REPLICAOF"),
    whole("SYNC"),
    whole("PSYNC"),
    whole("REPLCONF"),
    whole("FAILOVER"),
    whole("MODULE"),
    whole("SWAPDB"),
    whole("LASTSAVE"),
    Unsupported {
        command: "ACL",
        subcommands: ACL_REFUSED,
    },
    Unsupported {
        command: "CLUSTER",
        subcommands: CLUSTER_WRITES,
    },
];

impl Profile {
    /// The profile's table.
    pub fn unsupported(self) -> &'static [Unsupported] {
        match self {
            Self::AzureCacheForRedis => AZURE_CACHE_FOR_REDIS,
            Self::AzureManagedRedis => AZURE_MANAGED_REDIS,
        }
    }

    /// Whether a request named `name` may be refused (the table has a row for it, whole or by
    /// subcommand): the gateway holds those whole and looks no further into any other.
    pub(crate) fn may_refuse(self, name: &[u8]) -> bool {
        self.row(name).is_some()
    }

    fn row(self, name: &[u8]) -> Option<&'static Unsupported> {
        self.unsupported()
            .iter()
            .find(|u| name.eq_ignore_ascii_case(u.command.as_bytes()))
    }

    /// Which argument to refuse, if the request is unsupported: 0 for the command, 1 for the
    /// subcommand.
    pub(crate) fn refused_arg(self, name: &[u8], sub: Option<&[u8]>) -> Option<usize> {
        let row = self.row(name)?;
        if row.subcommands.is_empty() {
            return Some(0);
        }
        let sub = sub?;
        row.subcommands
            .iter()
            .any(|s| sub.eq_ignore_ascii_case(s.as_bytes()))
            .then_some(1)
    }
}

/// ACL rules that take the profile's unsupported commands away from a backend user
/// (appended after its policy's rules), e.g. `-config -acl|setuser`.
pub fn acl_removals(profile: Profile) -> Vec<String> {
    let mut rules = Vec::new();
    for row in profile.unsupported() {
        let command = row.command.to_ascii_lowercase();
        if row.subcommands.is_empty() {
            rules.push(format!("-{command}"));
        } else {
            for sub in row.subcommands {
                rules.push(format!("-{command}|{}", sub.to_ascii_lowercase()));
            }
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decides_by_command_and_subcommand() {
        let p = Profile::AzureCacheForRedis;
        assert_eq!(p.refused_arg(b"config", Some(b"get")), Some(0));
        assert_eq!(p.refused_arg(b"Acl", Some(b"setuser")), Some(1));
        assert_eq!(p.refused_arg(b"ACL", Some(b"WHOAMI")), None);
        assert_eq!(p.refused_arg(b"ACL", None), None);
        assert_eq!(p.refused_arg(b"GET", Some(b"x")), None);
        assert_eq!(p.refused_arg(b"cluster", Some(b"info")), None);
        assert_eq!(p.refused_arg(b"cluster", Some(b"addslots")), Some(1));
        assert!(p.may_refuse(b"acl"));
        assert!(p.may_refuse(b"CONFIG"));
        assert!(!p.may_refuse(b"get"));
        assert!(acl_removals(p).contains(&"-acl|setuser".to_string()));
        assert_eq!(
            Profile::AzureManagedRedis.refused_arg(b"swapdb", None),
            Some(0)
        );
    }
}
