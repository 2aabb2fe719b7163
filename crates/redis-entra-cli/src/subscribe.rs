//! `SUBSCRIBE`, `PSUBSCRIBE` and `SSUBSCRIBE`: stream messages until interrupted, printed as
//! redis-cli prints them (`1) "message" 2) "chan" 3) "payload"`).
//!
//! The subscription runs on a RESP3 connection (`HELLO 3 AUTH <oid> <token>`), where messages
//! arrive as pushes and Redis accepts `AUTH` even in subscribed mode, so each new token is sent
//! on the live connection before the old one expires. If the connection is lost anyway, a new
//! one is opened with a fresh token and every channel subscribed again (best effort: messages
//! published while disconnected are not received; the reconnection is reported on stderr).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use redis_entra::{ConnectOptions, Protocol, RedisCredentials, TokenManager};
use tokio::sync::mpsc;

use crate::exit;
use crate::format;
use crate::session::print_stdout;
use crate::settings::Output;

/// Which kind of subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `SUBSCRIBE channel…`
    Channel,
    /// `PSUBSCRIBE pattern…`
    Pattern,
    /// `SSUBSCRIBE shard-channel…`
    Shard,
}

impl Kind {
    fn command(self) -> &'static str {
        match self {
            Self::Channel => "SUBSCRIBE",
            Self::Pattern => "PSUBSCRIBE",
            Self::Shard => "SSUBSCRIBE",
        }
    }
}

/// Resolves at the first Ctrl-C (never, if the signal cannot be watched).
pub async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// One subscribed connection and the pushes it delivers.
struct Subscriber {
    conn: MultiplexedConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
    /// The token generation it authenticated with last.
    generation: u64,
}

impl Subscriber {
    /// Connects with the manager's token and subscribes to every channel (one command per
    /// channel, so that each has exactly one confirmation).
    async fn open(
        options: &ConnectOptions,
        manager: &TokenManager,
        kind: Kind,
        channels: &[Vec<u8>],
    ) -> anyhow::Result<Self> {
        let creds = manager.credentials().await?;
        let client = options.client(&creds)?;
        let (tx, pushes) = mpsc::unbounded_channel();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_push_sender(tx);
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .with_context(|| format!("connecting to {}:{}", options.host, options.port))?;
        for channel in channels {
            redis::cmd(kind.command())
                .arg(channel.as_slice())
                .exec_async(&mut conn)
                .await?;
        }
        Ok(Self {
            conn,
            pushes,
            generation: creds.generation(),
        })
    }

    /// Sends `AUTH <oid> <token>` on the subscribed connection (RESP3 allows it).
    async fn reauthenticate(&mut self, creds: &Arc<RedisCredentials>) -> anyhow::Result<()> {
        let auth = redis::cmd("AUTH")
            .arg(creds.username())
            .arg(creds.token())
            .to_owned();
        tokio::time::timeout(Duration::from_secs(10), auth.exec_async(&mut self.conn))
            .await
            .map_err(|_| anyhow::anyhow!("AUTH timed out after 10 s"))??;
        self.generation = creds.generation();
        Ok(())
    }
}

fn kind_name(kind: &PushKind) -> String {
    match kind {
        PushKind::Message => "message".into(),
        PushKind::PMessage => "pmessage".into(),
        PushKind::SMessage => "smessage".into(),
        PushKind::Subscribe => "subscribe".into(),
        PushKind::PSubscribe => "psubscribe".into(),
        PushKind::SSubscribe => "ssubscribe".into(),
        PushKind::Unsubscribe => "unsubscribe".into(),
        PushKind::PUnsubscribe => "punsubscribe".into(),
        PushKind::SUnsubscribe => "sunsubscribe".into(),
        PushKind::Invalidate => "invalidate".into(),
        PushKind::Other(name) => name.clone(),
        other => format!("{other:?}").to_ascii_lowercase(),
    }
}

