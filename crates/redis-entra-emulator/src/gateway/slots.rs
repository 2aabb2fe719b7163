//! The Enterprise cluster policy of Azure Managed Redis (`--cluster-policy enterprise`): one
//! endpoint, with Redis Enterprise's proxy in front of the shards, so that clients need no
//! cluster support but keys still live in hash slots.
//!
//! What the proxy allows, as Redis documents it ("Multi-key operations", the column "RS,
//! clustering enabled, OSS cluster API disabled"; and "What needs to be checked before
//! resharding a Redis Enterprise database?"), on a database with more than one shard:
//!
//! - `DEL`, `EXISTS`, `MGET`, `MSET`, `TOUCH` and `UNLINK` take keys in any slots (the proxy
//!   splits them across the shards); so do pipelines, `KEYS`, `SCAN`, `DBSIZE` and `FLUSHALL`;
//! - every other command with several keys (`SUNION`, `RENAME`, `BLPOP`, `EVAL`'s keys, …)
//!   needs them in one slot, or it is refused with
//!   `-CROSSSLOT Keys in request don't hash to the same slot`;
//! - inside `WATCH`/`MULTI`…`EXEC` every key must be in the slot of the first one; a command
//!   that breaks this is refused when it is queued, with the proxy's context:
//!   `(context='within MULTI', command='SET', original-slot='10778', wrong-slot='3197',
//!   first-key='user:1', violating-key='user:1:books')`.
//!
//! The emulator plays a database with several shards (Azure's smallest may have one, where
//! nothing is refused): one `redis-server` holds every key, and the gateway refuses what the
//! proxy would. Where a command's keys are comes from the backend itself (`COMMAND`: first and
//! last key, step), and for the commands whose keys depend on their arguments (`movablekeys`),
//! from [`movable_keys`].

use std::sync::Arc;

use crate::backend::{CommandArities, KeyPositions};
use crate::cluster::key_slot;

use super::resp::string2ll;

/// The refusal, as the proxy words it.
const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// The commands whose keys may be in any slots: the proxy splits them across the shards.
const ANY_SLOTS: [&str; 6] = ["del", "exists", "mget", "mset", "touch", "unlink"];

/// The largest request with several keys that the gateway holds whole to read them.
pub(crate) const MAX_KEYED_REQUEST: usize = 1024 * 1024;

/// The slot rules, with the backend's command table.
#[derive(Debug, Clone)]
pub(crate) struct SlotRules {
    commands: Arc<CommandArities>,
}

/// How much of a request the rules must see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Nothing: it has no keys, or its keys may be anywhere.
    Nothing,
    /// Its first key: whatever of its start has arrived is enough (the first key comes before
    /// any large value).
    FirstKey,
    /// All of it (several keys), up to [`MAX_KEYED_REQUEST`].
    Whole,
}

impl SlotRules {
    /// The rules over the backend's commands.
    pub(crate) fn new(commands: Arc<CommandArities>) -> Self {
        Self { commands }
    }

    /// What the rules must see of a request named `name` (any case): `in_block` while a
    /// `WATCH` or `MULTI` is open, where every key counts.
    pub(crate) fn need(&self, name: &[u8], in_block: bool) -> Need {
        let Ok(name) = std::str::from_utf8(name) else {
            return Need::Nothing;
        };
        let name = name.to_ascii_lowercase();
        let Some(keys) = self.commands.keys(&name) else {
            // No keys, or a container whose subcommands have them (`OBJECT ENCODING key`):
            // one key, after the subcommand.
            return if in_block && self.has_keyed_subcommands(&name) {
                Need::FirstKey
            } else {
                Need::Nothing
            };
        };
        let several = keys.movable || keys.last != keys.first;
        match (several, in_block) {
            (true, true) => Need::Whole,
            (true, false) if !ANY_SLOTS.contains(&name.as_str()) => Need::Whole,
            (false, true) => Need::FirstKey,
            _ => Need::Nothing,
        }
    }

    fn has_keyed_subcommands(&self, name: &str) -> bool {
        matches!(self.commands.get(name.as_bytes()), Some((_, subs)) if subs
            .keys()
            .any(|sub| self.commands.keys(&format!("{name}|{sub}")).is_some()))
    }

