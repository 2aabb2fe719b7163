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

use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use futures::stream::{BoxStream, Stream, StreamExt};
use futures::FutureExt;
use redis::aio::{MultiplexedConnection, PubSubSink};
use redis::{AsyncConnectionConfig, PushInfo, PushKind, ToRedisArgs, Value};
use tokio::sync::{mpsc, oneshot};

use super::multiplexed::is_connection_error;
use super::options::{ConnectOptions, Protocol};
use crate::error::{Error, Result};
use crate::token::credentials::RedisCredentials;
use crate::token::events::TokenEvent;
use crate::token::manager::TokenManager;

/// How long one step of a handover (a marker's trip, a subscription) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// How many messages wait for the application at most (see the module docs for what happens
/// past it).
pub const MESSAGE_BUFFER: usize = 10_000;

/// How many subscription changes may wait for the task at once (callers beyond wait).
const REQUEST_BUFFER: usize = 64;

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

/// A published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    kind: SubscriptionKind,
    channel: Vec<u8>,
    pattern: Option<Vec<u8>>,
    payload: Vec<u8>,
    possible_duplicate: bool,
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

    /// Set only after a handover that could not use a marker (see [the module docs](self)):
    /// this message equals one delivered just before from the old connection, and is probably
    /// that message again.
    pub fn possible_duplicate(&self) -> bool {
        self.possible_duplicate
    }

    fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        (self.kind, &self.channel, &self.pattern, &self.payload).hash(&mut h);
        h.finish()
    }

    fn from_msg(msg: redis::Msg) -> Option<Self> {
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

    fn from_push(info: PushInfo) -> Option<Self> {
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

/// What a subscribed connection reports.
enum Event {
    Message(Message),
    Closed,
}

enum Op {
    Subscribe,
    Unsubscribe,
}

struct Request {
    op: Op,
    kind: SubscriptionKind,
    names: Vec<Vec<u8>>,
    reply: oneshot::Sender<Result<()>>,
}

/// Subscribes and unsubscribes an [`EntraPubSub`]; cheap to clone. Get one with
/// [`EntraPubSub::split`] to change subscriptions while another task reads messages.
#[derive(Clone)]
pub struct EntraPubSubSink {
    id: u64,
    requests: mpsc::Sender<Request>,
}

impl std::fmt::Debug for EntraPubSubSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraPubSubSink")
            .field("id", &self.id)
            .finish()
    }
}

/// The messages of an [`EntraPubSub`], from [`EntraPubSub::split`].
pub struct EntraPubSubStream {
    messages: mpsc::Receiver<Message>,
}

impl std::fmt::Debug for EntraPubSubStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraPubSubStream").finish_non_exhaustive()
    }
}

impl Stream for EntraPubSubStream {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.messages.poll_recv(cx)
    }
}

/// A pub/sub subscription authenticated with Entra ID that survives token expiry on RESP3 and
/// RESP2 (see [the module docs](self) for how, and what is guaranteed).
///
/// It is a [`Stream`] of [`Message`]s; the stream ends only when the `EntraPubSub` is dropped.
///
/// ```no_run
/// # async fn run(manager: redis_entra::TokenManager) -> redis_entra::Result<()> {
/// use futures::StreamExt;
/// use redis_entra::{ConnectOptions, EntraPubSub};
/// let options = ConnectOptions::new("mycache.redis.cache.windows.net", 6380);
/// let (sink, mut messages) = EntraPubSub::connect(options, manager).await?.split();
/// sink.subscribe(&["news", "sport"]).await?;
/// tokio::spawn(async move {
///     while let Some(msg) = messages.next().await {
///         println!("{:?}", msg.payload_str());
///     }
/// });
/// sink.unsubscribe("sport").await?;
/// # Ok(()) }
/// ```
pub struct EntraPubSub {
    sink: EntraPubSubSink,
    stream: EntraPubSubStream,
}

impl std::fmt::Debug for EntraPubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraPubSub")
            .field("id", &self.sink.id)
            .finish_non_exhaustive()
    }
}

impl EntraPubSub {
    /// Opens a subscribed connection (with the manager's current token) and starts the task
    /// that keeps it authenticated. Subscribe with the methods below.
    pub async fn connect(options: ConnectOptions, manager: TokenManager) -> Result<Self> {
        let id = crate::connect::next_connection_id();
        let control =
            format!("__redis-entra:handover:{:032x}", rand::random::<u128>()).into_bytes();
        let creds = manager.credentials().await?;
        let (link, _) = Link::open(&options, &creds, &control, &Subscriptions::default()).await?;
        let (requests, requests_rx) = mpsc::channel(REQUEST_BUFFER);
        let (out, messages) = mpsc::channel(MESSAGE_BUFFER);
        let worker = Worker {
            id,
            tokens: manager.watch(),
            options,
            manager,
            control,
            subs: Subscriptions::default(),
            out,
            link,
            dedup: HashMap::new(),
            behind: 0,
        };
        tokio::spawn(worker.run(requests_rx));
        tracing::debug!(
            subscription = id,
            "pub/sub connected with an Entra ID token"
        );
        Ok(Self {
            sink: EntraPubSubSink { id, requests },
            stream: EntraPubSubStream { messages },
        })
    }

