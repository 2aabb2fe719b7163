//! What a borrower did to a connection's server-side session, command by command.
//!
//! Redis keeps state per connection that outlives a command: an open `MULTI`, `WATCH`ed keys, the
//! selected database, subscriptions, `CLIENT REPLY OFF`, the user a `RESET` or `AUTH` switched
//! to. A connection that is handed from one borrower to the next (a pool), or replaced under a
//! borrower (a reconnect with a fresh token), must not carry that state across silently:
//!
//! - no `AUTH` is sent, and the connection is not replaced, while a `MULTI` is open: the `AUTH`
//!   would be queued in the borrower's transaction, and a replacement would run the rest of the
//!   transaction outside it;
//! - a connection whose `MULTI` or `WATCH` was lost (the connection died or its token expired
//!   inside it) fails every command with [`SessionState::lost_error`] until the borrower ends the
//!   transaction (`EXEC`, `DISCARD`, `UNWATCH`, `RESET`), so a transaction never commits in part
//!   or without its optimistic lock;
//! - a pool takes a connection back only if it is [clean](SessionState::is_clean): no `MULTI` or
//!   `WATCH` open, no session-altering command, and no command whose reply was never read (a
//!   cancelled future: whether Redis ran it is unknown).
//!
//! Commands are noted *before* they are sent (so a cancelled `MULTI` counts as open) and the
//! reply is noted after; a reply that never comes leaves the state unknown, which is unclean.

use redis::{ErrorKind, RedisError};

/// A command's name and, for container commands such as `CLIENT`, its subcommand.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CommandName<'a> {
    name: &'a [u8],
    sub: Option<&'a [u8]>,
}

impl<'a> CommandName<'a> {
    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    fn sub_is(&self, sub: &str) -> bool {
        self.sub
            .is_some_and(|s| s.eq_ignore_ascii_case(sub.as_bytes()))
    }

    /// The names of a redis-rs command object.
    #[cfg(any(feature = "bb8", test))]
    pub(crate) fn of_cmd(cmd: &'a redis::Cmd) -> Self {
        let mut args = cmd.args_iter().map(|a| match a {
            redis::Arg::Simple(bytes) => bytes,
            _ => &[][..],
        });
        Self {
            name: args.next().unwrap_or_default(),
            sub: args.next(),
        }
    }
}

/// Why a connection's session changed in a way a pool cannot undo.
fn alters_session(c: &CommandName<'_>) -> Option<&'static str> {
    const WHOLE: [&str; 10] = [
        "SELECT",
        "HELLO",
        "AUTH",
        "RESET",
        "SUBSCRIBE",
        "PSUBSCRIBE",
        "SSUBSCRIBE",
        "MONITOR",
        "READONLY",
        "READWRITE",
    ];
    const CLIENT: [&str; 7] = [
        "REPLY", "TRACKING", "SETNAME", "NO-EVICT", "NO-TOUCH", "CACHING", "SETINFO",
    ];
    if let Some(name) = WHOLE.iter().find(|n| c.is(n)) {
        return Some(name);
    }
    if c.is("CLIENT") {
        return CLIENT.iter().find(|s| c.sub_is(s)).map(|_| "CLIENT");
    }
    None
}

/// What was lost with a replaced connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lost {
    /// A `MULTI` was open: its queued commands are gone.
    Transaction,
    /// Keys were `WATCH`ed: the optimistic lock is gone.
    Watch,
}

/// The session state of one connection, as far as the commands sent on it tell.
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionState {
    multi: bool,
    watching: bool,
    /// The first session-altering command sent, if any.
    altered: Option<&'static str>,
    /// Commands sent whose replies were not read yet; one left over after its caller finished
    /// means the caller was cancelled (whether Redis ran the command is unknown, and a blocking
    /// command may still hold the connection).
    in_flight: u32,
    /// Set when the connection was replaced inside a `MULTI` or `WATCH`.
    lost: Option<Lost>,
}

