//! Redis connections that stay authenticated: one file per kind of connection.

pub mod multiplexed;
pub mod options;
