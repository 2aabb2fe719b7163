//! Pub/sub that stays subscribed across token expiry, on RESP3 and on RESP2.
//!
//! [`EntraPubSub`] owns one subscribed connection at a time (two during a handover) and a task
//! that keeps it authenticated. It remembers every channel, pattern and shard channel you
//! subscribe to, and delivers [`Message`]s in the order the server published them.
//!
//! # RESP3: `AUTH` in place
//!
//! Redis accepts `AUTH` on a RESP3 connection in subscribed mode, so when a token arrives the task
//! sends `AUTH <oid> <token>` on the subscribed connection itself. Nothing is interrupted; no
//! message is lost or repeated. If that `AUTH` fails for any reason but a lost connection, the
//! connection is replaced by a handover, as on RESP2.
//!
//! # RESP2: a handover before expiry
//!
//! Redis refuses `AUTH` in RESP2 subscribed mode, and Azure closes the connection when its token
//! expires (the anchor clients all lose their subscription there). So when a token arrives, well
//! before the old one expires, the task hands over to a new connection:
//!
//! 1. It opens a new connection with the new token and subscribes it to everything the old one
//!    is subscribed to, plus a private control channel (`__redis-entra:handover:<random>`),
//!    waiting for every confirmation. The old connection keeps delivering meanwhile.
//! 2. It publishes a random marker on the control channel (from the new connection on RESP3,
//!    from a short-lived plain connection on RESP2, where a subscribed connection may not
//!    publish). Redis runs commands one at a time, so both connections see every message in the
//!    same order, and the marker at the same place in that order.
//! 3. It delivers from the old connection up to its copy of the marker, then from the new
//!    connection after its copy, dropping what the new one received before the marker (the
//!    old one delivered those). Then it closes the old connection, long before its token expires.
//!
//! **Guarantee: every message published to a subscribed channel while a connection was
//! subscribed is delivered once, in order, with [`Message::possible_duplicate`] false.** The
//! control channel's messages are never delivered.
//!
//! If the marker cannot be used (the identity may not publish, or may not subscribe to the
//! control channel, or the old connection died during the handover), the task falls back: it
//! unsubscribes the old connection, delivers everything it received, then delivers from the new
//! one; the new connection's first messages that equal messages the old one delivered during
//! the handover are delivered with [`Message::possible_duplicate`] set. **Nothing is lost;
//! duplicates are flagged, never dropped** (a genuinely new message identical in channel and
//! payload to one just delivered can be flagged too, hence "possible").
//!
//! # Bounded buffers, and a consumer that falls behind
//!
//! Messages wait for the application in a buffer of [`MESSAGE_BUFFER`] messages (and, on
//! RESP3, as many again between the connection and the task). A consumer that falls further
//! behind is treated as Redis treats a slow subscriber (`client-output-buffer-limit`): the
//! connection is dropped, what was buffered is still delivered in order, and once the
//! application has read half of it a new connection resubscribes. A [`TokenEvent::Reconnected`]
//! whose reason says the application fell behind reports the gap. Memory never grows without
//! bound.
//!
//! # Refused channels
//!
//! If the server refuses a channel when the subscription is renewed on a new connection (the
//! identity's access policy changed: `NOPERM`), that channel is dropped and reported with
//! [`TokenEvent::SubscriptionDropped`]; the other channels carry on.
//!
//! # Invariants
//!
//! Each with a test that tries to break it (`tests/pubsub.rs`, `tests/pubsub_invariants.rs`,
//! and this module's unit tests):
//!
//! - **No message lost or repeated unflagged across a token rotation** while a connection is
//!   subscribed (`resp3_pubsub_reauthenticates_in_place_across_ten_rotations`,
//!   `resp2_pubsub_hands_over_before_expiry_across_ten_rotations`,
//!   `resp2_handover_without_a_marker_loses_nothing_and_flags_duplicates`,
//!   `a_control_message_does_not_end_the_duplicate_check`).
//! - **A possible gap is always reported** with [`TokenEvent::Reconnected`]: a lost connection,
//!   a handover whose old connection died, a consumer that fell behind
//!   (`a_consumer_that_stops_reading_keeps_memory_bounded_and_is_told_of_the_gap`,
//!   `resp3_a_lost_connection_is_replaced_and_resubscribed`).
//! - **Memory is bounded** by [`MESSAGE_BUFFER`] per queue, whatever the consumer does (same test).
//! - **One refused channel never stops the others** (`a_refused_channel_does_not_stop_the_allowed_ones`).
//! - **`subscribe` returns once the server confirmed** the subscription, on the live connection
//!   or on its replacement.
//!
//! # Lost connections
//!
//! A connection lost on either protocol (network, server restart, a token that could not be
//! renewed in time) is replaced at once with a fresh token, and resubscribed; the task keeps
//! trying, with backoff, for as long as the `EntraPubSub` lives. Messages published while no
//! connection was subscribed are lost: that is Redis pub/sub's contract. A
//! [`TokenEvent::Reconnected`] with this subscription's [`id`](EntraPubSub::id) tells you there
//! may be a gap.
//!
//! ```no_run
//! # async fn run() -> redis_entra::Result<()> {
//! use futures::StreamExt;
//! use redis_entra::{ConnectOptions, EntraPubSub, Protocol, TokenManager, TokenManagerOptions};
//!
//! let credential = redis_entra::credential::from_env(&Default::default())?;
//! let manager = TokenManager::new(credential, TokenManagerOptions::default());
//! let mut options = ConnectOptions::new("mycache.redis.cache.windows.net", 6380);
//! options.protocol = Protocol::Resp3; // or Resp2: the subscription survives either way
//! let mut pubsub = EntraPubSub::connect(options, manager).await?;
//! pubsub.subscribe("orders").await?;
//! pubsub.psubscribe("alerts:*").await?;
//! while let Some(msg) = pubsub.next().await {
//!     println!("{}: {}", msg.channel_str().unwrap_or("?"), String::from_utf8_lossy(msg.payload()));
//! }
//! # Ok(()) }
//! ```

use std::time::Duration;

// The module docs link to it; the code of this file does not use it.
#[cfg(doc)]
use crate::token::events::TokenEvent;

mod dedup;
mod handle;
mod handover;
mod link;
mod message;
mod subscriptions;
mod worker;

pub use handle::{EntraPubSub, EntraPubSubSink, EntraPubSubStream};
pub use message::Message;
pub use subscriptions::SubscriptionKind;

/// How long one step of a handover (a marker's trip, a subscription) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// How many messages wait for the application at most (see the module docs for what happens
/// past it).
pub const MESSAGE_BUFFER: usize = 10_000;

/// How many subscription changes may wait for the task at once (callers beyond wait).
const REQUEST_BUFFER: usize = 64;