    /// This subscription's id (as events name it).
    pub fn id(&self) -> u64 {
        self.sink.id
    }

    /// Subscribes to channels (one, or a list); returns once the server confirmed.
    pub async fn subscribe(&self, channels: impl ToRedisArgs) -> Result<()> {
        self.sink.subscribe(channels).await
    }

    /// Unsubscribes from channels (an empty list: from all of them).
    pub async fn unsubscribe(&self, channels: impl ToRedisArgs) -> Result<()> {
        self.sink.unsubscribe(channels).await
    }

    /// Subscribes to patterns.
    pub async fn psubscribe(&self, patterns: impl ToRedisArgs) -> Result<()> {
        self.sink.psubscribe(patterns).await
    }

    /// Unsubscribes from patterns (an empty list: from all of them).
    pub async fn punsubscribe(&self, patterns: impl ToRedisArgs) -> Result<()> {
        self.sink.punsubscribe(patterns).await
    }

    /// Subscribes to shard channels (RESP3 only).
    pub async fn ssubscribe(&self, channels: impl ToRedisArgs) -> Result<()> {
        self.sink.ssubscribe(channels).await
    }

    /// Unsubscribes from shard channels (an empty list: from all of them).
    pub async fn sunsubscribe(&self, channels: impl ToRedisArgs) -> Result<()> {
        self.sink.sunsubscribe(channels).await
    }

    /// The next message; `None` only if the subscription's task has stopped.
    pub async fn next_message(&mut self) -> Option<Message> {
        self.stream.messages.recv().await
    }

    /// Splits into a sink (to change subscriptions) and a stream (of messages).
    pub fn split(self) -> (EntraPubSubSink, EntraPubSubStream) {
        (self.sink, self.stream)
    }
}

impl Stream for EntraPubSub {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.stream.messages.poll_recv(cx)
    }
}

impl EntraPubSubSink {
    /// This subscription's id (as events name it).
    pub fn id(&self) -> u64 {
        self.id
    }

    async fn request(&self, op: Op, kind: SubscriptionKind, names: impl ToRedisArgs) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request {
                op,
                kind,
                names: names.to_redis_args(),
                reply,
            })
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Subscribes to channels; returns once the server confirmed.
    pub async fn subscribe(&self, channels: impl ToRedisArgs) -> Result<()> {
        self.request(Op::Subscribe, SubscriptionKind::Channel, channels)
            .await
    }

    /// Unsubscribes from channels (an empty list: from all of them).
    pub async fn unsubscribe(&self, channels: impl ToRedisArgs) -> Result<()> {
        self.request(Op::Unsubscribe, SubscriptionKind::Channel, channels)
            .await
    }

    /// Subscribes to patterns.
    pub async fn psubscribe(&self, patterns: impl ToRedisArgs) -> Result<()> {
        self.request(Op::Subscribe, SubscriptionKind::Pattern, patterns)
            .await
    }

    /// Unsubscribes from patterns (an empty list: from all of them).
    pub async fn punsubscribe(&self, patterns: impl ToRedisArgs) -> Result<()> {
        self.request(Op::Unsubscribe, SubscriptionKind::Pattern, patterns)
            .await
    }

    /// Subscribes to shard channels (RESP3 only).
    pub async fn ssubscribe(&self, channels: impl ToRedisArgs) -> Result<()> {
        self.request(Op::Subscribe, SubscriptionKind::Shard, channels)
            .await
    }

    /// Unsubscribes from shard channels (an empty list: from all of them).
    pub async fn sunsubscribe(&self, channels: impl ToRedisArgs) -> Result<()> {
        self.request(Op::Unsubscribe, SubscriptionKind::Shard, channels)
            .await
    }
}

/// Everything the application subscribed to.
#[derive(Debug, Clone, Default)]
struct Subscriptions {
    channels: BTreeSet<Vec<u8>>,
    patterns: BTreeSet<Vec<u8>>,
    shards: BTreeSet<Vec<u8>>,
}

impl Subscriptions {
    fn of(&mut self, kind: SubscriptionKind) -> &mut BTreeSet<Vec<u8>> {
        match kind {
            SubscriptionKind::Channel => &mut self.channels,
            SubscriptionKind::Pattern => &mut self.patterns,
            SubscriptionKind::Shard => &mut self.shards,
        }
    }
}

enum LinkConn {
    Resp2(PubSubSink),
    Resp3(MultiplexedConnection),
}

/// A subscription the server refused on a new connection.
struct Refused {
    kind: SubscriptionKind,
    name: Vec<u8>,
    error: String,
}

/// One subscribed connection.
struct Link {
    conn: LinkConn,
    events: BoxStream<'static, Event>,
    /// Set when the connection's own buffer (RESP3 pushes) filled: the application fell behind.
    overflowed: Arc<AtomicBool>,
    token_generation: u64,
    expires_on: SystemTime,
    /// Whether it is subscribed to the control channel (so a marker can be used).
    control: bool,
}

