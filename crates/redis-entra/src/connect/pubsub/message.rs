//! A published message, as delivered to the application.

use std::hash::{DefaultHasher, Hash, Hasher};

use redis::{PushInfo, PushKind, Value};

use super::subscriptions::SubscriptionKind;

/// A published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub(super) kind: SubscriptionKind,
    pub(super) channel: Vec<u8>,
    pub(super) pattern: Option<Vec<u8>>,
    pub(super) payload: Vec<u8>,
    pub(super) possible_duplicate: bool,
}

impl Message {
    /// Which kind of subscription delivered it.
    pub fn kind(&self) -> SubscriptionKind {
        self.kind
    }

    /// The channel it was published to.
    pub fn channel(&self) -> &[u8] {
        &self.channel
    }

    /// The channel as text, if it is UTF-8.
    pub fn channel_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.channel).ok()
    }

    /// The pattern that matched, for a pattern subscription.
    pub fn pattern(&self) -> Option<&[u8]> {
        self.pattern.as_deref()
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The payload as text, if it is UTF-8.
    pub fn payload_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.payload).ok()
    }

    /// Set only after a handover that could not use a marker (see [the module docs](super)):
    /// this message equals one delivered just before from the old connection, and is probably
    /// that message again.
    pub fn possible_duplicate(&self) -> bool {
        self.possible_duplicate
    }

    pub(super) fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        (self.kind, &self.channel, &self.pattern, &self.payload).hash(&mut h);
        h.finish()
    }

    pub(super) fn from_msg(msg: redis::Msg) -> Option<Self> {
        let channel: Vec<u8> = msg.get_channel().ok()?;
        let pattern: Option<Vec<u8>> = msg.get_pattern().ok()?;
        Some(Self {
            kind: if pattern.is_some() {
                SubscriptionKind::Pattern
            } else {
                SubscriptionKind::Channel
            },
            channel,
            pattern,
            payload: msg.get_payload_bytes().to_vec(),
            possible_duplicate: false,
        })
    }

    pub(super) fn from_push(info: PushInfo) -> Option<Self> {
        fn bytes(v: Value) -> Option<Vec<u8>> {
            match v {
                Value::BulkString(b) => Some(b),
                Value::SimpleString(s) => Some(s.into_bytes()),
                _ => None,
            }
        }
        let mut data = info.data.into_iter();
        let (kind, pattern) = match info.kind {
            PushKind::Message => (SubscriptionKind::Channel, None),
            PushKind::SMessage => (SubscriptionKind::Shard, None),
            PushKind::PMessage => (SubscriptionKind::Pattern, Some(bytes(data.next()?)?)),
            _ => return None,
        };
        Some(Self {
            kind,
            channel: bytes(data.next()?)?,
            pattern,
            payload: bytes(data.next()?)?,
            possible_duplicate: false,
        })
    }
}
