//! What the gateway waits for in Redis' replies: the session's state as Redis applied it.
//!
//! The request side records, for every request it forwards, what its reply will tell
//! ([`Expect`]); the reply side reads Redis' replies in order ([`super::replies`]) and only
//! then changes the session:
//!
//! - a substituted `AUTH`/`HELLO … AUTH` switches the identity, its deadline (that token's
//!   `exp`, whatever the previous one was) or its access-key epoch on its `+OK` (or `HELLO`'s
//!   map), never before; a refusal changes nothing;
//! - one queued in `MULTI` switches on `EXEC`'s reply, if its element is `+OK`; nothing for
//!   `DISCARD`, an `EXEC` aborted by `WATCH` (null) or `-EXECABORT`;
//! - `+RESET` makes the session unauthenticated (the backend's `default` user is off, so Redis
//!   answers `NOAUTH` from then on) with the pre-authentication deadline;
//! - the subscription counts come from the confirmations (their count field), and the protocol
//!   from `HELLO`'s reply, so that RESP2 messages and RESP3 pushes, which arrive between replies,
//!   are told apart from them.
//!
//! A few requests make replies impossible to count (`MONITOR`, `CLIENT REPLY OFF|SKIP`, a
//! subscribe command queued in `MULTI`, whose `EXEC` reply Redis 7 malforms). From there the
//! tracker stops following ("untracked"): the identity stays what it was, and a later `AUTH`,
//! `HELLO` or `RESET` closes the connection rather than guess (see docs/RELIABILITY.md).

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

use super::replies::Reply;
use super::validate::ValidToken;
use crate::stats::Stats;

/// The farthest deadline the gateway schedules.
pub(crate) const MAX_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

/// The most requests with a significant reply (anything but a plain command) awaiting their
/// replies at once; a client past it is closed.
pub(crate) const MAX_SIGNIFICANT: usize = 64 * 1024;
/// The most substituted `AUTH`/`HELLO` awaiting their replies at once (each holds its claims).
pub(crate) const MAX_PENDING_AUTH: usize = 64;

/// What a successful `AUTH` proved.
#[derive(Debug, Clone)]
pub(crate) enum Grant {
    /// A valid Entra token.
    Token(ValidToken),
    /// An access key, while keys were enabled at this revocation epoch.
    AccessKey { epoch: u64 },
}

/// A substituted authentication, applied when Redis accepts it.
#[derive(Debug, Clone)]
pub(crate) struct Switch {
    pub(crate) grant: Grant,
    /// The backend user (for logs).
    pub(crate) user: String,
    /// A `HELLO` (success is its map or array) rather than an `AUTH` (`+OK`).
    pub(crate) hello: bool,
    /// The protocol the `HELLO` asks for.
    pub(crate) proto: Option<u8>,
}

/// The three kinds of subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Channel,
    Pattern,
    Shard,
}

impl Kind {
    fn confirms(self, subscribe: bool) -> &'static [u8] {
        match (self, subscribe) {
            (Kind::Channel, true) => b"subscribe",
            (Kind::Pattern, true) => b"psubscribe",
            (Kind::Shard, true) => b"ssubscribe",
            (Kind::Channel, false) => b"unsubscribe",
            (Kind::Pattern, false) => b"punsubscribe",
            (Kind::Shard, false) => b"sunsubscribe",
        }
    }
}

/// What the reply to a forwarded request tells.
#[derive(Debug, Clone)]
pub(crate) enum Expect {
    /// `n` requests of one reply each that change nothing the gateway follows.
    Plain(u64),
    /// A substituted `AUTH` or `HELLO … AUTH`.
    Auth(Box<Switch>),
    /// `HELLO [protover]` without credentials.
    Hello(Option<u8>),
    Reset,
    Multi,
    Exec,
    Discard,
    /// A subscribe command with `n` channels (one confirmation each).
    Subscribe(Kind, u64),
    /// An unsubscribe command with `n` channels (0: all of that kind).
    Unsubscribe(Kind, u64),
    /// From here on replies cannot be counted.
    Untrackable,
    /// A request replaced by an unknown command: Redis' error reply is replaced with these
    /// bytes (an Azure-unsupported command's error, in Redis' words).
    Rewrite(Box<[u8]>),
}

impl Expect {
    fn significant(&self) -> bool {
        !matches!(self, Expect::Plain(_))
    }
}

/// Until when, and on what terms, the connection may stay open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    /// When to close it.
    pub(crate) deadline: Instant,
    /// Set while it is in with an access key: the revocation epoch it saw.
    pub(crate) key_epoch: Option<u64>,
    /// Whether Redis has it authenticated (false after `RESET`).
    pub(crate) authenticated: bool,
    /// Set while it is in with a token: the generation of the signing key that verified it.
    pub(crate) key_generation: Option<u64>,
}

