//! What one-shot commands and the prompt share: signing in, the commands that are refused or
//! handled here rather than sent, running a command and printing its reply.

use std::io::Write as _;

use anyhow::Context;
use redis::Value;
use redis_entra::config::RedisConfig;
use redis_entra::{ConnectOptions, EntraConnection, TokenManager, TokenManagerOptions};

use crate::exit::{self, UsageError};
use crate::format;
use crate::settings::{self, Output};
use crate::subscribe::Kind;

/// A token manager over the Entra credential the configuration describes.
pub fn manager(config: &RedisConfig) -> anyhow::Result<TokenManager> {
    let credential = settings::entra_credential(config)?;
    Ok(TokenManager::new(
        credential,
        TokenManagerOptions::default(),
    ))
}

/// Connects to `options` with the manager's token, naming the target in the error.
pub async fn connect(
    options: &ConnectOptions,
    manager: &TokenManager,
) -> anyhow::Result<EntraConnection> {
    EntraConnection::connect(options.clone(), manager.clone())
        .await
        .with_context(|| format!("connecting to {}:{}", options.host, options.port))
}

/// What to do with a command before sending it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Send it and print the reply.
    Send,
    /// Refuse it with this message.
    Refuse(String),
    /// Stream a subscription.
    Subscribe(Kind, Vec<Vec<u8>>),
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
        "SUBSCRIBE" => Route::Subscribe(Kind::Channel, args),
        "PSUBSCRIBE" => Route::Subscribe(Kind::Pattern, args),
        "SSUBSCRIBE" => Route::Subscribe(Kind::Shard, args),
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
pub async fn execute(conn: &mut EntraConnection, words: &[Vec<u8>]) -> redis::RedisResult<Value> {
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
/// (stdout; stderr with `--json`, so that stdout always parses). Returns the exit code for a
/// reply (0, or 1 for an error reply); other failures are returned as errors.
pub fn print_result(
    result: redis::RedisResult<Value>,
    words: &[Vec<u8>],
    output: Output,
) -> anyhow::Result<u8> {
    let output = if output == Output::Typed && format::forces_raw(words) {
        Output::Raw
    } else {
        output
    };
    match result {
        Ok(value) => {
            print_stdout(&format::reply(&value, output));
            Ok(exit::SUCCESS)
        }
        Err(e) if e.code().is_some() && !exit::is_auth_refusal(&e) => {
            let text = format::error_text(&e);
            if output == Output::Json {
                eprint!("{}", format::error(&text, output));
            } else {
                print_stdout(&format::error(&text, output));
            }
            Ok(exit::ERROR_REPLY)
        }
        Err(e) => Err(anyhow::Error::new(e)),
    }
}

/// Writes to stdout and flushes; a closed stdout (`| head`) is not an error worth a panic.
pub fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
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
            Route::Subscribe(Kind::Pattern, vec![b"a*".to_vec(), b"b".to_vec()])
        );
        assert_eq!(route(&w("subscribe")), Route::Send);
    }
}
