//! Exit codes a script can rely on, and how errors map to them.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | with `-e`, the command returned a Redis error reply (or another failure, such as a failed demo) |
//! | 2 | usage or configuration error: a bad flag, a bad environment variable |
//! | 3 | authentication or token failure: the credential could not get a token, `WRONGPASS` |
//! | 4 | connection or TLS failure |
//!
//! As redis-cli, an error reply exits 0 unless `-e` is given. Failures that redis-cli also
//! reports by exiting 1 (it cannot connect, for example) get the richer codes 2, 3 and 4.

use redis::ErrorKind;

/// The command ran and succeeded.
pub const SUCCESS: u8 = 0;
/// The command returned a Redis error reply.
pub const ERROR_REPLY: u8 = 1;
/// A bad flag or environment variable.
pub const USAGE: u8 = 2;
/// The credential could not get a token, or Redis refused it.
pub const AUTH: u8 = 3;
/// The server could not be reached, or the TLS handshake failed.
pub const CONNECTION: u8 = 4;

/// The text `--help` shows about exit codes and unsupported redis-cli flags.
pub const HELP: &str = "\
Exit codes:
  0  success
  1  with -e, the command returned a Redis error reply (without -e an error reply is printed
     and exits 0, as with redis-cli); another failure, such as a failed demo
  2  usage or configuration error (a bad flag, a bad environment variable such as AZURE_REDIS_PORT)
  3  authentication or token failure (the credential could not get a token; WRONGPASS)
  4  connection or TLS failure (DNS, TCP, certificate)

Run `redis-entra doctor` to find out why signing in fails.

Tokens are kept between runs, owner-only, in $XDG_RUNTIME_DIR/redis-entra (else
$XDG_CACHE_HOME or ~/.cache): a loop of commands asks Entra once per token lifetime. Whoever can
read your files can use a kept token until it expires; --no-token-cache or
REDIS_ENTRA_NO_TOKEN_CACHE=1 keeps none.";

/// An error in what the user gave: a flag, an environment variable, a refused command.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Whether a Redis error means the server refused the credentials.
pub fn is_auth_refusal(e: &redis::RedisError) -> bool {
    e.kind() == ErrorKind::AuthenticationFailed || matches!(e.code(), Some("WRONGPASS" | "NOAUTH"))
}

/// The exit code of a redis-rs error.
pub fn of_redis(e: &redis::RedisError) -> u8 {
    if is_auth_refusal(e) {
        return AUTH;
    }
    if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_connection_refusal() {
        return CONNECTION;
    }
    match e.kind() {
        ErrorKind::InvalidClientConfig => USAGE,
        ErrorKind::Parse | ErrorKind::RESP3NotSupported => CONNECTION,
        _ => ERROR_REPLY,
    }
}

/// The exit code of a library error.
pub fn of_library(e: &redis_entra::Error) -> u8 {
    use redis_entra::Error;
    match e {
        Error::Credential(_) | Error::CredentialTimeout(_) | Error::Claims(_) | Error::Stopped => {
            AUTH
        }
        Error::Redis(r) => of_redis(r),
        Error::Config(_) | Error::Tls(_) => USAGE,
        _ => ERROR_REPLY,
    }
}

/// The exit code of any error: the first error in its chain that has a meaning here decides.
pub fn of(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.downcast_ref::<UsageError>().is_some() {
            return USAGE;
        }
        if let Some(e) = cause.downcast_ref::<redis_entra::Error>() {
            return of_library(e);
        }
        if let Some(e) = cause.downcast_ref::<redis::RedisError>() {
            return of_redis(e);
        }
        if cause.is::<redis_entra::ClaimsError>() {
            return AUTH;
        }
    }
    ERROR_REPLY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_errors_to_documented_codes() {
        let usage = anyhow::Error::new(UsageError("AZURE_REDIS_PORT".into()));
        assert_eq!(of(&usage), USAGE);
        let wrongpass = redis::RedisError::from((
            ErrorKind::AuthenticationFailed,
            "WRONGPASS",
            "invalid username-password pair".to_string(),
        ));
        assert_eq!(of_redis(&wrongpass), AUTH);
        let io =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(of_redis(&io), CONNECTION);
        let lib = redis_entra::Error::Config("bad".into());
        assert_eq!(of(&anyhow::Error::new(lib)), USAGE);
        let timeout = redis_entra::Error::CredentialTimeout(std::time::Duration::from_secs(1));
        assert_eq!(of(&anyhow::Error::new(timeout).context("x")), AUTH);
    }
}
