//! What the application subscribes to: the kinds of subscription, the set to renew on every new
//! connection, and the changes the handles ask the task for.

use std::collections::BTreeSet;

use tokio::sync::oneshot;

use crate::error::Result;

/// What a subscription is to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubscriptionKind {
    /// A channel (`SUBSCRIBE`).
    Channel,
    /// A glob-style pattern (`PSUBSCRIBE`).
    Pattern,
    /// A shard channel (`SSUBSCRIBE`; RESP3 only in this client, because redis-rs' RESP2 pub/sub
    /// connection does not parse sharded messages).
    Shard,
}

pub(super) enum Op {
    Subscribe,
    Unsubscribe,
}

pub(super) struct Request {
    pub(super) op: Op,
    pub(super) kind: SubscriptionKind,
    pub(super) names: Vec<Vec<u8>>,
    pub(super) reply: oneshot::Sender<Result<()>>,
}

pub(super) fn op_copy(op: &Op) -> Op {
    match op {
        Op::Subscribe => Op::Subscribe,
        Op::Unsubscribe => Op::Unsubscribe,
    }
}

/// Everything the application subscribed to.
#[derive(Debug, Clone, Default)]
pub(super) struct Subscriptions {
    pub(super) channels: BTreeSet<Vec<u8>>,
    pub(super) patterns: BTreeSet<Vec<u8>>,
    pub(super) shards: BTreeSet<Vec<u8>>,
}

impl Subscriptions {
    pub(super) fn of(&mut self, kind: SubscriptionKind) -> &mut BTreeSet<Vec<u8>> {
        match kind {
            SubscriptionKind::Channel => &mut self.channels,
            SubscriptionKind::Pattern => &mut self.patterns,
            SubscriptionKind::Shard => &mut self.shards,
        }
    }
}
