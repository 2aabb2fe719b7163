//! `--pipe`: mass insertion. Standard input holds commands in the Redis protocol (`*3\r\n$3\r\n
//! SET\r\n…`) or inline, one a line, as Redis reads them; they are sent in pipelines of up to
//! [`BATCH`] commands over the signed-in connection (which stays signed in however long it
//! takes). As redis-cli: each error reply is printed on stderr, then
//! `All data transferred. Waiting for the last reply...`, `Last reply received from server.` and
//! `errors: E, replies: R` on stdout; exit 1 if there was an error.

use std::process::ExitCode;
use std::time::Duration;

use redis::Value;
use tokio::io::AsyncReadExt as _;

use crate::session::{print_stdout, Connection};
use crate::Outcome;

/// Commands per pipeline.
pub const BATCH: usize = 1000;
/// Bytes of input held at most before a pipeline is sent (a single larger command is kept
/// whole, up to [`MAX_COMMAND`]).
const BUFFER: usize = 4 * 1024 * 1024;
/// The largest command accepted (Redis' own limit on a request is 512 MiB per string).
const MAX_COMMAND: usize = 512 * 1024 * 1024;

/// What the input at some point holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A command (its words), and the bytes it took.
    Command(Vec<Vec<u8>>, usize),
    /// Bytes to skip (an empty line).
    Skip(usize),
    /// More input is needed.
    Incomplete,
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| p + from)
}

fn number(bytes: &[u8], what: &str) -> Result<usize, String> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&n| n <= MAX_COMMAND)
        .ok_or_else(|| format!("ERR Protocol error: invalid {what}"))
}

/// Parses the command at the start of `buf`, as Redis reads its input.
pub fn parse(buf: &[u8], eof: bool) -> Result<Parsed, String> {
    let Some(&first) = buf.first() else {
        return Ok(Parsed::Incomplete);
    };
    if first != b'*' {
        // Inline: one line (ending with \n, the \r optional), split as redis-cli splits.
        let Some(end) = buf.iter().position(|&b| b == b'\n') else {
            return if eof {
                inline(buf, buf.len())
            } else if buf.len() > MAX_COMMAND {
                Err("ERR Protocol error: too big inline request".into())
            } else {
                Ok(Parsed::Incomplete)
            };
        };
        return inline(&buf[..end], end + 1);
    }
    let Some(line_end) = find_crlf(buf, 0) else {
        return Ok(Parsed::Incomplete);
    };
    let count = number(&buf[1..line_end], "multibulk length")?;
    let mut at = line_end + 2;
    let mut words = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        match buf.get(at) {
            None => return Ok(Parsed::Incomplete),
            Some(b'$') => {}
            Some(&other) => {
                return Err(format!(
                    "ERR Protocol error: expected '$', got '{}'",
                    other as char
                ))
            }
        }
        let Some(len_end) = find_crlf(buf, at) else {
            return Ok(Parsed::Incomplete);
        };
        let len = number(&buf[at + 1..len_end], "bulk length")?;
        let start = len_end + 2;
        if buf.len() < start + len + 2 {
            return Ok(Parsed::Incomplete);
        }
        words.push(buf[start..start + len].to_vec());
        at = start + len + 2;
    }
    if words.is_empty() {
        return Ok(Parsed::Skip(at));
    }
    Ok(Parsed::Command(words, at))
}

fn inline(line: &[u8], used: usize) -> Result<Parsed, String> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = String::from_utf8_lossy(line);
    let words = crate::split::split(&text)
        .map_err(|_| "ERR Protocol error: unbalanced quotes in request".to_string())?;
    if words.is_empty() {
        Ok(Parsed::Skip(used))
    } else {
        Ok(Parsed::Command(words, used))
    }
}

/// Counts of a run.
#[derive(Debug, Default)]
struct Counts {
    errors: u64,
    replies: u64,
}