fn shard_needs_resp3() -> Error {
    Error::Config(
        "SSUBSCRIBE needs RESP3 with this client: set ConnectOptions::protocol to Protocol::Resp3"
            .into(),
    )
}

impl LinkConn {
    /// Another handle to the same connection.
    fn clone_handle(&self) -> Self {
        match self {
            Self::Resp2(sink) => Self::Resp2(sink.clone()),
            Self::Resp3(conn) => Self::Resp3(conn.clone()),
        }
    }
}

impl Link {
    /// Opens a connection authenticated with `creds`, subscribed to the control channel (if
    /// allowed) and to `subs`, less what the server refuses (returned).
    async fn open(
        options: &ConnectOptions,
        creds: &RedisCredentials,
        control: &[u8],
        subs: &Subscriptions,
    ) -> Result<(Self, Vec<Refused>)> {
        let overflowed = Arc::new(AtomicBool::new(false));
        let (conn, events) = match options.protocol {
            Protocol::Resp2 => {
                if !subs.shards.is_empty() {
                    return Err(shard_needs_resp3());
                }
                let pubsub = options.open_pubsub(creds).await?;
                let (sink, stream) = pubsub.split();
                let events = stream
                    .filter_map(|msg| async move { Message::from_msg(msg).map(Event::Message) })
                    .chain(futures::stream::once(async { Event::Closed }))
                    .boxed();
                (LinkConn::Resp2(sink), events)
            }
            Protocol::Resp3 => {
                let (tx, mut rx) = mpsc::channel(MESSAGE_BUFFER);
                let full = overflowed.clone();
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(options.connect_timeout))
                    .set_response_timeout(options.response_timeout)
                    .set_push_sender(move |info: PushInfo| {
                        let event = if info.kind == PushKind::Disconnection {
                            Some(Event::Closed)
                        } else {
                            Message::from_push(info).map(Event::Message)
                        };
                        if let Some(event) = event {
                            // Bounded: a full buffer means the application fell behind; the
                            // task drops this connection (see the module docs).
                            if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(event) {
                                full.store(true, Ordering::Release);
                            }
                        }
                        Ok::<(), redis::aio::SendError>(())
                    });
                let conn = options.open_multiplexed(creds, config).await?;
                let full = overflowed.clone();
                let events = futures::stream::poll_fn(move |cx| match rx.poll_recv(cx) {
                    // What was buffered first, then the end of this connection.
                    Poll::Pending if full.load(Ordering::Acquire) => Poll::Ready(None),
                    other => other,
                })
                .chain(futures::stream::once(async { Event::Closed }))
                .boxed();
                (LinkConn::Resp3(conn), events)
            }
        };
        let mut link = Self {
            conn,
            events,
            overflowed,
            token_generation: creds.generation(),
            expires_on: creds.expires_on(),
            control: false,
        };
        match link
            .change(
                Op::Subscribe,
                SubscriptionKind::Channel,
                vec![control.to_vec()],
            )
            .await
        {
            Ok(()) => link.control = true,
            Err(Error::Redis(e)) if is_connection_error(&e) => return Err(Error::Redis(e)),
            Err(e) => {
                tracing::debug!(error = %e, "no control channel: handovers will flag duplicates")
            }
        }
        let mut refused = Vec::new();
        for (kind, set) in [
            (SubscriptionKind::Channel, &subs.channels),
            (SubscriptionKind::Pattern, &subs.patterns),
            (SubscriptionKind::Shard, &subs.shards),
        ] {
            if set.is_empty() {
                continue;
            }
            match link
                .change(Op::Subscribe, kind, set.iter().cloned().collect())
                .await
            {
                Ok(()) => {}
                Err(Error::Redis(e)) if is_connection_error(&e) => return Err(Error::Redis(e)),
                // Redis refuses the whole command for one channel it denies: find which, and
                // keep the others.
                Err(_) => {
                    for name in set {
                        match link.change(Op::Subscribe, kind, vec![name.clone()]).await {
                            Ok(()) => {}
                            Err(Error::Redis(e)) if is_connection_error(&e) => {
                                return Err(Error::Redis(e))
                            }
                            Err(e) => refused.push(Refused {
                                kind,
                                name: name.clone(),
                                error: e.to_string(),
                            }),
                        }
                    }
                }
            }
        }
        Ok((link, refused))
    }

    /// Whether the application fell behind this connection's buffer.
    fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }

    /// Subscribes or unsubscribes, waiting for the server's confirmations.
    async fn change(&mut self, op: Op, kind: SubscriptionKind, names: Vec<Vec<u8>>) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let step = async {
            match (&mut self.conn, op, kind) {
                (LinkConn::Resp2(sink), Op::Subscribe, SubscriptionKind::Channel) => {
                    sink.subscribe(names).await?
                }
                (LinkConn::Resp2(sink), Op::Unsubscribe, SubscriptionKind::Channel) => {
                    sink.unsubscribe(names).await?
                }
                (LinkConn::Resp2(sink), Op::Subscribe, SubscriptionKind::Pattern) => {
                    sink.psubscribe(names).await?
                }
                (LinkConn::Resp2(sink), Op::Unsubscribe, SubscriptionKind::Pattern) => {
                    sink.punsubscribe(names).await?
                }
                (LinkConn::Resp2(_), _, SubscriptionKind::Shard) => return Err(shard_needs_resp3()),
                (LinkConn::Resp3(conn), Op::Subscribe, SubscriptionKind::Channel) => {
                    conn.subscribe(names).await?
                }
                (LinkConn::Resp3(conn), Op::Unsubscribe, SubscriptionKind::Channel) => {
                    conn.unsubscribe(names).await?
                }
                (LinkConn::Resp3(conn), Op::Subscribe, SubscriptionKind::Pattern) => {
                    conn.psubscribe(names).await?
                }
                (LinkConn::Resp3(conn), Op::Unsubscribe, SubscriptionKind::Pattern) => {
                    conn.punsubscribe(names).await?
                }
                (LinkConn::Resp3(conn), op, SubscriptionKind::Shard) => {
                    // One name per command: redis-rs then reads its single confirmation as the
                    // reply.
                    let name = match op {
                        Op::Subscribe => "SSUBSCRIBE",
                        Op::Unsubscribe => "SUNSUBSCRIBE",
                    };
                    for n in names {
                        redis::cmd(name)
                            .arg(n)
                            .query_async::<Value>(conn)
                            .await?
                            .extract_error()?;
                    }
                }
            }
            Ok(())
        };
        tokio::time::timeout(STEP_TIMEOUT, step)
            .await
            .map_err(|_| Error::Redis(Arc::new(timed_out("a subscription change"))))?
    }

    /// Whether the connection answers `PING`.
    async fn ping(&mut self) -> bool {
        let pong = async {
            match &mut self.conn {
                LinkConn::Resp2(sink) => sink.ping::<Value>().await.is_ok(),
                LinkConn::Resp3(conn) => {
                    redis::cmd("PING").query_async::<Value>(conn).await.is_ok()
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), pong)
            .await
            .unwrap_or(false)
    }
}