    /// The keys among `args` (the command name first). A request cut short (`args` only the
    /// start of it) gives the keys that are there.
    pub(crate) fn keys<'a>(&self, args: &[&'a [u8]]) -> Vec<&'a [u8]> {
        let Some(name) = args
            .first()
            .and_then(|n| std::str::from_utf8(n).ok())
            .map(str::to_ascii_lowercase)
        else {
            return Vec::new();
        };
        let sub = args
            .get(1)
            .and_then(|s| std::str::from_utf8(s).ok())
            .map(|s| format!("{name}|{}", s.to_ascii_lowercase()));
        let Some(positions) = self
            .commands
            .keys(&name)
            .or_else(|| sub.and_then(|s| self.commands.keys(&s)))
        else {
            return Vec::new();
        };
        let mut keys = ranged_keys(args, positions);
        if positions.movable {
            keys.extend(movable_keys(&name, args));
        }
        keys
    }
}

/// The keys `COMMAND`'s first, last and step give.
fn ranged_keys<'a>(args: &[&'a [u8]], p: KeyPositions) -> Vec<&'a [u8]> {
    let len = args.len() as i64;
    if p.first <= 0 || p.step <= 0 {
        return Vec::new();
    }
    let last = if p.last < 0 { len + p.last } else { p.last };
    let mut keys = Vec::new();
    let mut i = p.first;
    while i <= last && i < len {
        if let Some(key) = args.get(i as usize) {
            keys.push(*key);
        }
        i += p.step;
    }
    keys
}

/// The keys that a `movablekeys` command's arguments give (beyond its first, last and step):
/// a key count (`EVAL script numkeys key…`, `ZUNIONSTORE dest numkeys key…`, `LMPOP numkeys
/// key…`), `STREAMS key… id…`, or a `STORE`/`STOREDIST` destination.
fn movable_keys<'a>(name: &str, args: &[&'a [u8]]) -> Vec<&'a [u8]> {
    let counted = |at: usize| -> Vec<&'a [u8]> {
        let n = args
            .get(at)
            .and_then(|n| string2ll(n))
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0);
        args.iter().skip(at + 1).take(n).copied().collect()
    };
    let after_keyword = |from: usize, words: &[&str]| -> Vec<&'a [u8]> {
        let mut keys = Vec::new();
        let mut i = from;
        while i + 1 < args.len() {
            if words
                .iter()
                .any(|w| args[i].eq_ignore_ascii_case(w.as_bytes()))
            {
                keys.push(args[i + 1]);
                i += 1;
            }
            i += 1;
        }
        keys
    };
    match name {
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" => counted(2),
        "zunionstore" | "zinterstore" | "zdiffstore" | "blmpop" | "bzmpop" => counted(2),
        "zunion" | "zinter" | "zdiff" | "zintercard" | "sintercard" | "lmpop" | "zmpop" => {
            counted(1)
        }
        "xread" | "xreadgroup" => {
            let Some(at) = args.iter().position(|a| a.eq_ignore_ascii_case(b"STREAMS")) else {
                return Vec::new();
            };
            let rest = args.get(at + 1..).unwrap_or(&[]);
            rest.iter().take(rest.len() / 2).copied().collect()
        }
        "sort" => after_keyword(2, &["STORE"]),
        "georadius" => after_keyword(6, &["STORE", "STOREDIST"]),
        "georadiusbymember" => after_keyword(5, &["STORE", "STOREDIST"]),
        _ => Vec::new(),
    }
}

/// One connection's `WATCH`/`MULTI` block, as far as slots go: the block's first key and its
/// slot. Followed from the requests (the proxy decides when a command is queued).
#[derive(Debug, Default)]
pub(crate) struct Block {
    multi: bool,
    watching: bool,
    first: Option<(u16, Vec<u8>)>,
}

impl Block {
    /// Whether a `WATCH` or `MULTI` is open.
    pub(crate) fn is_open(&self) -> bool {
        self.multi || self.watching
    }

    /// Follows the commands that open and close a block (`MULTI`, `WATCH`, `EXEC`,
    /// `DISCARD`, `UNWATCH`, `RESET`), by name, lower case or not.
    pub(crate) fn follow(&mut self, name: &[u8]) {
        let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        if is("multi") {
            self.multi = true;
        } else if is("watch") {
            self.watching = !self.multi || self.watching;
        } else if is("exec") || is("discard") || is("reset") || (is("unwatch") && !self.multi) {
            *self = Self::default();
        }
    }

