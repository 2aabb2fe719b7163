//! The module's arguments: `authority <url> tenant <id> [tenant <id> …] [audience <aud> …]
//! [skew <seconds>] [max-lifetime <seconds>] [refresh-interval <seconds>]
//! [unknown-kid-interval <seconds>]`, as name/value pairs after the module's path in
//! `--loadmodule` or `MODULE LOAD`.

use std::time::Duration;

use redis_entra_jwt::{Rules, DEFAULT_MAX_LIFETIME, DEFAULT_SKEW};

/// Entra's public cloud, the default authority.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";

/// How often the signing keys are fetched again by default (the keys roll over every few
/// weeks; Entra advises checking at least daily).
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(3600);

/// The least time between two fetches caused by a token whose `kid` is unknown: a stream of
/// forged tokens costs one fetch per interval, not one per `AUTH`.
pub const DEFAULT_UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(10);

/// At most this many tenants and audiences (each is a fetch or a comparison per token).
pub const MAX_TENANTS: usize = 16;
/// At most this many audiences.
pub const MAX_AUDIENCES: usize = 16;
/// At most this many allowed application ids.
pub const MAX_APP_IDS: usize = 64;

/// The module's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The authority host (`https://login.microsoftonline.com`, a sovereign cloud's, or the
    /// emulator's), without a trailing slash.
    pub authority: String,
    /// The tenants whose tokens are accepted (GUIDs).
    pub tenants: Vec<String>,
    /// Audiences, skew and maximum lifetime.
    pub rules: Rules,
    /// If not empty, the only application ids (`appid`/`azp`) whose tokens are accepted.
    pub app_ids: Vec<String>,
    /// How often keys are fetched again.
    pub refresh_interval: Duration,
    /// The least time between two fetches caused by an unknown `kid`.
    pub unknown_kid_interval: Duration,
}

/// A wrong argument: says which and what is expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn seconds(name: &str, value: &str) -> Result<Duration, ConfigError> {
    value
        .parse::<u64>()
        .ok()
        .filter(|s| *s <= 365 * 24 * 3600)
        .map(Duration::from_secs)
        .ok_or_else(|| ConfigError(format!("{name} takes whole seconds, got {value:?}")))
}

impl Config {
    /// Parses name/value pairs (names case-insensitive).
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Self, ConfigError> {
        if !args.len().is_multiple_of(2) {
            return Err(ConfigError(
                "arguments come in name/value pairs: authority <url> tenant <id> …".into(),
            ));
        }
        let mut authority = DEFAULT_AUTHORITY.to_string();
        let mut tenants = Vec::new();
        let mut audiences = Vec::new();
        let mut app_ids: Vec<String> = Vec::new();
        let mut rules = Rules::default();
        let mut refresh_interval = DEFAULT_REFRESH_INTERVAL;
        let mut unknown_kid_interval = DEFAULT_UNKNOWN_KID_INTERVAL;
        rules.skew = DEFAULT_SKEW;
        rules.max_lifetime = DEFAULT_MAX_LIFETIME;
        for pair in args.chunks(2) {
            let (name, value) = (pair[0].as_ref(), pair[1].as_ref());
            match name.to_ascii_lowercase().as_str() {
                "authority" => {
                    let url = value.trim_end_matches('/');
                    if !(url.starts_with("https://") || url.starts_with("http://")) {
                        return Err(ConfigError(format!(
                            "authority must be an https:// URL, got {value:?}"
                        )));
                    }
                    authority = url.to_string();
                }
                "tenant" => {
                    let ok = !value.is_empty()
                        && value.len() <= 64
                        && value
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                    if !ok {
                        return Err(ConfigError(format!(
                            "tenant must be a tenant id (a GUID), got {value:?}"
                        )));
                    }
                    if !tenants
                        .iter()
                        .any(|t: &String| t.eq_ignore_ascii_case(value))
                    {
                        tenants.push(value.to_string());
                    }
                }
                "audience" => {
                    if value.is_empty() {
                        return Err(ConfigError("audience must not be empty".into()));
                    }
                    audiences.push(value.to_string());
                }
                "app-id" => {
                    if value.is_empty() || value.len() > 64 {
                        return Err(ConfigError(format!(
                            "app-id must be an application (client) id, got {value:?}"
                        )));
                    }
                    app_ids.push(value.to_string());
                }
                "skew" => rules.skew = seconds(name, value)?,
                "max-lifetime" => rules.max_lifetime = seconds(name, value)?,
                "refresh-interval" => {
                    refresh_interval = seconds(name, value)?.max(Duration::from_secs(1))
                }
                "unknown-kid-interval" => unknown_kid_interval = seconds(name, value)?,
                other => {
                    return Err(ConfigError(format!(
                        "unknown argument {other:?}; known: authority, tenant, audience, app-id, \
                         skew, max-lifetime, refresh-interval, unknown-kid-interval"
                    )))
                }
            }
        }
        if tenants.is_empty() {
            return Err(ConfigError(
                "no tenant: load the module with `tenant <tenant id>` (it may repeat)".into(),
            ));
        }
        if tenants.len() > MAX_TENANTS {
            return Err(ConfigError(format!("at most {MAX_TENANTS} tenants")));
        }
        if app_ids.len() > MAX_APP_IDS {
            return Err(ConfigError(format!("at most {MAX_APP_IDS} app ids")));
        }
        if audiences.len() > MAX_AUDIENCES {
            return Err(ConfigError(format!("at most {MAX_AUDIENCES} audiences")));
        }
        if !audiences.is_empty() {
            rules.audiences = audiences;
        }
        Ok(Self {
            authority,
            tenants,
            rules,
            app_ids,
            refresh_interval,
            unknown_kid_interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_and_tenant_are_enough() {
        let c = Config::parse(&["authority", "https://localhost:1/", "tenant", "t1"]).unwrap();
        assert_eq!(c.authority, "https://localhost:1");
        assert_eq!(c.tenants, ["t1"]);
        assert_eq!(c.rules, Rules::default());
    }

    #[test]
    fn tenants_and_audiences_repeat() {
        let c = Config::parse(&[
            "tenant", "a", "TENANT", "b", "tenant", "A", "audience", "x", "audience", "y", "skew",
            "5",
        ])
        .unwrap();
        assert_eq!(c.authority, DEFAULT_AUTHORITY);
        assert_eq!(c.tenants, ["a", "b"]);
        assert_eq!(c.rules.audiences, ["x", "y"]);
        assert_eq!(c.rules.skew, Duration::from_secs(5));
    }

    #[test]
    fn mistakes_are_named() {
        for (args, needle) in [
            (vec!["authority"], "pairs"),
            (vec!["authority", "https://x"], "no tenant"),
            (vec!["tenant", "a b"], "tenant must be"),
            (vec!["tenant", "a", "skew", "-1"], "whole seconds"),
            (vec!["tenant", "a", "colour", "red"], "unknown argument"),
            (vec!["tenant", "a", "authority", "ftp://x"], "https://"),
        ] {
            let e = Config::parse(&args).unwrap_err();
            assert!(e.0.contains(needle), "{args:?}: {e}");
        }
    }
}
