//! `--scan [--pattern P] [--count N] [--type T]`: every key SCAN returns, one a line, as
//! redis-cli 7 prints them: quoted (`"key"`) on a terminal or with `--no-raw`, else as they
//! are. `-i` pauses between SCAN calls. An error reply ends it: `SCAN error: …` on stderr,
//! exit 1.

use std::process::ExitCode;

use redis::Value;

use crate::format::quote;
use crate::modes::ModeArgs;
use crate::session::{self, Connection};
use crate::settings::{ConnectionArgs, Output};
use crate::Outcome;

/// One SCAN call's command.
pub fn scan_words(cursor: &[u8], modes: &ModeArgs) -> Vec<Vec<u8>> {
    let mut words = vec![b"SCAN".to_vec(), cursor.to_vec()];
    if let Ok(Some(pattern)) = modes.pattern() {
        words.extend([b"MATCH".to_vec(), pattern]);
    }
    if let Some(count) = modes.count {
        words.extend([b"COUNT".to_vec(), count.to_string().into_bytes()]);
    }
    if let Some(t) = &modes.key_type {
        words.extend([b"TYPE".to_vec(), t.as_bytes().to_vec()]);
    }
    words
}

/// A SCAN reply's cursor and keys.
pub fn parse(value: Value) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
    let Value::Array(mut parts) = value else {
        return Err("Non ARRAY response from SCAN!".into());
    };
    if parts.len() != 2 {
        return Err("Invalid element count from SCAN!".into());
    }
    let keys = parts.pop();
    let cursor = parts.pop();
    match (cursor, keys) {
        (Some(Value::BulkString(cursor)), Some(Value::Array(keys))) => {
            let keys = keys
                .into_iter()
                .map(|k| match k {
                    Value::BulkString(b) => Ok(b),
                    Value::SimpleString(s) => Ok(s.into_bytes()),
                    _ => Err("a key in SCAN's reply is not a string".to_string()),
                })
                .collect::<Result<_, _>>()?;
            Ok((cursor, keys))
        }
        _ => Err("SCAN's reply is not a cursor and a list of keys".into()),
    }
}

/// Runs `--scan` on `conn`.
pub async fn run(conn: &mut Connection, args: &ConnectionArgs, modes: &ModeArgs) -> Outcome {
    let quoted = args.output() == Output::Typed;
    let pause = crate::command::interval(args.interval);
    let mut cursor = b"0".to_vec();
    loop {
        let reply = session::execute(conn, &scan_words(&cursor, modes)).await;
        let (next, keys) = match reply {
            Ok(value) => match parse(value) {
                Ok(parsed) => parsed,
                Err(message) => {
                    eprintln!("{message}");
                    return Ok(ExitCode::from(crate::exit::ERROR_REPLY));
                }
            },
            Err(e) if e.code().is_some() && !crate::exit::is_auth_refusal(&e) => {
                eprintln!("SCAN error: {}", crate::format::error_text(&e));
                return Ok(ExitCode::from(crate::exit::ERROR_REPLY));
            }
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::with_capacity(keys.len() * 16);
        for key in keys {
            if quoted {
                out.extend_from_slice(quote(&key).as_bytes());
            } else {
                // redis-cli prints a key with printf("%s"): up to its first NUL byte.
                let end = key.iter().position(|&b| b == 0).unwrap_or(key.len());
                out.extend_from_slice(&key[..end]);
            }
            out.push(b'\n');
        }
        session::print_stdout_bytes(&out);
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
        if next == b"0" {
            return Ok(ExitCode::SUCCESS);
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_commands() {
        let mut m = ModeArgs::default();
        assert_eq!(scan_words(b"0", &m), vec![b"SCAN".to_vec(), b"0".to_vec()]);
        m.pattern = Some("a*".into());
        m.count = Some(100);
        m.key_type = Some("hash".into());
        let words: Vec<String> = scan_words(b"17", &m)
            .into_iter()
            .map(|w| String::from_utf8(w).unwrap())
            .collect();
        assert_eq!(
            words,
            ["SCAN", "17", "MATCH", "a*", "COUNT", "100", "TYPE", "hash"]
        );
    }

    #[test]
    fn replies() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let ok = Value::Array(vec![bulk("5"), Value::Array(vec![bulk("k")])]);
        assert_eq!(parse(ok), Ok((b"5".to_vec(), vec![b"k".to_vec()])));
        assert!(parse(Value::Int(1)).is_err());
        assert!(parse(Value::Array(vec![bulk("0")])).is_err());
    }
}