async fn send(
    conn: &mut Connection,
    batch: &mut Vec<Vec<Vec<u8>>>,
    counts: &mut Counts,
    timeout: Option<Duration>,
) -> Result<bool, crate::Failure> {
    if batch.is_empty() {
        return Ok(true);
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for words in batch.drain(..) {
        let mut cmd = redis::cmd(&String::from_utf8_lossy(&words[0]));
        for w in &words[1..] {
            cmd.arg(w.as_slice());
        }
        pipe.add_command(cmd);
    }
    let query = pipe.query_async::<Vec<Value>>(conn);
    let replies = match timeout {
        Some(t) => match tokio::time::timeout(t, query).await {
            Ok(r) => r,
            Err(_) => {
                eprintln!("No replies for {} seconds: exiting.", t.as_secs());
                counts.errors += 1;
                return Ok(false);
            }
        },
        None => query.await,
    }?;
    for reply in replies {
        counts.replies += 1;
        if let Value::ServerError(e) = reply {
            counts.errors += 1;
            match e.details() {
                Some(d) if !d.is_empty() => eprintln!("{} {d}", e.code()),
                _ => eprintln!("{}", e.code()),
            }
        }
    }
    Ok(true)
}

/// Runs `--pipe` on `conn` with standard input; `timeout_secs` is `--pipe-timeout`.
pub async fn run(conn: &mut Connection, timeout_secs: u64) -> Outcome {
    let timeout = (timeout_secs > 0).then(|| Duration::from_secs(timeout_secs));
    let mut stdin = tokio::io::stdin();
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut batch: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut counts = Counts::default();
    let mut eof = false;
    let mut protocol_error = None;
    while !eof {
        let n = stdin
            .read(&mut chunk)
            .await
            .map_err(|e| anyhow::anyhow!("Error reading from stdin: {e}"))?;
        if n == 0 {
            eof = true;
        } else {
            buf.extend_from_slice(&chunk[..n]);
        }
        let mut used = 0;
        loop {
            match parse(&buf[used..], eof) {
                Ok(Parsed::Command(words, len)) => {
                    used += len;
                    batch.push(words);
                    if batch.len() >= BATCH {
                        // Replies come while the rest of the input is read.
                        if !send(conn, &mut batch, &mut counts, None).await? {
                            break;
                        }
                    }
                }
                Ok(Parsed::Skip(len)) => used += len,
                Ok(Parsed::Incomplete) => break,
                Err(e) => {
                    protocol_error = Some(e);
                    eof = true;
                    break;
                }
            }
        }
        buf.drain(..used);
        if protocol_error.is_some() {
            break;
        }
        if buf.len() > BUFFER + MAX_COMMAND {
            protocol_error = Some("ERR Protocol error: a command larger than 512 MiB".into());
            break;
        }
    }
    print_stdout("All data transferred. Waiting for the last reply...\n");
    let finished = send(conn, &mut batch, &mut counts, timeout).await?;
    if let Some(e) = protocol_error {
        // Redis answers a protocol error with an error reply and closes the connection.
        eprintln!("{e}");
        counts.errors += 1;
        counts.replies += 1;
    }
    if finished {
        print_stdout("Last reply received from server.\n");
    }
    print_stdout(&format!(
        "errors: {}, replies: {}\n",
        counts.errors, counts.replies
    ));
    Ok(ExitCode::from(if counts.errors > 0 { 1 } else { 0 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(p: Parsed) -> Vec<String> {
        match p {
            Parsed::Command(w, _) => w
                .into_iter()
                .map(|x| String::from_utf8(x).unwrap())
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn protocol_and_inline() {
        let resp = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\nrest";
        let p = parse(resp, false).unwrap();
        assert!(matches!(p, Parsed::Command(_, 28)), "{p:?}");
        assert_eq!(words(parse(resp, false).unwrap()), ["SET", "k", "v1"]);
        assert_eq!(parse(&resp[..20], false), Ok(Parsed::Incomplete));
        assert_eq!(
            words(parse(b"SET a \"b c\"\r\n", false).unwrap()),
            ["SET", "a", "b c"]
        );
        assert_eq!(words(parse(b"PING", true).unwrap()), ["PING"]);
        assert_eq!(parse(b"PING", false), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"\r\n", false), Ok(Parsed::Skip(2)));
        assert!(parse(b"*x\r\n", false).is_err());
        assert!(parse(b"*1\r\n:1\r\n", false).is_err());
    }
}
