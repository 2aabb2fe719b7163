//! `--stat`: a line of figures from `INFO` every `-i` seconds (default 1), with redis-cli 7's
//! header every 20 lines, until Ctrl-C: keys (all databases), memory, clients, blocked clients,
//! commands processed (and the difference from the line before), connections received, and a
//! child at work (SAVE, AOF, LOAD).

use std::time::Duration;

use redis::Value;

use crate::session::{self, print_stdout, Connection};
use crate::Outcome;

const HEADER: &str =
    "------- data ------ --------------------- load -------------------- - child -\n\
keys       mem      clients blocked requests            connections          \n";

/// A field of INFO's text found as redis-cli finds it: the first place `name` occurs, then the
/// value after the following `:` or `=`, up to `\r` or `,`.
pub fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    let at = info.find(name)? + name.len() + 1;
    let rest = info.get(at..)?;
    let end = rest.find(['\r', ',']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// A numeric field (C's `strtol`: leading digits; 0 if none), `None` if absent.
fn long(info: &str, name: &str) -> Option<i64> {
    let v = field(info, name)?;
    let v = v.trim_start();
    let (neg, digits) = match v.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, v),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    let n = digits[..end.min(18)].parse::<i64>().unwrap_or(0);
    Some(if neg { -n } else { n })
}

/// Bytes as redis-cli shows them: `100B`, `4.00K`, `2.50M`, `1.00G`.
pub fn bytes_to_human(n: i64) -> String {
    let (sign, n) = if n < 0 {
        ("-", n.unsigned_abs())
    } else {
        ("", n as u64)
    };
    let d = n as f64;
    let text = if n < 1024 {
        format!("{n}B")
    } else if n < 1024 * 1024 {
        format!("{:.2}K", d / 1024.0)
    } else if n < 1024 * 1024 * 1024 {
        format!("{:.2}M", d / (1024.0 * 1024.0))
    } else {
        format!("{:.2}G", d / (1024.0 * 1024.0 * 1024.0))
    };
    format!("{sign}{text}")
}

/// One line of `--stat` from INFO's text; `previous` is the last commands count (0 at first).
pub fn line(info: &str, previous: i64) -> (String, i64) {
    let keys: i64 = (0..20)
        .filter_map(|db| long(info, &format!("db{db}:keys")))
        .sum();
    // A field missing is C's LONG_MIN, as redis-cli prints it.
    let get = |name: &str| long(info, name).unwrap_or(i64::MIN);
    let requests = get("total_commands_processed");
    let delta = if previous == 0 {
        0
    } else {
        requests.wrapping_sub(previous)
    };
    let mut out = format!("{:<11}", keys.to_string());
    out.push_str(&format!("{:<8}", bytes_to_human(get("used_memory"))));
    out.push_str(&format!(" {:<8}", get("connected_clients")));
    out.push_str(&format!("{:<8}", get("blocked_clients")));
    out.push_str(&format!("{:<19}", format!("{requests} (+{delta})")));
    out.push_str(&format!(" {:<12}", get("total_connections_received")));
    let child =
        get("bgsave_in_progress") | (get("aof_rewrite_in_progress") << 1) | (get("loading") << 2);
    out.push_str(match child {
        1 => "SAVE",
        2 => "AOF",
        3 => "SAVE+AOF",
        4 => "LOAD",
        _ => "",
    });
    out.push('\n');
    (out, requests)
}

/// Runs `--stat` on `conn`, pausing `interval` (default 1 s) between lines.
pub async fn run(conn: &mut Connection, interval: Option<Duration>) -> Outcome {
    let pause = interval.unwrap_or(Duration::from_secs(1));
    let mut previous = 0;
    let mut lines: u64 = 0;
    loop {
        let info = match session::execute(conn, &[b"INFO".to_vec()]).await {
            Ok(Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
            Ok(Value::VerbatimString { text, .. }) => text,
            Ok(other) => format!("{other:?}"),
            Err(e) if e.code().is_some() => {
                eprintln!("ERROR: {}", crate::format::error_text(&e));
                return Ok(std::process::ExitCode::from(crate::exit::ERROR_REPLY));
            }
            Err(e) => {
                eprintln!("\nI/O error");
                return Err(e.into());
            }
        };
        if lines.is_multiple_of(20) {
            print_stdout(HEADER);
        }
        lines += 1;
        let (text, requests) = line(&info, previous);
        previous = requests;
        print_stdout(&text);
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_like_redis_cli() {
        let info = "# Memory\r\nused_memory:1048576\r\nconnected_clients:3\r\nblocked_clients:0\r\ntotal_commands_processed:120\r\ntotal_connections_received:9\r\nloading:0\r\nasync_loading:0\r\nbgsave_in_progress:0\r\naof_rewrite_in_progress:0\r\n# Keyspace\r\ndb0:keys=5,expires=0\r\ndb2:keys=2,expires=1\r\n";
        let (text, req) = line(info, 100);
        assert_eq!(req, 120);
        assert_eq!(
            text,
            "7          1.00M    3       0       120 (+20)           9           \n"
        );
        assert!(line(info, 0).0.contains("120 (+0)"));
        assert_eq!(bytes_to_human(100), "100B");
        assert_eq!(bytes_to_human(4096), "4.00K");
        assert_eq!(field("a:1,b", "a"), Some("1"));
    }
}
