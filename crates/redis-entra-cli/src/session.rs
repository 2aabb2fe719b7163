//! What one-shot commands and the prompt share: signing in, the commands that are refused or
//! handled here rather than sent, running a command and printing its reply.

use std::io::Write as _;

use anyhow::Context;
use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use redis_entra::config::{Auth, RedisConfig};
use redis_entra::{
    ConnectOptions, EntraClusterConnection, EntraConnection, SubscriptionKind, TokenManager,
    TokenManagerOptions,
};

use crate::exit::{self, UsageError};
use crate::format;
use crate::settings::{ConnectionArgs, Output};
use crate::{identity, token_cache};

/// A token manager over the Entra credential the configuration describes.
///
/// An access key goes through the same machinery: a credential that hands out the key, and the
/// fixed username `default` (`AUTH default <key>`).
///
/// Entra tokens are kept between runs in the [token cache](crate::token_cache) unless
/// `--no-token-cache` or `REDIS_ENTRA_NO_TOKEN_CACHE` says otherwise.
pub fn manager(args: &ConnectionArgs, config: &RedisConfig) -> anyhow::Result<TokenManager> {
    let choice = args.choice();
    if let (Auth::AccessKey { .. }, None) = (&config.auth, choice.kind) {
        return Ok(config.token_manager()?);
    }
    let identity = identity::resolve(&choice, config)?;
    let options = TokenManagerOptions::default();
    let credential = token_cache::wrap(
        identity,
        args.no_token_cache || token_cache::disabled_by_env(),
        &options.refresh,
    );
    Ok(TokenManager::new(credential, options))
}