fn is_confirmation(kind: &PushKind) -> bool {
    matches!(
        kind,
        PushKind::Subscribe | PushKind::PSubscribe | PushKind::SSubscribe
    )
}

/// Formats a push as redis-cli prints a message: its kind first, then its data.
pub fn format_push(push: &PushInfo, output: Output) -> String {
    let mut items = vec![Value::BulkString(kind_name(&push.kind).into_bytes())];
    items.extend(push.data.iter().cloned());
    format::reply(&Value::Array(items), output)
}

/// Subscribes and prints messages until `interrupt` resolves; returns the exit code (0).
/// Fails only if the first connection cannot be made.
pub async fn run(
    options: &ConnectOptions,
    manager: &TokenManager,
    kind: Kind,
    channels: &[Vec<u8>],
    output: Output,
    interrupt: impl Future<Output = ()>,
) -> anyhow::Result<u8> {
    let mut options = options.clone();
    options.protocol = Protocol::Resp3;
    tokio::pin!(interrupt);
    let mut sub = tokio::select! {
        s = Subscriber::open(&options, manager, kind, channels) => s?,
        _ = &mut interrupt => return Ok(exit::SUCCESS),
    };
    if output != Output::Raw {
        print_stdout("Reading messages... (press Ctrl-C to quit)\n");
    }
    let mut tokens = manager.watch();
    // Confirmations of a re-subscription are not printed again.
    let mut skip = 0usize;
    loop {
        let lost = tokio::select! {
            _ = &mut interrupt => return Ok(exit::SUCCESS),
            push = sub.pushes.recv() => match push {
                Some(push) if push.kind == PushKind::Disconnection => true,
                Some(push) => {
                    if skip > 0 && is_confirmation(&push.kind) {
                        skip -= 1;
                    } else {
                        print_stdout(&format_push(&push, output));
                    }
                    false
                }
                None => true,
            },
            creds = tokens.next() => match creds {
                Some(creds) if creds.generation() > sub.generation => {
                    match sub.reauthenticate(&creds).await {
                        Ok(()) => {
                            tracing::debug!(generation = creds.generation(), "subscription re-authenticated");
                            false
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "re-authenticating the subscription failed; it will reconnect if the server closes it");
                            e.downcast_ref::<redis::RedisError>()
                                .is_some_and(|r| r.is_io_error() || r.is_connection_dropped())
                        }
                    }
                }
                Some(_) => false,
                None => return Err(anyhow::anyhow!("the token manager stopped")),
            },
        };
        if !lost {
            continue;
        }
        eprintln!("(connection lost: reconnecting with a fresh token)");
        let mut attempt = 0u32;
        sub = loop {
            attempt += 1;
            let opened = tokio::select! {
                _ = &mut interrupt => return Ok(exit::SUCCESS),
                s = Subscriber::open(&options, manager, kind, channels) => s,
            };
            match opened {
                Ok(s) => break s,
                Err(e) => {
                    let delay = Duration::from_millis(200u64 << attempt.min(5));
                    eprintln!(
                        "(reconnecting failed: {e:#}; trying again in {:.1}s)",
                        delay.as_secs_f64()
                    );
                    tokio::select! {
                        _ = &mut interrupt => return Ok(exit::SUCCESS),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        };
        skip = channels.len();
        eprintln!(
            "(reconnected: subscribed again to {} channel(s); messages published meanwhile were missed)",
            channels.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_messages_like_redis_cli() {
        let push = PushInfo {
            kind: PushKind::Message,
            data: vec![
                Value::BulkString(b"chan".to_vec()),
                Value::BulkString(b"payload".to_vec()),
            ],
        };
        assert_eq!(
            format_push(&push, Output::Typed),
            "1) \"message\"\n2) \"chan\"\n3) \"payload\"\n"
        );
        assert_eq!(format_push(&push, Output::Raw), "message\nchan\npayload\n");
        assert_eq!(
            format_push(&push, Output::Json),
            "[\"message\",\"chan\",\"payload\"]\n"
        );
    }
}