impl SessionState {
    /// Whether a `MULTI` is open (no `AUTH` may be sent, and the connection may not be replaced).
    pub(crate) fn in_multi(&self) -> bool {
        self.multi
    }

    /// Whether the connection may be replaced without losing the borrower's state: no `MULTI`
    /// or `WATCH` open.
    pub(crate) fn replaceable(&self) -> bool {
        !self.multi && !self.watching
    }

    /// Whether the connection can go to another borrower as it is.
    pub(crate) fn is_clean(&self) -> bool {
        !self.multi
            && !self.watching
            && self.altered.is_none()
            && self.in_flight == 0
            && self.lost.is_none()
    }

    /// Why the connection is not clean, for logs.
    pub(crate) fn why_unclean(&self) -> &'static str {
        if self.in_flight > 0 {
            "a command's reply was never read (its caller was cancelled)"
        } else if self.multi {
            "a MULTI was left open"
        } else if self.watching {
            "a WATCH was left open"
        } else if self.lost.is_some() {
            "a transaction was lost with its connection"
        } else {
            self.altered.unwrap_or("clean")
        }
    }

    /// Notes commands about to be sent. Fails, without anything being sent, while a lost
    /// transaction has not been ended by its borrower (the batch that ends it fails too).
    pub(crate) fn admit<'a>(
        &mut self,
        commands: impl IntoIterator<Item = CommandName<'a>>,
    ) -> Result<(), RedisError> {
        if let Some(lost) = self.lost {
            let ends = commands.into_iter().any(|c| {
                c.is("EXEC")
                    || c.is("DISCARD")
                    || c.is("RESET")
                    || (c.is("UNWATCH") && lost == Lost::Watch)
            });
            if ends {
                self.lost = None;
            }
            return Err(Self::lost_error(lost));
        }
        for c in commands {
            self.note(&c);
        }
        self.in_flight = self.in_flight.saturating_add(1);
        Ok(())
    }

    fn note(&mut self, c: &CommandName<'_>) {
        if c.is("MULTI") {
            self.multi = true;
        } else if c.is("EXEC") || c.is("DISCARD") {
            self.multi = false;
            self.watching = false;
        } else if c.is("WATCH") {
            self.watching = true;
        } else if c.is("UNWATCH") {
            self.watching = false;
        }
        if c.is("RESET") {
            self.multi = false;
            self.watching = false;
        }
        if self.altered.is_none() {
            self.altered = alters_session(c);
        }
    }

    /// Notes that the replies to the admitted commands were read (successfully or not).
    pub(crate) fn replied(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Notes that the connection was replaced by a new one (clean, as Redis gives it): a `MULTI`
    /// or `WATCH` open on the old one is lost, and the borrower is told at its next command.
    pub(crate) fn replaced(&mut self) {
        let lost = if self.multi {
            Some(Lost::Transaction)
        } else if self.watching {
            Some(Lost::Watch)
        } else {
            None
        };
        *self = Self {
            lost: lost.or(self.lost),
            ..Self::default()
        };
    }

    fn lost_error(lost: Lost) -> RedisError {
        let what = match lost {
            Lost::Transaction => {
                "the connection was replaced inside MULTI (it was lost, or its token expired); the transaction was discarded and nothing of it ran"
            }
            Lost::Watch => {
                "the connection was replaced after WATCH (it was lost, or its token expired); the optimistic lock is gone, so the transaction is refused"
            }
        };
        RedisError::from((
            ErrorKind::Client,
            "transaction aborted",
            format!(
                "{what}: send it again from the start (EXEC, DISCARD or UNWATCH ends this state)"
            ),
        ))
    }
}

/// The names of the commands in packed RESP bytes (arrays of bulk strings, as redis-rs packs
/// them). Stops at anything else.
#[derive(Clone)]
pub(crate) struct PackedNames<'a> {
    rest: &'a [u8],
}