/// A connection to one node, or (`-c`) to a cluster, following its redirections.
#[derive(Clone)]
pub enum Connection {
    /// One node: redirections are printed as replies, as redis-cli does without `-c`.
    Single(EntraConnection),
    /// A cluster: `-MOVED` and `-ASK` are followed, every node is signed in.
    Cluster(EntraClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// Connects to `options` with the manager's token (to the cluster `options` is a node of, when
/// `cluster`), naming the target in the error.
pub async fn connect(
    options: &ConnectOptions,
    manager: &TokenManager,
    cluster: bool,
) -> anyhow::Result<Connection> {
    let target = || format!("connecting to {}:{}", options.host, options.port);
    if cluster {
        match EntraClusterConnection::connect(options.clone(), manager.clone()).await {
            Ok(conn) => return Ok(Connection::Cluster(conn)),
            // As redis-cli: -c against a cache without clustering talks to that one node.
            Err(redis_entra::Error::Redis(e))
                if e.to_string().contains("cluster support disabled") =>
            {
                tracing::debug!("-c: the server is not a cluster, using a single connection");
            }
            Err(e) => return Err(e).with_context(|| format!("{} (cluster mode, -c)", target())),
        }
    }
    {
        EntraConnection::connect(options.clone(), manager.clone())
            .await
            .map(Connection::Single)
            .with_context(target)
    }
}

/// What to do with a command before sending it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Send it and print the reply.
    Send,
    /// Refuse it with this message.
    Refuse(String),
    /// Stream a subscription.
    Subscribe(SubscriptionKind, Vec<Vec<u8>>),
    /// `SELECT n`: reconnect to database `n` (so that reconnections keep it).
    Select(i64),
}

fn upper(word: &[u8]) -> String {
    String::from_utf8_lossy(word).to_ascii_uppercase()
}

/// Decides what to do with `words` (a command and its arguments).
pub fn route(words: &[Vec<u8>]) -> Route {
    let Some(first) = words.first() else {
        return Route::Send;
    };
    let args = words[1..].to_vec();
    match upper(first).as_str() {
        "AUTH" => Route::Refuse(
            "AUTH is not needed: redis-entra signs in with an Entra ID token from the configured credential (username: the token's oid) and re-authenticates before the token expires. To use another identity, change the AZURE_* variables and start redis-entra again".into(),
        ),
        "HELLO" => Route::Refuse(
            "HELLO is sent by redis-entra when it connects (with the token): choose the protocol with -2 or -3 when starting it".into(),
        ),
        "RESET" => Route::Refuse(
            "RESET would sign this connection out; start redis-entra again for a fresh connection".into(),
        ),
        "MONITOR" | "SYNC" | "PSYNC" => Route::Refuse(format!(
            "{} is not supported by redis-entra yet",
            upper(first)
        )),
        "SUBSCRIBE" | "PSUBSCRIBE" | "SSUBSCRIBE" if args.is_empty() => Route::Send,
        "SUBSCRIBE" => Route::Subscribe(SubscriptionKind::Channel, args),
        "PSUBSCRIBE" => Route::Subscribe(SubscriptionKind::Pattern, args),
        "SSUBSCRIBE" => Route::Subscribe(SubscriptionKind::Shard, args),
        "SELECT" if args.len() == 1 => {
            match String::from_utf8_lossy(&args[0]).trim().parse::<i64>() {
                Ok(n) if n >= 0 => Route::Select(n),
                _ => Route::Send, // Redis explains what is wrong
            }
        }
        _ => Route::Send,
    }
}

/// A refusal as an error with the usage exit code.
pub fn refusal(message: String) -> anyhow::Error {
    anyhow::Error::new(UsageError(message))
}

/// Runs `words` on `conn`.
pub async fn execute(conn: &mut Connection, words: &[Vec<u8>]) -> redis::RedisResult<Value> {
    let Some((name, args)) = words.split_first() else {
        return Ok(Value::Nil);
    };
    let mut cmd = redis::cmd(&String::from_utf8_lossy(name));
    for a in args {
        cmd.arg(a.as_slice());
    }
    cmd.query_async::<Value>(conn).await
}

/// Prints a command's result: the reply on stdout; an error reply as redis-cli prints it
/// (stdout; stderr with `--json`, so that stdout always parses). With `exit_on_error` (`-e`), an
/// error reply is printed to stderr as its bare text, as redis-cli does, and exits 1.
///
/// Returns the exit code for a reply: 0, or 1 for an error reply with `-e` (redis-cli exits 0
/// after an error reply unless given `-e`); other failures are returned as errors.
pub fn print_result(
    result: redis::RedisResult<Value>,
    words: &[Vec<u8>],
    output: Output,
    exit_on_error: bool,
) -> anyhow::Result<u8> {
    match result {
        // As redis-cli: the text replies of INFO, CLIENT LIST, … as they are, in any format.
        Ok(value) if format::forces_raw(words) => {
            print_stdout_bytes(&format::verbatim(&value));
            Ok(exit::SUCCESS)
        }
        Ok(value) => {
            print_stdout_bytes(&format::reply_bytes(&value, output));
            Ok(exit::SUCCESS)
        }
        Err(e) if e.code().is_some() && !exit::is_auth_refusal(&e) => {
            let text = format::error_text(&e);
            if exit_on_error {
                eprintln!("{text}");
                return Ok(exit::ERROR_REPLY);
            }
            if output == Output::Json {
                eprint!("{}", format::error(&text, output));
            } else {
                print_stdout(&format::error(&text, output));
            }
            Ok(exit::SUCCESS)
        }
        Err(e) => Err(anyhow::Error::new(e)),
    }
}

/// Writes to stdout and flushes; a closed stdout (`| head`) is not an error worth a panic.
pub fn print_stdout(text: &str) {
    print_stdout_bytes(text.as_bytes());
}

/// [`print_stdout`] for bytes that need not be UTF-8.
pub fn print_stdout_bytes(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(line: &str) -> Vec<Vec<u8>> {
        crate::split::split(line).unwrap()
    }

    #[test]
    fn routes() {
        assert!(matches!(route(&w("auth a b")), Route::Refuse(_)));
        assert!(matches!(route(&w("HELLO 3")), Route::Refuse(_)));
        assert_eq!(route(&w("GET a")), Route::Send);
        assert_eq!(route(&w("select 2")), Route::Select(2));
        assert_eq!(route(&w("select x")), Route::Send);
        assert_eq!(
            route(&w("psubscribe a* b")),
            Route::Subscribe(
                SubscriptionKind::Pattern,
                vec![b"a*".to_vec(), b"b".to_vec()]
            )
        );
        assert_eq!(route(&w("subscribe")), Route::Send);
    }
}
