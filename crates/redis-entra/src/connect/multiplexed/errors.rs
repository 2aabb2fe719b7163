//! What a redis error means to a connection: it is lost, or its credentials were refused.

use redis::RedisError;

pub(in crate::connect) fn is_connection_error(e: &RedisError) -> bool {
    e.is_unrecoverable_error() || e.is_connection_dropped() || e.is_io_error()
}

pub(in crate::connect) fn is_auth_error(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || e.code().is_some_and(|c| c == "WRONGPASS" || c == "NOAUTH")
}
