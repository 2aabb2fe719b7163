//! `ConnectionString::parse` over arbitrary strings (StackExchange.Redis-style option lists,
//! `redis://`/`rediss://` URLs, bare `host:port`). Invariant: no panic; a parsed host is never
//! empty and a parsed port is never 0.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redis_entra::config::ConnectionString;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cs) = ConnectionString::parse(s, "AZURE_REDIS_CONNECTIONSTRING") {
        assert!(!cs.host.is_empty(), "empty host from {s:?}");
        assert_ne!(cs.port, Some(0), "port 0 from {s:?}");
        // Debug must not panic either (it redacts the password).
        let _ = format!("{cs:?}");
    }
});