/// When a connection authenticated with a token expiring at `exp` must close.
pub(crate) fn deadline_for(exp: u64, skew: Duration) -> Instant {
    let left = UNIX_EPOCH
        .checked_add(Duration::from_secs(exp))
        .and_then(|t| t.checked_add(skew))
        .map(|t| {
            t.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        })
        .unwrap_or(MAX_DEADLINE)
        .min(MAX_DEADLINE);
    Instant::now() + left
}

/// The lease a grant gives.
pub(crate) fn lease_for(grant: &Grant, skew: Duration) -> Lease {
    match grant {
        Grant::Token(token) => Lease {
            deadline: deadline_for(token.exp, skew),
            key_epoch: None,
            authenticated: true,
            key_generation: Some(token.key_generation),
        },
        Grant::AccessKey { epoch } => Lease {
            deadline: Instant::now() + MAX_DEADLINE,
            key_epoch: Some(*epoch),
            authenticated: true,
            key_generation: None,
        },
    }
}

/// What the reply side must do after a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Go on.
    Go,
    /// The session can no longer be followed while an authentication is in flight: close.
    Close,
}

/// The client sent more requests with significant replies than the gateway keeps track of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooMany;

/// The session as Redis' replies show it.
#[derive(Debug)]
pub(crate) struct Tracker {
    conn: u64,
    queue: VecDeque<Expect>,
    significant: usize,
    auths: usize,
    /// Confirmations still expected for the (un)subscribe command at the head of the queue.
    head_left: Option<u64>,
    in_multi: bool,
    /// Significant requests queued in the open transaction, with their index in it.
    queued: Vec<(u64, Expect)>,
    queued_count: u64,
    channels: u64,
    patterns: u64,
    shard: u64,
    proto: u8,
    untracked: bool,
    lease: watch::Sender<Lease>,
    skew: Duration,
    auth_timeout: Duration,
}

impl Tracker {
    /// A session Redis has just authenticated with `lease`, in protocol `proto`.
    pub(crate) fn new(
        conn: u64,
        lease: Lease,
        proto: u8,
        skew: Duration,
        auth_timeout: Duration,
    ) -> Self {
        Self {
            conn,
            queue: VecDeque::new(),
            significant: 0,
            auths: 0,
            head_left: None,
            in_multi: false,
            queued: Vec::new(),
            queued_count: 0,
            channels: 0,
            patterns: 0,
            shard: 0,
            proto,
            untracked: false,
            lease: watch::Sender::new(lease),
            skew,
            auth_timeout,
        }
    }

    /// Follows the lease as replies change it.
    pub(crate) fn lease(&self) -> watch::Receiver<Lease> {
        self.lease.subscribe()
    }

    /// Whether replies are no longer followed.
    pub(crate) fn untracked(&self) -> bool {
        self.untracked
    }

    /// Records a forwarded request.
    pub(crate) fn push(&mut self, expect: Expect) -> Result<(), TooMany> {
        if self.untracked {
            return Ok(());
        }
        if let (Expect::Plain(n), Some(Expect::Plain(last))) = (&expect, self.queue.back_mut()) {
            *last += n;
            return Ok(());
        }
        if expect.significant() {
            if self.significant + self.queued.len() >= MAX_SIGNIFICANT {
                return Err(TooMany);
            }
            if matches!(expect, Expect::Auth(_)) {
                if self.auths >= MAX_PENDING_AUTH {
                    return Err(TooMany);
                }
                self.auths += 1;
            }
            self.significant += 1;
        }
        self.queue.push_back(expect);
        self.untrack_at_head();
        Ok(())
    }

    /// Whether the next reply, if it is an error, is to be replaced
    /// ([`take_rewrite`](Self::take_rewrite)).
    pub(crate) fn rewrites_next(&self) -> bool {
        !self.untracked && matches!(self.queue.front(), Some(Expect::Rewrite(_)))
    }

    /// The bytes that replace the reply now ending (call before [`on_reply`](Self::on_reply),
    /// which then drops the request).
    pub(crate) fn take_rewrite(&mut self) -> Option<Box<[u8]>> {
        match self.queue.front_mut() {
            Some(Expect::Rewrite(bytes)) => Some(std::mem::take(bytes)),
            _ => None,
        }
    }

    /// The `EXEC` element indexes the scanner must summarise for the next reply.
    pub(crate) fn wanted(&self) -> Vec<u64> {
        if self.in_multi && matches!(self.queue.front(), Some(Expect::Exec)) {
            self.queued.iter().map(|(i, _)| *i).collect()
        } else {
            Vec::new()
        }
    }

