//! Which of redis-cli 7's flags `redis-entra` takes, which it refuses and why: the table
//! `--help` prints, and the message a refused flag gets (exit 2) instead of clap's
//! "unexpected argument".

/// redis-cli flags that work here as they do in redis-cli.
pub const SUPPORTED: &[(&str, &str)] = &[
    (
        "-h -p -n",
        "host, port, database (default: AZURE_REDIS_HOST/PORT/DATABASE)",
    ),
    (
        "-u <uri>",
        "rediss://[:key@]host[:port][/db] (a key in it is an access key)",
    ),
    (
        "-t <timeout>",
        "connection timeout in seconds (redis-cli 7.2)",
    ),
    ("-c", "follow -MOVED/-ASK (cluster)"),
    ("-2 -3", "RESP2 or RESP3"),
    (
        "-x -X <tag>",
        "last (or the tag's) argument from standard input",
    ),
    ("-d -D", "delimiters of raw replies"),
    (
        "--quoted-input --quoted-pattern",
        "arguments and patterns given quoted",
    ),
    (
        "-r <n> -i <secs>",
        "repeat the command, pausing between runs",
    ),
    ("-e", "exit 1 on an error reply"),
    ("--raw --no-raw --csv --json", "output formats"),
    ("--tls --cacert --insecure", "TLS (always on)"),
    ("--no-auth-warning", "no warning for a key in -u"),
    (
        "--scan --pattern --count",
        "list keys (--count: redis-cli 7.2; --type: SCAN's TYPE)",
    ),
    ("--eval <file> k … , a …", "run a Lua script"),
    (
        "--pipe --pipe-timeout",
        "mass insertion from standard input",
    ),
    (
        "--latency --latency-history",
        "PING round trips, min/max/avg (ms)",
    ),
    ("--stat", "a line of server figures every -i seconds"),
    (
        "--bigkeys --memkeys --memkeys-samples",
        "biggest keys by length or memory",
    ),
];

/// Why a flag is refused, by family.
const ENTRA: &str = "the password is a Microsoft Entra ID token and the username its oid claim, both from the credential (--credential, or the AZURE_* variables) and renewed automatically";
const NO_SYNC: &str = "it needs SYNC/PSYNC, which Azure Cache for Redis does not allow";
const TLS_FIXED: &str = "TLS is rustls with its safe defaults and the host name as SNI; trust a CA with --cacert or SSL_CERT_FILE";
const NOT_YET: &str = "not implemented in redis-entra yet; run it with redis-cli (--user <oid> --pass \"$(redis-entra token --raw-token)\")";

/// redis-cli flags refused, with the reason.
pub const REFUSED: &[(&str, &str)] = &[
    ("-a", ENTRA),
    ("--pass", ENTRA),
    ("--user", ENTRA),
    ("--askpass", ENTRA),
    ("-s", "Azure caches are reached over TCP with TLS; there is no Unix socket"),
    ("--sni", TLS_FIXED),
    ("--cacertdir", TLS_FIXED),
    ("--tls-ciphers", TLS_FIXED),
    ("--tls-ciphersuites", TLS_FIXED),
    ("--cert", "Azure Cache for Redis does not authenticate clients with certificates: the identity signs in with an Entra ID token"),
    ("--key", "Azure Cache for Redis does not authenticate clients with certificates: the identity signs in with an Entra ID token"),
    ("--replica", NO_SYNC),
    ("--slave", NO_SYNC),
    ("--rdb", NO_SYNC),
    ("--functions-rdb", NO_SYNC),
    ("--cluster", "the cluster manager creates and reshards clusters; on Azure the service does that (portal, `az redis`)"),
    ("--lru-test", "it writes a synthetic workload: a test for a Redis of your own, not for a cache"),
    ("--intrinsic-latency", "it measures this machine without a server: run `redis-cli --intrinsic-latency`"),
    ("--hotkeys", NOT_YET),
    ("--latency-dist", NOT_YET),
    ("--ldb", NOT_YET),
    ("--ldb-sync-mode", NOT_YET),
    ("--quoted-json", NOT_YET),
    ("--show-pushes", NOT_YET),
    ("--verbose", NOT_YET),
    ("--mono", NOT_YET),
];

/// The reason `flag` (as typed, e.g. `--rdb` or `--rdb=x`) is refused, if it is a refused
/// redis-cli flag.
pub fn refusal(flag: &str) -> Option<&'static str> {
    let name = flag.split('=').next().unwrap_or(flag);
    REFUSED
        .iter()
        .find(|(f, _)| *f == name)
        .map(|(_, reason)| *reason)
}

/// The text after `--help`'s options: the exit codes, then the redis-cli flags.
pub fn help() -> String {
    let mut text = String::from(crate::exit::HELP);
    text.push_str("\n\nredis-cli flags supported (redis-cli's manual applies):\n");
    for (flags, what) in SUPPORTED {
        text.push_str(&format!("  {flags:<28} {what}\n"));
    }
    text.push_str("\nredis-cli flags refused (exit 2), and why:\n");
    let mut reasons: Vec<(&str, Vec<&str>)> = Vec::new();
    for (flag, reason) in REFUSED {
        match reasons.iter_mut().find(|(r, _)| r == reason) {
            Some((_, flags)) => flags.push(flag),
            None => reasons.push((reason, vec![flag])),
        }
    }
    for (reason, flags) in reasons {
        text.push_str(&format!("  {}: {reason}\n", flags.join(" ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals() {
        assert!(refusal("--rdb").unwrap().contains("SYNC"));
        assert!(refusal("--rdb=x").is_some());
        assert!(refusal("-s").is_some());
        assert_eq!(refusal("--scan"), None);
        let h = help();
        for (flag, _) in REFUSED {
            assert!(h.contains(flag), "{flag}");
        }
    }
}
