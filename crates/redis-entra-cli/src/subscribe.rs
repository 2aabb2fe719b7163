//! `SUBSCRIBE`, `PSUBSCRIBE` and `SSUBSCRIBE`: stream messages until interrupted, printed as
//! redis-cli prints them (`1) "message" 2) "chan" 3) "payload"`).
//!
//! The subscription is the library's [`EntraPubSub`], on the protocol asked for (`-2`, `-3`,
//! or the cache's default). It keeps streaming across token expiry with nothing lost: on RESP3
//! it re-authenticates the subscribed connection in place; on RESP2, where Redis refuses `AUTH`
//! in subscribed mode, it hands over to a new connection before the token expires, delivering
//! every message once. Only a connection lost outright (network, server restart) can miss the
//! messages published while no connection was subscribed; that is reported on stderr.
//! `SSUBSCRIBE` always uses RESP3 (the library's RESP2 pub/sub does not parse sharded
//! messages).

use std::collections::BTreeSet;
use std::future::Future;

use anyhow::Context;
use redis::Value;
use redis_entra::{
    ConnectOptions, EntraPubSub, Message, Protocol, SubscriptionKind, TokenEvent, TokenManager,
};
use tokio::sync::broadcast;

use crate::exit;
use crate::format;
use crate::session::print_stdout;
use crate::settings::Output;

/// The command that subscribes to `kind`, and the names of its confirmation and its messages.
fn names(kind: SubscriptionKind) -> (&'static str, &'static str, &'static str) {
    match kind {
        SubscriptionKind::Channel => ("SUBSCRIBE", "subscribe", "message"),
        SubscriptionKind::Pattern => ("PSUBSCRIBE", "psubscribe", "pmessage"),
        SubscriptionKind::Shard => ("SSUBSCRIBE", "ssubscribe", "smessage"),
    }
}

/// Resolves at the first Ctrl-C (never, if the signal cannot be watched).
pub async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn bulk(bytes: &[u8]) -> Value {
    Value::BulkString(bytes.to_vec())
}

/// A subscription's confirmation as redis-cli prints it: `subscribe`, the name, the count.
fn format_confirmation(
    kind: SubscriptionKind,
    name: &[u8],
    count: usize,
    output: Output,
) -> String {
    let (_, confirmation, _) = names(kind);
    let count = i64::try_from(count).unwrap_or(i64::MAX);
    format::reply(
        &Value::Array(vec![
            bulk(confirmation.as_bytes()),
            bulk(name),
            Value::Int(count),
        ]),
        output,
    )
}

/// A message as redis-cli prints it: its kind, the pattern (for `pmessage`), the channel and
/// the payload.
pub fn format_message(message: &Message, output: Output) -> String {
    let (_, _, kind) = names(message.kind());
    let mut items = vec![bulk(kind.as_bytes())];
    if let Some(pattern) = message.pattern() {
        items.push(bulk(pattern));
    }
    items.push(bulk(message.channel()));
    items.push(bulk(message.payload()));
    format::reply(&Value::Array(items), output)
}

/// Connects and subscribes to every name, one at a time, printing each confirmation.
async fn open(
    options: &ConnectOptions,
    manager: &TokenManager,
    kind: SubscriptionKind,
    channels: &[Vec<u8>],
    output: Output,
) -> anyhow::Result<EntraPubSub> {
    let pubsub = EntraPubSub::connect(options.clone(), manager.clone())
        .await
        .with_context(|| format!("connecting to {}:{}", options.host, options.port))?;
    if output != Output::Raw {
        print_stdout("Reading messages... (press Ctrl-C to quit)\n");
    }
    let mut subscribed = BTreeSet::new();
    for name in channels {
        match kind {
            SubscriptionKind::Channel => pubsub.subscribe(name.as_slice()).await,
            SubscriptionKind::Pattern => pubsub.psubscribe(name.as_slice()).await,
            SubscriptionKind::Shard => pubsub.ssubscribe(name.as_slice()).await,
        }
        .with_context(|| format!("{} {}", names(kind).0, String::from_utf8_lossy(name)))?;
        subscribed.insert(name.as_slice());
        print_stdout(&format_confirmation(kind, name, subscribed.len(), output));
    }
    Ok(pubsub)
}

/// The next event, or never once the manager has stopped sending them.
async fn next_event(events: &mut Option<broadcast::Receiver<TokenEvent>>) -> TokenEvent {
    loop {
        let Some(rx) = events.as_mut() else {
            return std::future::pending().await;
        };
        match rx.recv().await {
            Ok(event) => return event,
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => *events = None,
        }
    }
}

/// Subscribes and prints messages until `interrupt` resolves; returns the exit code (0).
/// Fails if the first connection or a subscription cannot be made.
pub async fn run(
    options: &ConnectOptions,
    manager: &TokenManager,
    kind: SubscriptionKind,
    channels: &[Vec<u8>],
    output: Output,
    interrupt: impl Future<Output = ()>,
) -> anyhow::Result<u8> {
    let mut options = options.clone();
    if kind == SubscriptionKind::Shard && options.protocol != Protocol::Resp3 {
        options.protocol = Protocol::Resp3;
    }
    tokio::pin!(interrupt);
    let mut events = Some(manager.events());
    let mut pubsub = tokio::select! {
        p = open(&options, manager, kind, channels, output) => p?,
        _ = &mut interrupt => return Ok(exit::SUCCESS),
    };
    loop {
        tokio::select! {
            _ = &mut interrupt => return Ok(exit::SUCCESS),
            message = pubsub.next_message() => match message {
                Some(message) => {
                    print_stdout(&format_message(&message, output));
                    if message.possible_duplicate() {
                        eprintln!("(the message above may repeat one printed before a reconnection)");
                    }
                }
                None => anyhow::bail!("the subscription stopped"),
            },
            event = next_event(&mut events) => {
                if let TokenEvent::Reconnected { connection_id, reason } = event {
                    if connection_id == pubsub.id() {
                        eprintln!("(connection lost: {reason}; reconnected with a fresh token and subscribed again; messages published meanwhile were missed)");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_confirmations_like_redis_cli() {
        assert_eq!(
            format_confirmation(SubscriptionKind::Channel, b"news", 1, Output::Raw),
            "subscribe\nnews\n1\n"
        );
        assert_eq!(
            format_confirmation(SubscriptionKind::Pattern, b"n*", 2, Output::Typed),
            "1) \"psubscribe\"\n2) \"n*\"\n3) (integer) 2\n"
        );
    }
}