    fn pop(&mut self) -> Option<Expect> {
        let head = self.queue.front_mut()?;
        if let Expect::Plain(n) = head {
            if *n > 1 {
                *n -= 1;
                return Some(Expect::Plain(1));
            }
        }
        let head = self.queue.pop_front();
        if let Some(e) = &head {
            if e.significant() {
                self.significant = self.significant.saturating_sub(1);
            }
            if matches!(e, Expect::Auth(_)) {
                self.auths = self.auths.saturating_sub(1);
            }
        }
        self.head_left = None;
        self.untrack_at_head();
        head
    }

    /// An `Untrackable` request at the head: nothing after it can be counted.
    fn untrack_at_head(&mut self) {
        if matches!(self.queue.front(), Some(Expect::Untrackable)) {
            self.untrack("a request whose replies cannot be counted");
        }
    }

    /// Stops following; `Close` if an authentication is still in flight.
    fn untrack(&mut self, why: &str) -> Verdict {
        debug!(
            conn = self.conn,
            why, "the gateway no longer follows this session's replies"
        );
        self.untracked = true;
        let in_flight = self
            .queue
            .iter()
            .chain(self.queued.iter().map(|(_, e)| e))
            .any(|e| matches!(e, Expect::Auth(_) | Expect::Reset));
        self.queue.clear();
        self.queued.clear();
        if in_flight {
            Verdict::Close
        } else {
            Verdict::Go
        }
    }

    fn subscribed(&self) -> bool {
        self.channels + self.patterns + self.shard > 0
    }

    /// Takes the count of a subscription confirmation.
    fn count(&mut self, kind: Kind, total: Option<i64>) {
        let Some(total) = total.and_then(|t| u64::try_from(t).ok()) else {
            return;
        };
        match kind {
            Kind::Channel => self.channels = total.saturating_sub(self.patterns),
            Kind::Pattern => self.patterns = total.saturating_sub(self.channels),
            Kind::Shard => self.shard = total,
        }
    }

