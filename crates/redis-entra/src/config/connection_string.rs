//! The connection strings Service Connector and the Azure portal hand out, for access keys:
//! `rediss://:<key>@host:6380/0` (Java, Python, Go, Node) and StackExchange.Redis'
//! `host:6380,password=<key>,ssl=True,abortConnect=False,defaultDatabase=0` (.NET).

use crate::error::{Error, Result};

/// What a connection string says.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ConnectionString {
    /// The host name.
    pub host: String,
    /// The port, if given.
    pub port: Option<u16>,
    /// The username, if given (`default` for access keys).
    pub user: Option<String>,
    /// The password (the access key).
    pub password: Option<String>,
    /// Whether TLS is asked for (`rediss://`, `ssl=True`).
    pub ssl: Option<bool>,
    /// The database number, if given.
    pub db: Option<i64>,
}

impl std::fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionString")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ssl", &self.ssl)
            .field("db", &self.db)
            .finish()
    }
}

/// StackExchange.Redis options that carry no meaning here but are valid in its strings.
const IGNORED_SE_OPTIONS: &[&str] = &[
    "abortconnect",
    "connecttimeout",
    "synctimeout",
    "asynctimeout",
    "allowadmin",
    "name",
    "connectretry",
    "keepalive",
    "resolvedns",
    "checkcertificaterevocation",
    "sslprotocols",
    "tiebreaker",
    "version",
    "configchannel",
    "servicename",
    "responsetimeout",
    "channelprefix",
    "proxy",
];

fn bad(var: &str, what: impl std::fmt::Display) -> Error {
    Error::Config(format!("{var}: {what}"))
}

fn percent_decode(s: &str, var: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad(var, "a '%' in the password is not followed by two hex digits (percent-encode the key, or leave it as Azure gives it)"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad(var, "the password is not UTF-8 once percent-decoded"))
}

fn parse_port(s: &str, var: &str) -> Result<u16> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad(
            var,
            format!("port {s:?} is not a port number (1-65535)"),
        )),
        Ok(p) => Ok(p),
    }
}

fn parse_db(s: &str, var: &str) -> Result<i64> {
    match s.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n),
        _ => Err(bad(
            var,
            format!("database {s:?} is not a database number (0, 1, …)"),
        )),
    }
}

fn split_host_port(hostport: &str, var: &str) -> Result<(String, Option<u16>)> {
    if hostport.is_empty() {
        return Err(bad(var, "no host name"));
    }
    if let Some(rest) = hostport.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| bad(var, "an IPv6 address is missing its ']'"))?;
        if h.is_empty() {
            return Err(bad(var, "no host name between '[' and ']'"));
        }
        let port = match after.strip_prefix(':') {
            Some(p) => Some(parse_port(p, var)?),
            None if after.is_empty() => None,
            None => return Err(bad(var, format!("unexpected {after:?} after the host"))),
        };
        return Ok((h.to_string(), port));
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => Ok((h.to_string(), Some(parse_port(p, var)?))),
        Some(_) => Err(bad(var, "no host name before the ':'")),
        None => Ok((hostport.to_string(), None)),
    }
}

fn parse_bool(s: &str, var: &str, key: &str) -> Result<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(bad(var, format!("{key}={s:?} is not true or false"))),
    }
}

impl ConnectionString {
    /// Parses either form; `var` names the variable in error messages.
    ///
    /// ```
    /// use redis_entra::config::ConnectionString;
    /// let c = ConnectionString::parse("rediss://:k3y/+=@mycache.redis.cache.windows.net:6380/0", "X").unwrap();
    /// assert_eq!((c.host.as_str(), c.port, c.password.as_deref(), c.ssl, c.db),
    ///            ("mycache.redis.cache.windows.net", Some(6380), Some("k3y/+="), Some(true), Some(0)));
    /// let c = ConnectionString::parse("mycache.redis.cache.windows.net:6380,password=k3y=,ssl=True,abortConnect=False", "X").unwrap();
    /// assert_eq!((c.port, c.password.as_deref(), c.ssl), (Some(6380), Some("k3y="), Some(true)));
    /// assert!(ConnectionString::parse("mycache:6380,pasword=x", "X").is_err());
    /// ```
    pub fn parse(s: &str, var: &str) -> Result<Self> {
        let s = s.trim();
        if s.is_empty() {
            return Err(bad(var, "is empty"));
        }
        if let Some((scheme, rest)) = s.split_once("://") {
            return Self::parse_url(scheme, rest, var);
        }
        Self::parse_stackexchange(s, var)
    }

    fn parse_url(scheme: &str, rest: &str, var: &str) -> Result<Self> {
        let ssl = match scheme.to_ascii_lowercase().as_str() {
            "rediss" | "valkeys" => true,
            "redis" | "valkey" => false,
            other => {
                return Err(bad(
                    var,
                    format!(
                        "scheme {other:?} is not a Redis URL: use rediss://:<key>@<host>:6380/0"
                    ),
                ))
            }
        };
        // The key may hold '/', so the host starts after the last '@'.
        let (userinfo, hostpath) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (hostport, path) = match hostpath.split_once('/') {
            Some((h, p)) => (h, Some(p)),
            None => (hostpath, None),
        };
        let path = path.map(|p| p.split(['?', '#']).next().unwrap_or(""));
        let (host, port) = split_host_port(hostport, var)?;
        let db = match path {
            Some("") | None => None,
            Some(p) => Some(parse_db(p, var)?),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => match ui.split_once(':') {
                Some((u, p)) => (
                    Some(percent_decode(u, var)?).filter(|u| !u.is_empty()),
                    Some(percent_decode(p, var)?),
                ),
                None => (None, Some(percent_decode(ui, var)?)),
            },
        };
        Ok(Self {
            host,
            port,
            user,
            password,
            ssl: Some(ssl),
            db,
        })
    }

    fn parse_stackexchange(s: &str, var: &str) -> Result<Self> {
        let mut out = Self::default();
        let mut endpoints = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                None => endpoints.push(part),
                Some((key, value)) => {
                    let k = key.trim().to_ascii_lowercase();
                    let value = value.trim();
                    match k.as_str() {
                        "password" => out.password = Some(value.to_string()),
                        "user" => out.user = Some(value.to_string()),
                        "ssl" => out.ssl = Some(parse_bool(value, var, key)?),
                        "defaultdatabase" => out.db = Some(parse_db(value, var)?),
                        k if IGNORED_SE_OPTIONS.contains(&k) => {}
                        _ => {
                            return Err(bad(
                                var,
                                format!("option {key:?} is not a StackExchange.Redis connection-string option (expected password=, ssl=, defaultDatabase=, …)"),
                            ))
                        }
                    }
                }
            }
        }
        match endpoints.as_slice() {
            [one] => {
                let (host, port) = split_host_port(one, var)?;
                out.host = host;
                out.port = port;
                Ok(out)
            }
            [] => Err(bad(var, "no host:port before the options")),
            _ => Err(bad(
                var,
                "more than one endpoint: Azure gives one host per cache",
            )),
        }
    }
}