    /// Checks a request's keys (`args`, the command name first); `Err` with the error reply
    /// (without its `-` and CRLF) to refuse it with.
    pub(crate) fn check(&mut self, rules: &SlotRules, args: &[&[u8]]) -> Result<(), String> {
        let keys = rules.keys(args);
        let Some(first) = keys.first() else {
            return Ok(());
        };
        let name = String::from_utf8_lossy(args.first().copied().unwrap_or_default());
        let lower = name.to_ascii_lowercase();
        let slot = key_slot(first);
        let context = |original: u16, wrong: u16, first: &[u8], violating: &[u8]| {
            format!(
                "{CROSSSLOT} (context='within MULTI', command='{}', original-slot='{original}', \
                 wrong-slot='{wrong}', first-key='{}', violating-key='{}')",
                name.to_ascii_uppercase(),
                String::from_utf8_lossy(first),
                String::from_utf8_lossy(violating)
            )
        };
        if self.multi || !ANY_SLOTS.contains(&lower.as_str()) {
            if let Some(other) = keys.iter().find(|k| key_slot(k) != slot) {
                return Err(if self.multi {
                    context(slot, key_slot(other), first, other)
                } else {
                    CROSSSLOT.to_string()
                });
            }
        }
        if self.is_open() || lower == "watch" {
            match &self.first {
                Some((original, first_key)) if *original != slot => {
                    return Err(if self.multi {
                        context(*original, slot, first_key, first)
                    } else {
                        CROSSSLOT.to_string()
                    });
                }
                Some(_) => {}
                None => self.first = Some((slot, first.to_vec())),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positions(first: i64, last: i64, step: i64, movable: bool) -> KeyPositions {
        KeyPositions {
            first,
            last,
            step,
            movable,
        }
    }

    #[test]
    fn keys_from_ranges_and_from_arguments() {
        let args: Vec<&[u8]> = vec![b"MSET", b"a", b"1", b"b", b"2"];
        assert_eq!(
            ranged_keys(&args, positions(1, -1, 2, false)),
            vec![&b"a"[..], b"b"]
        );
        let args: Vec<&[u8]> = vec![b"BLPOP", b"a", b"b", b"0"];
        assert_eq!(
            ranged_keys(&args, positions(1, -2, 1, false)),
            vec![&b"a"[..], b"b"]
        );
        let args: Vec<&[u8]> = vec![b"EVAL", b"return 1", b"2", b"k1", b"k2", b"argv"];
        assert_eq!(movable_keys("eval", &args), vec![&b"k1"[..], b"k2"]);
        let args: Vec<&[u8]> = vec![b"ZUNIONSTORE", b"d", b"2", b"a", b"b", b"WEIGHTS", b"1"];
        assert_eq!(movable_keys("zunionstore", &args), vec![&b"a"[..], b"b"]);
        let args: Vec<&[u8]> = vec![
            b"XREAD", b"COUNT", b"1", b"streams", b"s1", b"s2", b"0", b"0",
        ];
        assert_eq!(movable_keys("xread", &args), vec![&b"s1"[..], b"s2"]);
        let args: Vec<&[u8]> = vec![b"SORT", b"l", b"LIMIT", b"0", b"1", b"store", b"dest"];
        assert_eq!(movable_keys("sort", &args), vec![&b"dest"[..]]);
        // A bad key count gives no keys (Redis answers the error itself).
        let args: Vec<&[u8]> = vec![b"EVAL", b"return 1", b"x", b"k1"];
        assert!(movable_keys("eval", &args).is_empty());
    }

    #[test]
    fn blocks_open_and_close_by_name() {
        let mut block = Block::default();
        block.follow(b"watch");
        assert!(block.is_open());
        block.follow(b"UNWATCH");
        assert!(!block.is_open());
        block.follow(b"MULTI");
        block.follow(b"unwatch");
        assert!(block.is_open(), "UNWATCH inside MULTI is queued, not run");
        block.follow(b"Exec");
        assert!(!block.is_open());
    }
}
