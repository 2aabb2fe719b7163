//! Counters the emulator keeps, for tests, benchmarks and operators: read in process, as JSON
//! (`GET /admin/stats`) and in Prometheus' text format (`GET /metrics`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Counters by label. The labels are the code's own constants (grant types the token endpoint
/// knows, refusal reasons), so the map stays as small as that list: a client cannot add labels.
#[derive(Debug, Default)]
pub struct Counters(Mutex<BTreeMap<&'static str, u64>>);

impl Counters {
    /// Adds one to `label`'s counter.
    pub fn bump(&self, label: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(label)
            .or_default() += 1;
    }

    /// `label`'s count.
    pub fn get(&self, label: &str) -> u64 {
        let counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(label).copied().unwrap_or(0)
    }

    /// Every label's count.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What the emulator has seen so far.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests to the token endpoint and the managed-identity endpoint.
    pub token_requests: AtomicU64,
    /// Tokens issued.
    pub tokens_issued: AtomicU64,
    /// Gateway connections accepted.
    pub connections_accepted: AtomicU64,
    /// Successful `AUTH`/`HELLO … AUTH` on the gateway.
    pub auth_succeeded: AtomicU64,
    /// Refused `AUTH`/`HELLO … AUTH` on the gateway.
    pub auth_failed: AtomicU64,
    /// Gateway connections closed because their token expired.
    pub closed_at_expiry: AtomicU64,
    /// Access-key connections closed because access keys were disabled.
    pub closed_keys_disabled: AtomicU64,
    /// Gateway connections closed because the signing key that verified their token was
    /// removed or replaced.
    pub closed_key_revoked: AtomicU64,
    /// Gateway connections closed by an injected fault: at random
    /// ([`Faults::set_random_close`](crate::faults::Faults::set_random_close)) or all at once
    /// ([`Faults::close_all_connections`](crate::faults::Faults::close_all_connections)).
    pub closed_by_fault: AtomicU64,
    /// Gateway connections closed because the backend closed its side or failed (a backend
    /// restart, or `QUIT`/a protocol error, after which Redis closes).
    pub closed_by_backend: AtomicU64,
    /// Backend restarts ([`Emulator::restart_backend`](crate::Emulator::restart_backend)).
    pub backend_restarts: AtomicU64,
    /// Token requests by grant: `client_credentials`, `authorization_code`, `refresh_token`,
    /// `device_code`, `password`, `app_service_managed_identity`, `imds`, `azure_arc`, `other`.
    pub token_requests_by_grant: Counters,
    /// Refused `AUTH`s by reason: `token` (the token check failed), `access_key`,
    /// `fault_refuse_reauth`, `too_many_failures`, `backend_user` (the identity's backend user
    /// could not be created), `backend_refused` (Redis refused the substituted credentials).
    pub auth_refused_by_reason: Counters,
}

impl Stats {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refused `AUTH` (in [`auth_failed`](Self::auth_failed) and by `reason`).
    pub fn refused(&self, reason: &'static str) {
        Self::bump(&self.auth_failed);
        self.auth_refused_by_reason.bump(reason);
    }

    /// The single counters, by name.
    fn totals(&self) -> [(&'static str, &'static str, u64); 11] {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            (
                "token_requests",
                "Requests to the token and managed-identity endpoints",
                g(&self.token_requests),
            ),
            ("tokens_issued", "Tokens issued", g(&self.tokens_issued)),
            (
                "connections_accepted",
                "Gateway connections accepted",
                g(&self.connections_accepted),
            ),
            (
                "auth_succeeded",
                "AUTH and HELLO AUTH accepted",
                g(&self.auth_succeeded),
            ),
            (
                "auth_failed",
                "AUTH and HELLO AUTH refused",
                g(&self.auth_failed),
            ),
            (
                "closed_at_expiry",
                "Connections closed when their token expired",
                g(&self.closed_at_expiry),
            ),
            (
                "closed_keys_disabled",
                "Access-key connections closed when access keys were disabled",
                g(&self.closed_keys_disabled),
            ),
            (
                "closed_key_revoked",
                "Connections closed when their signing key was revoked",
                g(&self.closed_key_revoked),
            ),
            (
                "closed_by_fault",
                "Connections closed by an injected fault",
                g(&self.closed_by_fault),
            ),
            (
                "closed_by_backend",
                "Connections closed because the backend closed or failed",
                g(&self.closed_by_backend),
            ),
            (
                "backend_restarts",
                "Backend restarts",
                g(&self.backend_restarts),
            ),
        ]
    }

    /// Every counter as JSON: `{"token_requests": n, …, "token_requests_by_grant": {…},
    /// "auth_refused_by_reason": {…}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (name, _, value) in self.totals() {
            out.insert(name.into(), value.into());
        }
        for (name, counters) in [
            ("token_requests_by_grant", &self.token_requests_by_grant),
            ("auth_refused_by_reason", &self.auth_refused_by_reason),
        ] {
            let map: serde_json::Map<String, serde_json::Value> = counters
                .snapshot()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.into()))
                .collect();
            out.insert(name.into(), map.into());
        }
        out.into()
    }

    /// Every counter in Prometheus' text exposition format, each named
    /// `redis_entra_emulator_<name>_total`.
    pub fn to_prometheus(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for (name, help, value) in self.totals() {
            let _ = writeln!(out, "# HELP redis_entra_emulator_{name}_total {help}.");
            let _ = writeln!(out, "# TYPE redis_entra_emulator_{name}_total counter");
            let _ = writeln!(out, "redis_entra_emulator_{name}_total {value}");
        }
        for (name, label, help, counters) in [
            (
                "token_requests_by_grant",
                "grant",
                "Token requests by grant type",
                &self.token_requests_by_grant,
            ),
            (
                "auth_refused_by_reason",
                "reason",
                "Refused AUTHs by reason",
                &self.auth_refused_by_reason,
            ),
        ] {
            let _ = writeln!(out, "# HELP redis_entra_emulator_{name}_total {help}.");
            let _ = writeln!(out, "# TYPE redis_entra_emulator_{name}_total counter");
            for (k, v) in counters.snapshot() {
                let _ = writeln!(
                    out,
                    "redis_entra_emulator_{name}_total{{{label}=\"{k}\"}} {v}"
                );
            }
        }
        out
    }

    /// One line for people: what the emulator did, as the command prints it at shutdown.
    pub fn summary(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "{} token requests, {} tokens issued; {} connections, {} AUTHs accepted, {} refused; \
             closed: {} at expiry, {} keys disabled, {} key revoked, {} by faults, {} by the backend",
            g(&self.token_requests),
            g(&self.tokens_issued),
            g(&self.connections_accepted),
            g(&self.auth_succeeded),
            g(&self.auth_failed),
            g(&self.closed_at_expiry),
            g(&self.closed_keys_disabled),
            g(&self.closed_key_revoked),
            g(&self.closed_by_fault),
            g(&self.closed_by_backend),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_every_counter_and_label() {
        let stats = Stats::default();
        Stats::bump(&stats.connections_accepted);
        stats.token_requests_by_grant.bump("client_credentials");
        stats.refused("token");
        let text = stats.to_prometheus();
        assert!(
            text.contains("redis_entra_emulator_connections_accepted_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("redis_entra_emulator_auth_failed_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("redis_entra_emulator_token_requests_by_grant_total{grant=\"client_credentials\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "redis_entra_emulator_auth_refused_by_reason_total{reason=\"token\"} 1\n"
            ),
            "{text}"
        );
        assert_eq!(stats.to_json()["auth_refused_by_reason"]["token"], 1);
    }
}
