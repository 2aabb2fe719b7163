//! The application's side: [`EntraPubSub`], and its halves [`EntraPubSubSink`] (subscription
//! changes) and [`EntraPubSubStream`] (messages).

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::Stream;
use redis::ToRedisArgs;
use tokio::sync::{mpsc, oneshot};

use super::link::Link;
use super::message::Message;
use super::subscriptions::{Op, Request, SubscriptionKind, Subscriptions};
use super::worker::Worker;
use super::{MESSAGE_BUFFER, REQUEST_BUFFER};
use crate::connect::options::ConnectOptions;
use crate::error::{Error, Result};
use crate::token::manager::TokenManager;

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
/// RESP2 (see [the module docs](super) for how, and what is guaranteed).
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