    fn of(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Channel => self.channels,
            Kind::Pattern => self.patterns,
            Kind::Shard => self.shard,
        }
    }

    /// Whether `reply` is out of band (a message, an invalidation, a slot migration's
    /// `sunsubscribe`) rather than the answer to the request at the head of the queue.
    fn out_of_band(&mut self, reply: &Reply) -> bool {
        let resp2_pubsub = self.proto == 2 && self.subscribed() && reply.value.kind == b'*';
        if !reply.is_push() && !resp2_pubsub {
            return false;
        }
        let Some(first) = reply.pubsub_kind() else {
            return reply.is_push();
        };
        let head = self.queue.front().cloned();
        let answers_head = |kind: Kind, subscribe: bool| match head {
            Some(Expect::Subscribe(k, _)) if subscribe => k == kind && !self.in_multi,
            Some(Expect::Unsubscribe(k, _)) if !subscribe => k == kind && !self.in_multi,
            _ => false,
        };
        for kind in [Kind::Channel, Kind::Pattern, Kind::Shard] {
            for subscribe in [true, false] {
                if first.is(kind.confirms(subscribe)) {
                    if answers_head(kind, subscribe) {
                        return false;
                    }
                    // Unsolicited (a shard channel's slot moved away): just count it.
                    self.count(kind, reply.third_int());
                    return true;
                }
            }
        }
        // `message`, `pmessage`, `smessage`, `invalidate`, …; a RESP2 `pong` is a reply.
        reply.is_push() || first.is(b"message") || first.is(b"pmessage") || first.is(b"smessage")
    }

    /// Takes Redis' next reply into account.
    pub(crate) fn on_reply(&mut self, reply: &Reply, stats: &Stats) -> Verdict {
        if self.untracked || self.out_of_band(reply) {
            return Verdict::Go;
        }
        let Some(head) = self.queue.front() else {
            return self.untrack("a reply to no request");
        };
        if self.in_multi && !matches!(head, Expect::Exec | Expect::Discard | Expect::Reset) {
            // Queued (or refused, which makes EXEC abort).
            let entry = self.pop();
            if reply.value.is_status(b"QUEUED") {
                if let Some(entry) = entry.filter(Expect::significant) {
                    if matches!(entry, Expect::Auth(_)) {
                        self.auths += 1;
                    }
                    self.queued.push((self.queued_count, entry));
                }
                self.queued_count += 1;
            }
            return Verdict::Go;
        }
        match head.clone() {
            Expect::Plain(_) | Expect::Untrackable | Expect::Rewrite(_) => {
                self.pop();
            }
            Expect::Auth(switch) => {
                self.pop();
                self.authenticated(&switch, auth_succeeded(&switch, &reply.value), stats);
            }
            Expect::Hello(proto) => {
                self.pop();
                if reply.value.is_aggregate() {
                    if let Some(v) = proto {
                        self.proto = v;
                    }
                }
            }
            Expect::Reset => {
                self.pop();
                if reply.value.is_status(b"RESET") {
                    self.reset();
                }
            }
            Expect::Multi => {
                self.pop();
                if reply.value.is_status(b"OK") && !self.in_multi {
                    self.in_multi = true;
                    self.queued.clear();
                    self.queued_count = 0;
                }
            }
            Expect::Discard => {
                self.pop();
                if self.in_multi && reply.value.is_status(b"OK") {
                    self.end_multi();
                }
            }
            Expect::Exec => {
                self.pop();
                if self.in_multi {
                    let queued = std::mem::take(&mut self.queued);
                    let auths = queued
                        .iter()
                        .filter(|(_, e)| matches!(e, Expect::Auth(_)))
                        .count();
                    self.auths = self.auths.saturating_sub(auths);
                    self.end_multi();
                    if reply.value.kind == b'*' && !reply.value.is_null() {
                        return self.executed(queued, reply, stats);
                    }
                }
            }
            Expect::Subscribe(kind, n) | Expect::Unsubscribe(kind, n) => {
                if reply.value.is_error() {
                    self.pop();
                    return Verdict::Go;
                }
                let subscribe = matches!(head, Expect::Subscribe(..));
                let left = match self.head_left {
                    Some(left) => left,
                    None if subscribe || n > 0 => n,
                    None => self.of(kind).max(1),
                };
                self.count(kind, reply.third_int());
                if left <= 1 {
                    self.pop();
                } else {
                    self.head_left = Some(left - 1);
                }
            }
        }
        Verdict::Go
    }

    fn end_multi(&mut self) {
        self.in_multi = false;
        for (_, e) in self.queued.drain(..) {
            if matches!(e, Expect::Auth(_)) {
                self.auths = self.auths.saturating_sub(1);
            }
        }
        self.queued_count = 0;
    }

    /// `EXEC` ran the transaction: apply what its queued requests did, in order.
    fn executed(&mut self, queued: Vec<(u64, Expect)>, reply: &Reply, stats: &Stats) -> Verdict {
        let mut rest = queued.into_iter();
        while let Some((index, entry)) = rest.next() {
            let element = reply.element(index);
            match entry {
                Expect::Auth(switch) => {
                    let ok = element.is_some_and(|v| auth_succeeded(&switch, v));
                    self.authenticated(&switch, ok, stats);
                }
                Expect::Hello(proto) => {
                    if element.is_some_and(|v| v.is_aggregate()) {
                        if let Some(v) = proto {
                            self.proto = v;
                        }
                    }
                }
                _ => {
                    // A subscribe command or an untrackable one ran inside EXEC.
                    let later_auth = rest.any(|(_, e)| matches!(e, Expect::Auth(_)));
                    let verdict = self.untrack("a subscribe or untrackable command ran in EXEC");
                    return if later_auth { Verdict::Close } else { verdict };
                }
            }
        }
        Verdict::Go
    }

    fn authenticated(&mut self, switch: &Switch, ok: bool, stats: &Stats) {
        if !ok {
            debug!(
                conn = self.conn,
                user = %switch.user,
                "Redis refused the substituted AUTH: the session stays as it was"
            );
            stats.refused("backend_refused");
            return;
        }
        Stats::bump(&stats.auth_succeeded);
        if let Some(v) = switch.proto {
            self.proto = v;
        }
        match &switch.grant {
            Grant::Token(token) => debug!(
                conn = self.conn,
                oid = %token.oid,
                policy = token.policy.name(),
                exp = token.exp,
                "re-authenticated (Redis accepted it)"
            ),
            Grant::AccessKey { .. } => debug!(
                conn = self.conn,
                user = %switch.user,
                "re-authenticated with an access key (Redis accepted it)"
            ),
        }
        self.lease.send_replace(lease_for(&switch.grant, self.skew));
    }

    /// `+RESET`: back to a fresh, unauthenticated connection.
    fn reset(&mut self) {
        debug!(
            conn = self.conn,
            "RESET: the connection is unauthenticated again"
        );
        self.end_multi();
        self.channels = 0;
        self.patterns = 0;
        self.shard = 0;
        self.proto = 2;
        self.lease.send_replace(Lease {
            deadline: Instant::now() + self.auth_timeout,
            key_epoch: None,
            authenticated: false,
            key_generation: None,
        });
    }
}

fn auth_succeeded(switch: &Switch, value: &super::replies::Value) -> bool {
    if switch.hello {
        value.is_aggregate()
    } else {
        value.is_status(b"OK")
    }
}
