//! Redis connections that stay authenticated: one file per kind of connection.
//!
//! | kind | type | how it stays authenticated |
//! |---|---|---|
//! | async, multiplexed | [`EntraConnection`](multiplexed::EntraConnection) | a task per connection sends `AUTH` in place when a token arrives, reconnects when the connection is lost |
//! | sync | [`EntraSyncConnection`](sync::EntraSyncConnection) | sends `AUTH` before the next command once a newer token exists (never inside `MULTI`), reconnects a dead connection first |
//! | r2d2 / bb8 pools | [`pool`] | `AUTH` at checkout, on return, or while idle: never in the middle of a borrower's commands |
//! | cluster | [`EntraClusterConnection`](cluster::EntraClusterConnection) | redis-rs' cluster client with our token stream as its credentials provider: every node connection starts with the current token and re-`AUTH`s in place (see [`cluster`] for the limits) |
//! | pub/sub | [`EntraPubSub`](pubsub::EntraPubSub) | RESP3: `AUTH` in place; RESP2 (where Redis refuses `AUTH` in subscribed mode): a new connection takes over before the token expires, without losing or repeating a message |
//! | fred (feature `fred`) | a fred client configured by `fred::builder` | fred fetches the current token on every (re)connect; `fred::keep_authenticated` sends `AUTH` to every node once per new token, and has the client reconnect if that keeps failing |

pub mod cluster;
#[cfg(feature = "fred")]
pub mod fred;
pub mod multiplexed;
pub mod options;
#[cfg(any(feature = "r2d2", feature = "bb8"))]
pub mod pool;
pub mod pubsub;
pub mod sync;

use crate::error::Error;

/// Turns a library error into a redis error, for the `ConnectionLike` paths.
pub(crate) fn to_redis_error(context: &'static str, e: Error) -> redis::RedisError {
    match e {
        Error::Redis(re) => (*re).clone(),
        other => redis::RedisError::from((redis::ErrorKind::Io, context, other.to_string())),
    }
}

/// Tracks whether a connection is inside a `MULTI` block, command by command, so that no
/// `AUTH` is ever sent between a `MULTI` and its `EXEC`/`DISCARD`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MultiTracker {
    in_multi: bool,
}

impl MultiTracker {
    /// Whether a `MULTI` is open.
    pub(crate) fn in_multi(&self) -> bool {
        self.in_multi
    }

    /// Notes a command sent on the connection, by name.
    pub(crate) fn saw(&mut self, name: &[u8]) {
        if name.eq_ignore_ascii_case(b"MULTI") {
            self.in_multi = true;
        } else if name.eq_ignore_ascii_case(b"EXEC")
            || name.eq_ignore_ascii_case(b"DISCARD")
            || name.eq_ignore_ascii_case(b"RESET")
        {
            self.in_multi = false;
        }
    }

    /// Notes every command in packed RESP bytes (one command or a pipeline).
    pub(crate) fn saw_packed(&mut self, packed: &[u8]) {
        for name in PackedNames::new(packed) {
            self.saw(name);
        }
    }

    /// Notes a command object.
    #[cfg_attr(not(feature = "bb8"), allow(dead_code))]
    pub(crate) fn saw_cmd(&mut self, cmd: &redis::Cmd) {
        if let Some(redis::Arg::Simple(name)) = cmd.args_iter().next() {
            self.saw(name);
        }
    }

    /// Forgets the state (the connection was replaced: a new one is in no transaction).
    pub(crate) fn reset(&mut self) {
        self.in_multi = false;
    }
}

/// The names of the commands in packed RESP bytes (arrays of bulk strings, as redis-rs packs
/// them). Stops at anything else.
struct PackedNames<'a> {
    rest: &'a [u8],
}

impl<'a> PackedNames<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Reads `<prefix><number>\r\n`.
    fn header(&mut self, prefix: u8) -> Option<usize> {
        let (&first, rest) = self.rest.split_first()?;
        if first != prefix {
            return None;
        }
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let n = std::str::from_utf8(rest.get(..end)?).ok()?.parse().ok()?;
        self.rest = rest.get(end + 2..)?;
        Some(n)
    }

    fn bulk(&mut self) -> Option<&'a [u8]> {
        let len = self.header(b'$')?;
        let data = self.rest.get(..len)?;
        self.rest = self.rest.get(len + 2..)?;
        Some(data)
    }
}

impl<'a> Iterator for PackedNames<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let count = self.header(b'*')?;
        let name = if count > 0 { self.bulk()? } else { &[][..] };
        for _ in 1..count {
            self.bulk()?;
        }
        Some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_is_tracked_through_packed_pipelines() {
        let mut t = MultiTracker::default();
        t.saw_packed(&redis::cmd("MULTI").get_packed_command());
        assert!(t.in_multi());
        let mut p = redis::pipe();
        p.cmd("SET")
            .arg("k")
            .arg("v\r\n*1\r\n$4\r\nEXEC")
            .cmd("GET")
            .arg("k");
        t.saw_packed(&p.get_packed_pipeline());
        assert!(
            t.in_multi(),
            "a payload that looks like EXEC is not a command"
        );
        t.saw_packed(&redis::cmd("exec").get_packed_command());
        assert!(!t.in_multi());
        let mut atomic = redis::pipe();
        atomic.atomic().cmd("INCR").arg("n");
        t.saw_packed(&atomic.get_packed_pipeline());
        assert!(
            !t.in_multi(),
            "an atomic pipeline opens and closes its MULTI"
        );
        t.saw_cmd(&redis::cmd("MULTI"));
        assert!(t.in_multi());
        t.saw_cmd(&redis::cmd("DISCARD"));
        assert!(!t.in_multi());
    }
}