impl<'a> PackedNames<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
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
    type Item = CommandName<'a>;

    fn next(&mut self) -> Option<CommandName<'a>> {
        let count = self.header(b'*')?;
        let name = if count > 0 { self.bulk()? } else { &[][..] };
        let sub = if count > 1 { Some(self.bulk()?) } else { None };
        for _ in 2..count {
            self.bulk()?;
        }
        Some(CommandName { name, sub })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit_packed(s: &mut SessionState, packed: &[u8]) -> Result<(), RedisError> {
        let r = s.admit(PackedNames::new(packed));
        s.replied();
        r
    }

    #[test]
    fn multi_is_tracked_through_packed_pipelines() {
        let mut t = SessionState::default();
        admit_packed(&mut t, &redis::cmd("MULTI").get_packed_command()).unwrap();
        assert!(t.in_multi());
        let mut p = redis::pipe();
        p.cmd("SET")
            .arg("k")
            .arg("v\r\n*1\r\n$4\r\nEXEC")
            .cmd("GET")
            .arg("k");
        admit_packed(&mut t, &p.get_packed_pipeline()).unwrap();
        assert!(
            t.in_multi(),
            "a payload that looks like EXEC is not a command"
        );
        admit_packed(&mut t, &redis::cmd("exec").get_packed_command()).unwrap();
        assert!(!t.in_multi());
        assert!(t.is_clean());
        let mut atomic = redis::pipe();
        atomic.atomic().cmd("INCR").arg("n");
        admit_packed(&mut t, &atomic.get_packed_pipeline()).unwrap();
        assert!(
            !t.in_multi(),
            "an atomic pipeline opens and closes its MULTI"
        );
        let multi = redis::cmd("MULTI");
        t.admit([CommandName::of_cmd(&multi)]).unwrap();
        assert!(!t.is_clean(), "no reply yet");
        t.replied();
        assert!(t.in_multi());
        let discard = redis::cmd("DISCARD");
        t.admit([CommandName::of_cmd(&discard)]).unwrap();
        t.replied();
        assert!(t.is_clean());
    }

    #[test]
    fn session_altering_commands_make_a_connection_unclean() {
        for cmd in [
            redis::cmd("SELECT").arg(3).to_owned(),
            redis::cmd("CLIENT").arg("REPLY").arg("OFF").to_owned(),
            redis::cmd("client").arg("tracking").arg("on").to_owned(),
            redis::cmd("SUBSCRIBE").arg("c").to_owned(),
            redis::cmd("RESET").to_owned(),
            redis::cmd("WATCH").arg("k").to_owned(),
        ] {
            let mut t = SessionState::default();
            admit_packed(&mut t, &cmd.get_packed_command()).unwrap();
            assert!(!t.is_clean(), "{cmd:?}");
        }
        let mut t = SessionState::default();
        admit_packed(&mut t, &redis::cmd("CLIENT").arg("ID").get_packed_command()).unwrap();
        admit_packed(
            &mut t,
            &redis::cmd("GET").arg("SELECT").get_packed_command(),
        )
        .unwrap();
        assert!(t.is_clean());
    }

    #[test]
    fn a_transaction_lost_with_its_connection_fails_until_it_is_ended() {
        let mut t = SessionState::default();
        admit_packed(&mut t, &redis::cmd("MULTI").get_packed_command()).unwrap();
        t.replaced();
        let set = redis::cmd("SET").arg("k").arg("v").get_packed_command();
        assert!(admit_packed(&mut t, &set).is_err());
        assert!(admit_packed(&mut t, &redis::cmd("EXEC").get_packed_command()).is_err());
        admit_packed(&mut t, &set).unwrap();
        assert!(t.is_clean());

        let mut t = SessionState::default();
        admit_packed(&mut t, &redis::cmd("WATCH").arg("k").get_packed_command()).unwrap();
        t.replaced();
        let mut atomic = redis::pipe();
        atomic.atomic().cmd("SET").arg("k").arg("v");
        assert!(admit_packed(&mut t, &atomic.get_packed_pipeline()).is_err());
        admit_packed(&mut t, &set).unwrap();
    }
}