fn timed_out(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, what, "timed out".to_string()))
}

/// The subscription's task.
struct Worker {
    id: u64,
    options: ConnectOptions,
    manager: TokenManager,
    tokens: crate::CredentialsWatch,
    control: Vec<u8>,
    subs: Subscriptions,
    out: mpsc::Sender<Message>,
    link: Link,
    /// After a handover without a marker: fingerprints of what the old connection delivered
    /// during it, to flag the new connection's first messages that repeat them.
    dedup: HashMap<u64, usize>,
    /// Messages dropped because the application's buffer was full (0: not behind).
    behind: u64,
}

/// The application dropped the subscription.
struct Gone;

impl Worker {
    async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        let _ = self.serve(&mut requests).await;
        tracing::debug!(subscription = self.id, "pub/sub stopped");
    }

    async fn serve(
        &mut self,
        requests: &mut mpsc::Receiver<Request>,
    ) -> std::result::Result<(), Gone> {
        let mut requests_open = true;
        let mut retry: Option<(tokio::time::Instant, u32)> = None;
        let mut probe = self.options.health_check_interval.and_then(|every| {
            (self.options.protocol == Protocol::Resp2).then(|| {
                let mut i = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            })
        });
        loop {
            if self.behind > 0 || self.link.overflowed() {
                self.catch_up().await?;
            }
            let retry_at = retry.map(|(at, _)| at);
            tokio::select! {
                biased;
                _ = self.out.closed() => return Err(Gone),
                request = requests.recv(), if requests_open => match request {
                    Some(r) => self.handle(r).await?,
                    None => requests_open = false,
                },
                creds = self.tokens.next() => match creds {
                    Some(creds) if creds.generation() > self.link.token_generation => {
                        retry = self.renew(creds, 0).await?;
                    }
                    Some(_) => {}
                    None => return Err(Gone),
                },
                _ = sleep_until(retry_at), if retry.is_some() => {
                    let attempt = retry.map(|(_, a)| a).unwrap_or(0);
                    retry = None;
                    if let Some(creds) = self.manager.current() {
                        if creds.generation() > self.link.token_generation {
                            retry = self.renew(creds, attempt).await?;
                        }
                    }
                },
                _ = tick(&mut probe) => {
                    if !self.link.ping().await {
                        self.replace("the connection stopped answering").await?;
                    }
                },
                // Last, so that a flood of messages cannot hold back a token or a request.
                event = self.link.events.next() => match event {
                    Some(Event::Message(m)) => self.deliver_new(m)?,
                    _ if self.link.overflowed() => self.catch_up().await?,
                    _ => self.replace("the server closed the connection").await?,
                },
            }
        }
    }

    /// Hands a message from the live connection to the application.
    fn deliver_new(&mut self, m: Message) -> std::result::Result<(), Gone> {
        match screen(&mut self.dedup, &self.control, m) {
            Some(m) => self.deliver(m),
            None => Ok(()),
        }
    }

    /// Queues a message for the application; past [`MESSAGE_BUFFER`] the application has
    /// fallen behind, and the message is dropped (the serve loop reports the gap).
    fn deliver(&mut self, m: Message) -> std::result::Result<(), Gone> {
        if self.behind > 0 {
            self.behind += 1;
            return Ok(());
        }
        match self.out.try_send(m) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.behind = 1;
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Gone),
        }
    }

    /// The application fell behind: drop the connection (no more buffering), wait until it has
    /// read half of what is buffered, then resubscribe and report the gap.
    async fn catch_up(&mut self) -> std::result::Result<(), Gone> {
        let dropped = self.behind;
        tracing::warn!(
            subscription = self.id,
            dropped,
            "the application fell behind its pub/sub buffer; dropping the connection"
        );
        // No more reading from the old connection: its messages are the gap, reported now.
        self.link.events = futures::stream::pending().boxed();
        self.manager.emit(TokenEvent::Reconnected {
            connection_id: self.id,
            reason: format!(
                "the application fell behind by more than {MESSAGE_BUFFER} messages: the connection was dropped, and messages published until it is replaced are lost"
            ),
        });
        tokio::select! {
            permits = self.out.reserve_many(MESSAGE_BUFFER / 2) => {
                permits.map_err(|_| Gone)?;
            }
            _ = self.out.closed() => return Err(Gone),
        }
        self.behind = 0;
        self.replace("resubscribing once the application caught up")
            .await
    }

    /// Drops `names` the server refused on a new connection from the subscription, and says so.
    fn drop_refused(&mut self, refused: Vec<Refused>) {
        for r in refused {
            let name = String::from_utf8_lossy(&r.name).into_owned();
            tracing::warn!(subscription = self.id, %name, error = %r.error, "the server refused a subscription; it is dropped");
            self.subs.of(r.kind).remove(&r.name);
            self.manager.emit(TokenEvent::SubscriptionDropped {
                connection_id: self.id,
                name,
                error: r.error,
            });
        }
    }

    async fn handle(&mut self, r: Request) -> std::result::Result<(), Gone> {
        let Request {
            op,
            kind,
            mut names,
            reply,
        } = r;
        if kind == SubscriptionKind::Shard && self.options.protocol == Protocol::Resp2 {
            let _ = reply.send(Err(shard_needs_resp3()));
            return Ok(());
        }
        names.retain(|n| *n != self.control);
        if matches!(op, Op::Unsubscribe) && names.is_empty() {
            names = self.subs.of(kind).iter().cloned().collect();
        }
        let result = self.change_live(op_copy(&op), kind, names.clone()).await;
        let result = match result {
            Err(Error::Redis(e)) if is_connection_error(&e) => {
                // The replacement connection subscribes to it; the caller hears once the server
                // confirmed (or refused) it there.
                self.record(&op, kind, names.clone());
                self.replace("the connection was lost").await?;
                let set = self.subs.of(kind);
                let result = match op {
                    Op::Subscribe if !names.iter().all(|n| set.contains(n)) => Err(Error::Config(
                        "the server refused the subscription on the new connection (see the SubscriptionDropped event)".into(),
                    )),
                    _ => Ok(()),
                };
                let _ = reply.send(result);
                return Ok(());
            }
            other => other,
        };
        if result.is_ok() {
            self.record(&op, kind, names);
        }
        let _ = reply.send(result);
        Ok(())
    }

    fn record(&mut self, op: &Op, kind: SubscriptionKind, names: Vec<Vec<u8>>) {
        let set = self.subs.of(kind);
        for n in names {
            match op {
                Op::Subscribe => {
                    set.insert(n);
                }
                Op::Unsubscribe => {
                    set.remove(&n);
                }
            }
        }
    }

    /// Changes a subscription on the live connection while still delivering its messages.
    async fn change_live(
        &mut self,
        op: Op,
        kind: SubscriptionKind,
        names: Vec<Vec<u8>>,
    ) -> Result<()> {
        // The confirmation arrives after every message published before it, all of which are
        // buffered in `events`; nothing needs pumping.
        self.link.change(op, kind, names).await
    }

    /// A new token: re-authenticate (RESP3) or hand over (RESP2). Returns when to try again
    /// if it failed.
    async fn renew(
        &mut self,
        creds: Arc<RedisCredentials>,
        attempt: u32,
    ) -> std::result::Result<Option<(tokio::time::Instant, u32)>, Gone> {
        let started = Instant::now();
        let mut failure = None;
        if let LinkConn::Resp3(conn) = &mut self.link.conn {
            let auth = redis::cmd("AUTH")
                .arg(creds.username())
                .arg(creds.token())
                .to_owned();
            let mut conn = conn.clone();
            match tokio::time::timeout(STEP_TIMEOUT, auth.query_async::<()>(&mut conn)).await {
                Ok(Ok(())) => {
                    self.link.token_generation = creds.generation();
                    self.link.expires_on = creds.expires_on();
                    self.reauthenticated(&creds, started);
                    return Ok(None);
                }
                Ok(Err(e)) if is_connection_error(&e) => {
                    self.replace("the connection was lost during re-authentication")
                        .await?;
                    return Ok(None);
                }
                Ok(Err(e)) => failure = Some(e.to_string()),
                Err(_) => failure = Some("AUTH timed out".to_string()),
            }
        }
        if let Some(error) = failure {
            tracing::warn!(subscription = self.id, %error, "re-authentication failed; handing over to a new connection");
        }
        match self.handover(&creds).await? {
            Ok(Switch::Seamless) => {
                self.reauthenticated(&creds, started);
                Ok(None)
            }
            Ok(Switch::Gap) => {
                // The old connection died before the switch point: say there may be a gap.
                self.manager.emit(TokenEvent::Reconnected {
                    connection_id: self.id,
                    reason:
                        "the old connection closed during a handover; messages may have been lost"
                            .into(),
                });
                Ok(None)
            }
            Err(e) => {
                let attempt = attempt + 1;
                tracing::warn!(subscription = self.id, attempt, error = %e, "handover failed; the old connection stays");
                self.manager.emit(TokenEvent::ReauthenticationFailed {
                    connection_id: self.id,
                    error: e.to_string(),
                });
                let left = self
                    .link
                    .expires_on
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
                let delay = Duration::from_millis(100u64 << attempt.min(5))
                    .min(left / 4)
                    .max(Duration::from_millis(50));
                Ok(Some((tokio::time::Instant::now() + delay, attempt)))
            }
        }
    }

    fn reauthenticated(&self, creds: &RedisCredentials, started: Instant) {
        let took = started.elapsed();
        tracing::debug!(subscription = self.id, ?took, "pub/sub re-authenticated");
        self.manager.emit(TokenEvent::ConnectionReauthenticated {
            connection_id: self.id,
            expires_on: creds.expires_on(),
            took,
        });
    }

    /// Runs `step` while delivering the live connection's messages. Sets `alive` to false if
    /// the live connection closes meanwhile. With a `marker`, stops reading the live connection
    /// at that marker (leaving what follows it queued) and sets `reached`.
    async fn pumping<F: std::future::Future>(
        &mut self,
        step: F,
        tail: &mut Vec<u64>,
        alive: &mut bool,
        marker: Option<(&[u8], &mut bool)>,
    ) -> std::result::Result<F::Output, Gone> {
        tokio::pin!(step);
        let (marker, mut reached) = match marker {
            Some((m, r)) => (Some(m), Some(r)),
            None => (None, None),
        };
        loop {
            let reading = *alive && !reached.as_deref().copied().unwrap_or(false);
            tokio::select! {
                biased;
                out = &mut step => return Ok(out),
                event = self.link.events.next(), if reading => match event {
                    Some(Event::Message(m)) => {
                        if marker.is_some_and(|mk| self.is_marker(&m, mk)) {
                            if let Some(r) = reached.as_deref_mut() {
                                *r = true;
                            }
                            continue;
                        }
                        tail.push(m.fingerprint());
                        self.deliver_new(m)?;
                    }
                    _ => *alive = false,
                },
            }
        }
    }

    /// Replaces the live connection with one subscribed with `creds`, losing and repeating
    /// nothing (see the module docs). On failure the live connection stays.
    async fn handover(
        &mut self,
        creds: &Arc<RedisCredentials>,
    ) -> std::result::Result<Result<Switch>, Gone> {
        let mut tail = Vec::new();
        let mut alive = true;
        let options = self.options.clone();
        let control = self.control.clone();
        let subs = self.subs.clone();
        // 1. The new connection, subscribed to everything and to the control channel.
        let opened = self
            .pumping(
                Link::open(&options, creds, &control, &subs),
                &mut tail,
                &mut alive,
                None,
            )
            .await?;
        let mut new = match opened {
            Ok((link, refused)) => {
                self.drop_refused(refused);
                link
            }
            Err(e) => {
                return Ok(Err(e));
            }
        };
        // 2. The marker, published after the new connection's subscriptions are confirmed.
        let marker = format!("{:032x}", rand::random::<u128>()).into_bytes();
        // The old connection's copy of the marker can arrive before the publisher's reply.
        let mut reached = false;
        let marked = if alive && new.control && self.link.control {
            let publish = publish_marker(&options, creds, &mut new.conn, &control, &marker);
            let pumped = self
                .pumping(
                    publish,
                    &mut tail,
                    &mut alive,
                    Some((&marker, &mut reached)),
                )
                .await?;
            match pumped {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(error = %e, "could not publish a handover marker; falling back");
                    false
                }
            }
        } else {
            false
        };
        if marked && alive {
            // 3. The old connection's messages up to its copy of the marker...
            let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
            while !reached {
                match tokio::time::timeout_at(deadline, self.link.events.next()).await {
                    Ok(Some(Event::Message(m))) => {
                        if self.is_marker(&m, &marker) {
                            reached = true;
                        } else {
                            tail.push(m.fingerprint());
                            self.deliver_new(m)?;
                        }
                    }
                    Ok(_) => {
                        tracing::debug!(
                            subscription = self.id,
                            "the old connection closed before the handover marker; falling back"
                        );
                        break;
                    }
                    Err(_) => {
                        tracing::debug!(
                            subscription = self.id,
                            "the handover marker did not reach the old connection; falling back"
                        );
                        break;
                    }
                }
            }
            if reached {
                // ...then the new connection's messages after its copy.
                let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
                loop {
                    match tokio::time::timeout_at(deadline, new.events.next()).await {
                        Ok(Some(Event::Message(m))) => {
                            if self.is_marker(&m, &marker) {
                                self.dedup.clear();
                                self.link = new;
                                return Ok(Ok(Switch::Seamless));
                            }
                            // Published before the marker: the old connection delivered it.
                        }
                        // The new connection failed; the old one's messages after the marker
                        // are still queued, so nothing is lost by keeping it.
                        _ => {
                            return Ok(Err(Error::Redis(Arc::new(timed_out(
                                "the handover marker on the new connection",
                            )))))
                        }
                    }
                }
            }
            alive = false;
        }
        if !marked {
            tracing::debug!(
                subscription = self.id,
                alive,
                new_control = new.control,
                old_control = self.link.control,
                "handover without a marker"
            );
        }
        // Fallback: no marker. Stop the old connection's subscriptions, deliver all it got, then
        // switch, flagging the new connection's first messages that repeat the old one's.
        if alive {
            let mut old = self.link.conn.clone_handle();
            let unsubscribe = async {
                for (kind, set) in [
                    (SubscriptionKind::Channel, &subs.channels),
                    (SubscriptionKind::Pattern, &subs.patterns),
                    (SubscriptionKind::Shard, &subs.shards),
                ] {
                    unsubscribe_all(&mut old, kind, set.iter().cloned().collect()).await?;
                }
                Ok::<(), Error>(())
            };
            let done = self
                .pumping(unsubscribe, &mut tail, &mut alive, None)
                .await?;
            if let Err(e) = done {
                tracing::debug!(error = %e, "could not unsubscribe the old connection");
            }
            // Everything the old connection received before its unsubscribe confirmations is
            // queued by now.
            while let Some(Some(Event::Message(m))) = self.link.events.next().now_or_never() {
                tail.push(m.fingerprint());
                self.deliver_new(m)?;
            }
        }
        self.dedup.clear();
        for f in tail {
            *self.dedup.entry(f).or_insert(0) += 1;
        }
        self.link = new;
        // Alive: the old connection was unsubscribed and drained, so nothing fell between the
        // two; dead: what it would have received before the switch is unaccounted for.
        Ok(Ok(if alive { Switch::Seamless } else { Switch::Gap }))
    }

    fn is_marker(&self, m: &Message, marker: &[u8]) -> bool {
        m.kind == SubscriptionKind::Channel && m.channel == self.control && m.payload == marker
    }

    /// Replaces a lost connection with a fresh token and resubscribes, retrying until it works
    /// (or the application drops the subscription).
    async fn replace(&mut self, reason: &str) -> std::result::Result<(), Gone> {
        let mut attempt = 0u32;
        // Failures to connect with a token in hand; they alone grow the backoff.
        let mut connect_failures = 0u32;
        loop {
            attempt += 1;
            let creds = tokio::select! {
                c = self.manager.credentials() => c,
                _ = self.out.closed() => return Err(Gone),
            };
            let creds = match creds {
                Ok(creds) => creds,
                // No token: `credentials` waited for the manager's next attempt (paced by its
                // retry policy), so ask again at once: the first token after an identity outage
                // is used as soon as it arrives.
                Err(e) if !matches!(e, Error::Stopped) => {
                    tracing::warn!(subscription = self.id, attempt, error = %e, "no token to resubscribe with");
                    continue;
                }
                Err(_) => return Err(Gone),
            };
            let opened = Link::open(&self.options, &creds, &self.control, &self.subs);
            let opened = tokio::select! {
                o = opened => o,
                _ = self.out.closed() => return Err(Gone),
            };
            match opened {
                Ok((link, refused)) => {
                    self.link = link;
                    self.dedup.clear();
                    self.drop_refused(refused);
                    tracing::info!(
                        subscription = self.id,
                        reason,
                        "pub/sub reconnected with a fresh token"
                    );
                    self.manager.emit(TokenEvent::Reconnected {
                        connection_id: self.id,
                        reason: reason.to_string(),
                    });
                    return Ok(());
                }
                Err(e) => {
                    if let Error::Redis(re) = &e {
                        if super::multiplexed::is_auth_error(re) {
                            self.manager.refresh_now();
                        }
                    }
                    tracing::warn!(subscription = self.id, attempt, error = %e, "pub/sub reconnect failed");
                    connect_failures += 1;
                    let delay = Duration::from_millis(100u64 << connect_failures.min(5))
                        .min(Duration::from_secs(2));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.out.closed() => return Err(Gone),
                    }
                }
            }
        }
    }
}

