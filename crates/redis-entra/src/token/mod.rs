//! Tokens: when to refresh them ([`policy`]), the manager that keeps one fresh ([`manager`]),
//! what a connection authenticates with ([`credentials`]), and what an app can observe
//! ([`events`]).

pub mod credentials;
pub mod events;
pub mod manager;
pub mod policy;
