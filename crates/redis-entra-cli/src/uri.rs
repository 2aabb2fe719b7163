//! `-u <uri>`: the server as a URI, read as redis-cli reads it, and `-t`'s timeout.
//!
//! `rediss://[[user]:key@]host[:port][/db]`: the scheme (any case), then user information up
//! to the first `@` (a user before the first `:`, the rest the key, both percent-decoded; with
//! no `:` it is all key, as redis-cli reads it), the host up to a `:` or `/`, the port, the
//! database. This is the form of Service Connector's `AZURE_REDIS_CONNECTIONSTRING` for an
//! access key. `redis://` (no TLS) is read, then refused by the configuration. The key never
//! appears in `Debug` or in an error.

use std::str::FromStr;
use std::time::Duration;

/// A URI given with `-u`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUri {
    /// `rediss://`.
    pub tls: bool,
    /// The user before the key, if any.
    pub user: Option<String>,
    key: Option<String>,
    /// The host, if given.
    pub host: Option<String>,
    /// The port, if given.
    pub port: Option<u16>,
    /// The database, if given.
    pub db: Option<i64>,
}

impl std::fmt::Debug for RedisUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisUri")
            .field("tls", &self.tls)
            .field("user", &self.user)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .finish()
    }
}

impl RedisUri {
    /// The access key in the URI, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
}

fn percent_decode(s: &str, what: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    format!("the {what} in the URI has a '%' not followed by two hex digits")
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("the {what} in the URI is not UTF-8 once decoded"))
}

/// A number as C's `atoi` reads it: leading digits (after an optional sign), else 0.
fn leading_int(s: &str) -> i64 {
    let s = s.trim_start();
    let (sign, digits) = match s.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, s.strip_prefix('+').unwrap_or(s)),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end.min(18)].parse::<i64>().map_or(0, |n| sign * n)
}

impl FromStr for RedisUri {
    type Err = String;

    fn from_str(uri: &str) -> Result<Self, String> {
        let lower = uri
            .get(..9)
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        let (tls, mut rest) = if lower.starts_with("rediss://") {
            (true, &uri[9..])
        } else if lower.starts_with("redis://") {
            (false, &uri[8..])
        } else {
            return Err(
                "invalid URI scheme: it must start with rediss:// (e.g. rediss://mycache.redis.cache.windows.net:6380/0)"
                    .into(),
            );
        };
        let mut parsed = Self {
            tls,
            user: None,
            key: None,
            host: None,
            port: None,
            db: None,
        };
        if let Some(at) = rest.find('@') {
            let info = &rest[..at];
            match info.find(':') {
                Some(colon) => {
                    parsed.user =
                        Some(percent_decode(&info[..colon], "user")?).filter(|u| !u.is_empty());
                    parsed.key = Some(percent_decode(&info[colon + 1..], "key")?);
                }
                None => parsed.key = Some(percent_decode(info, "key")?),
            }
            rest = &rest[at + 1..];
        }
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], Some(&rest[slash + 1..])),
            None => (rest, None),
        };
        if !authority.is_empty() {
            let (host, port) = match authority.find(':') {
                Some(colon) => (&authority[..colon], Some(&authority[colon + 1..])),
                None => (authority, None),
            };
            if !host.is_empty() {
                parsed.host = Some(host.to_string());
            }
            if let Some(port) = port {
                match u16::try_from(leading_int(port)) {
                    Ok(p) if p > 0 => parsed.port = Some(p),
                    _ => return Err("the port in the URI is not a port number (1-65535)".into()),
                }
            }
        }
        if let Some(db) = path.filter(|p| !p.is_empty()) {
            parsed.db = Some(leading_int(db).max(0));
        }
        if parsed.key.as_deref() == Some("") {
            parsed.key = None;
        }
        if let (Some(user), Some(_)) = (&parsed.user, &parsed.key) {
            if user != "default" {
                return Err(format!(
                    "the URI names the user {user:?}: an access key signs in as `default` (leave the user out: rediss://:<key>@host:port); for Entra ID give no key, the identity comes from --credential or the AZURE_* variables"
                ));
            }
        }
        Ok(parsed)
    }
}

/// `-u`'s text as given, kept unparsed until [`UriArg::parse`] (clap would copy a value it
/// cannot parse, key included, into its error). `Debug` never shows it.
#[derive(Clone)]
pub struct UriArg(String);

impl std::fmt::Debug for UriArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UriArg(<redacted>)")
    }
}

impl FromStr for UriArg {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

impl UriArg {
    /// The URI, or what is wrong with it (never quoting the key).
    pub fn parse(&self) -> Result<RedisUri, String> {
        self.0.parse::<RedisUri>().map_err(|e| format!("-u: {e}"))
    }
}

/// `-t`'s value: seconds, decimals allowed, not negative; 0 keeps the default (10 s).
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds (e.g. 2.5)"))?;
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!(
            "{s:?} is not a timeout between 0 and 86400 seconds"
        ));
    }
    if secs == 0.0 {
        return Ok(Duration::from_secs(10));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_connector_uris() {
        let u: RedisUri = "rediss://:k%2Bey=@mycache.redis.cache.windows.net:6380/2"
            .parse()
            .unwrap();
        assert!(u.tls);
        assert_eq!(u.key(), Some("k+ey="));
        assert_eq!(u.host.as_deref(), Some("mycache.redis.cache.windows.net"));
        assert_eq!(u.port, Some(6380));
        assert_eq!(u.db, Some(2));
        assert!(!format!("{u:?}").contains("k+ey"));
        let u: RedisUri = "REDISS://host".parse().unwrap();
        assert_eq!(
            (u.host.as_deref(), u.port, u.db, u.key()),
            (Some("host"), None, None, None)
        );
        let u: RedisUri = "rediss://default:abc@h:10000".parse().unwrap();
        assert_eq!(u.key(), Some("abc"));
        let u: RedisUri = "rediss://abc@h".parse().unwrap();
        assert_eq!(u.key(), Some("abc"), "no colon: all key, as redis-cli");
        let u: RedisUri = "redis://h:1/0".parse().unwrap();
        assert!(!u.tls);
    }

    #[test]
    fn errors_never_show_the_key() {
        for bad in [
            "http://:secret@h",
            "rediss://:sec%zzret@h",
            "rediss://bob:secret@h",
            "rediss://:secret@h:99999",
        ] {
            let e = bad.parse::<RedisUri>().unwrap_err();
            assert!(!e.contains("secret") && !e.contains("sec%"), "{bad}: {e}");
        }
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_timeout("0"), Ok(Duration::from_secs(10)));
        assert!(parse_timeout("-1").is_err());
        assert!(parse_timeout("x").is_err());
        assert!(parse_timeout("nan").is_err());
    }
}