/// How a handover ended.
enum Switch {
    /// Every message was delivered once (duplicates flagged).
    Seamless,
    /// The old connection died before the switch point: messages may be missing.
    Gap,
}

/// What the application gets of a message from the live connection: nothing for the control
/// channel; otherwise the message, flagged if it repeats one the old connection delivered
/// during a handover without a marker (`dedup`, cleared once the overlap is over).
fn screen(dedup: &mut HashMap<u64, usize>, control: &[u8], mut m: Message) -> Option<Message> {
    // Before the duplicate check: a control message is no evidence that the overlap is over.
    if m.kind == SubscriptionKind::Channel && m.channel == control {
        return None;
    }
    if !dedup.is_empty() {
        let f = m.fingerprint();
        match dedup.get_mut(&f) {
            Some(n) => {
                m.possible_duplicate = true;
                *n -= 1;
                if *n == 0 {
                    dedup.remove(&f);
                }
            }
            // The overlap is a prefix of the new connection's messages: it is over.
            None => dedup.clear(),
        }
    }
    Some(m)
}

fn op_copy(op: &Op) -> Op {
    match op {
        Op::Subscribe => Op::Subscribe,
        Op::Unsubscribe => Op::Unsubscribe,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn tick(probe: &mut Option<tokio::time::Interval>) {
    match probe {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Publishes the handover marker: from the new connection on RESP3, from a short-lived plain
/// connection on RESP2 (a RESP2 connection in subscribed mode may not publish).
async fn publish_marker(
    options: &ConnectOptions,
    creds: &RedisCredentials,
    new: &mut LinkConn,
    control: &[u8],
    marker: &[u8],
) -> Result<()> {
    let publish = redis::cmd("PUBLISH").arg(control).arg(marker).to_owned();
    let step = async {
        let receivers: i64 = match new {
            LinkConn::Resp3(conn) => publish.query_async(conn).await?,
            LinkConn::Resp2(_) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(options.connect_timeout))
                    .set_response_timeout(Some(STEP_TIMEOUT));
                let mut conn = options.open_multiplexed(creds, config).await?;
                publish.query_async(&mut conn).await?
            }
        };
        if receivers < 2 {
            return Err(Error::Config(format!(
                "the handover marker reached {receivers} connection(s), not 2"
            )));
        }
        Ok(())
    };
    tokio::time::timeout(STEP_TIMEOUT, step)
        .await
        .map_err(|_| Error::Redis(Arc::new(timed_out("publishing the handover marker"))))?
}

async fn unsubscribe_all(
    conn: &mut LinkConn,
    kind: SubscriptionKind,
    names: Vec<Vec<u8>>,
) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let step = async {
        match (conn, kind) {
            (LinkConn::Resp2(sink), SubscriptionKind::Channel) => sink.unsubscribe(names).await?,
            (LinkConn::Resp2(sink), SubscriptionKind::Pattern) => sink.punsubscribe(names).await?,
            (LinkConn::Resp3(conn), SubscriptionKind::Channel) => conn.unsubscribe(names).await?,
            (LinkConn::Resp3(conn), SubscriptionKind::Pattern) => conn.punsubscribe(names).await?,
            (LinkConn::Resp3(conn), SubscriptionKind::Shard) => {
                for n in names {
                    redis::cmd("SUNSUBSCRIBE")
                        .arg(n)
                        .query_async::<Value>(conn)
                        .await?
                        .extract_error()?;
                }
            }
            (LinkConn::Resp2(_), SubscriptionKind::Shard) => {}
        }
        Ok::<(), Error>(())
    };
    tokio::time::timeout(STEP_TIMEOUT, step)
        .await
        .map_err(|_| Error::Redis(Arc::new(timed_out("unsubscribing the old connection"))))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(channel: &str, payload: &str) -> Message {
        Message {
            kind: SubscriptionKind::Channel,
            channel: channel.as_bytes().to_vec(),
            pattern: None,
            payload: payload.as_bytes().to_vec(),
            possible_duplicate: false,
        }
    }

    /// RESP2 handover fallback: a control-channel message arriving among the new connection's
    /// first messages must not end the duplicate check (it used to clear it, so the duplicates
    /// after it went unflagged).
    #[test]
    fn a_control_message_does_not_end_the_duplicate_check() {
        let control = b"__redis-entra:handover:x".to_vec();
        let mut dedup = HashMap::new();
        for m in [msg("c", "1"), msg("c", "2")] {
            *dedup.entry(m.fingerprint()).or_insert(0) += 1;
        }
        let first = screen(&mut dedup, &control, msg("c", "1")).unwrap();
        assert!(first.possible_duplicate());
        assert!(screen(&mut dedup, &control, msg("__redis-entra:handover:x", "m")).is_none());
        let second = screen(&mut dedup, &control, msg("c", "2")).unwrap();
        assert!(
            second.possible_duplicate(),
            "a duplicate after a control message went unflagged"
        );
        let fresh = screen(&mut dedup, &control, msg("c", "3")).unwrap();
        assert!(!fresh.possible_duplicate());
    }
}
