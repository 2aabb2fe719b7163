//! The checks against Redis itself: `AUTH <oid> <token>`, a read and a write, with the two
//! Redis cases of Microsoft's troubleshooting guide (`WRONGPASS`, `NOPERM`) explained.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use redis_entra::{ConnectOptions, RedisCredentials};

use super::Check;
use crate::exit;
use crate::format;

const TIMEOUT: Duration = Duration::from_secs(10);

/// What to do about `WRONGPASS` (the first troubleshooting case of Microsoft's Azure Cache for Redis documentation).
fn wrongpass_fix(oid: &str) -> String {
    format!(
        "in the Azure portal, on the cache: under Settings > Data Access Configuration, assign an access policy (Data Owner, Data Contributor or Data Reader) to the identity with object id {oid} (the username redis-entra sends is the token's oid); and under Settings > Authentication > Microsoft Entra Authentication, check 'Enable Microsoft Entra Authentication' and Save"
    )
}

/// What to do about `NOPERM` (its second case).
fn noperm_fix(oid: &str, command: &str) -> String {
    format!(
        "in the Azure portal, on the cache: under Settings > Data Access Configuration, assign {oid} a policy that allows {command} (Data Owner or Data Contributor; Data Reader allows reads only); with a custom access policy, include the command and the keys (e.g. +@read +@write ~*)"
    )
}

/// Signs in with `AUTH <oid> <token>` on a new connection.
pub async fn auth(
    options: &ConnectOptions,
    creds: &RedisCredentials,
) -> (Check, Option<MultiplexedConnection>) {
    const NAME: &str = "AUTH";
    let oid = creds.username();
    // An access key goes as `AUTH default <key>`; a token carries its oid.
    let key = creds.claims().oid.is_none();
    let secret = if key { "<key>" } else { "<token>" };
    let client = match options.client(creds) {
        Ok(c) => c,
        Err(e) => {
            return (
                Check::fail(
                    NAME,
                    exit::USAGE,
                    format!("cannot set up the connection: {e}"),
                    "check the host, port and --cacert",
                ),
                None,
            )
        }
    };
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT));
    match client
        .get_multiplexed_async_connection_with_config(&config)
        .await
    {
        Ok(conn) => (
            Check::ok(NAME, format!("AUTH {oid} {secret} accepted")),
            Some(conn),
        ),
        Err(e) if exit::is_auth_refusal(&e) => (
            Check::fail(
                NAME,
                exit::AUTH,
                format!(
                    "Redis refused AUTH {oid} {secret} with {}: {}",
                    // redis-rs reports WRONGPASS at connect as "authentication failed".
                    e.code().map(|_| format::error_text(&e)).unwrap_or_else(|| "WRONGPASS".into()),
                    if key {
                        "the key is not the cache's current primary or secondary key, or access keys are disabled on it"
                    } else {
                        "the username and the token don't match, or this identity has no access policy assigned on the cache, or Microsoft Entra authentication is not enabled on it"
                    }
                ),
                if key {
                    "in the Azure portal, on the cache: under Settings > Authentication > Access keys, check that access keys are enabled and copy the current key (keys change when regenerated); or sign in with Microsoft Entra ID instead".to_string()
                } else {
                    wrongpass_fix(oid)
                },
            ),
            None,
        ),
        Err(e) => (
            Check::fail(
                NAME,
                exit::of_redis(&e),
                format!("signing in failed: {e}"),
                "run the doctor again; if the connection keeps failing after TLS succeeded, check the cache's health in the portal",
            ),
            None,
        ),
    }
}

/// A random key under `redis-entra:doctor:` so that the checks never touch real data.
fn random_key() -> String {
    format!("redis-entra:doctor:{:016x}", rand::random::<u64>())
}

/// What a failed command means.
fn command_failure(name: &'static str, oid: &str, command: &str, e: &redis::RedisError) -> Check {
    if e.code() == Some("NOPERM") {
        return Check::fail(
            name,
            exit::ERROR_REPLY,
            format!(
                "signed in as {oid}, but its access policy does not allow {command}: {}",
                format::error_text(e)
            ),
            noperm_fix(oid, command),
        );
    }
    if e.code() == Some("READONLY") {
        return Check::fail(
            name,
            exit::ERROR_REPLY,
            format!(
                "{command} was refused by a read-only replica: {}",
                format::error_text(e)
            ),
            "connect to the cache's primary endpoint (the host name in the portal's Overview)",
        );
    }
    let code = if e.code().is_some() {
        exit::ERROR_REPLY
    } else {
        exit::of_redis(e)
    };
    Check::fail(
        name,
        code,
        format!("{command} failed: {e}"),
        "check the cache's health in the portal, and the access policy's permissions",
    )
}

/// `GET` of a random key (expected: nil).
pub async fn read(conn: &mut MultiplexedConnection, oid: &str) -> Check {
    const NAME: &str = "read";
    let key = random_key();
    match redis::cmd("GET").arg(&key).query_async::<Value>(conn).await {
        Ok(value) => Check::ok(
            NAME,
            format!(
                "GET {key} -> {}",
                format::reply(&value, crate::settings::Output::Typed).trim_end()
            ),
        ),
        Err(e) => command_failure(NAME, oid, "GET", &e),
    }
}

/// `SET` of a random key with a 30 s TTL, then `DEL`.
pub async fn write(conn: &mut MultiplexedConnection, oid: &str) -> Check {
    const NAME: &str = "write";
    let key = random_key();
    if let Err(e) = redis::cmd("SET")
        .arg(&key)
        .arg("written by redis-entra doctor")
        .arg("EX")
        .arg(30)
        .exec_async(conn)
        .await
    {
        return command_failure(NAME, oid, "SET", &e);
    }
    match redis::cmd("DEL").arg(&key).query_async::<i64>(conn).await {
        Ok(_) => Check::ok(NAME, format!("SET {key} EX 30 -> OK, DEL -> OK")),
        Err(e) => command_failure(NAME, oid, "DEL", &e),
    }
}
