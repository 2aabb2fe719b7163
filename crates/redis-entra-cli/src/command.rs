//! `redis-entra COMMAND [ARG...]`: one command, printed as redis-cli prints it.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::process::ExitCode;

use redis::Value;
use redis_entra::credential::{from_env, FromEnvOptions};
use redis_entra::{EntraConnection, TokenManager, TokenManagerOptions};

use crate::settings::ConnectionArgs;
use crate::Outcome;

/// Runs one command.
pub async fn run(connection: &ConnectionArgs, words: Vec<String>) -> Outcome {
    let options = connection.connect_options()?;
    let credential = from_env(&FromEnvOptions {
        tls: options.tls.clone(),
    })?;
    let manager = TokenManager::new(credential, TokenManagerOptions::default());
    let mut conn = EntraConnection::connect(options, manager).await?;
    let Some((name, args)) = words.split_first() else {
        return Err(anyhow::anyhow!("no command given").into());
    };
    let mut cmd = redis::cmd(name);
    for a in args {
        cmd.arg(a);
    }
    let raw = connection.raw || !std::io::stdout().is_terminal();
    match cmd.query_async::<Value>(&mut conn).await {
        Ok(value) => {
            print!("{}", format_reply(&value, raw));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.code().is_some() => {
            let detail = e.detail().unwrap_or_default();
            let code = e.code().unwrap_or_default();
            if raw {
                println!("{code} {detail}");
            } else {
                println!("(error) {code} {detail}");
            }
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(anyhow::Error::new(e).into()),
    }
}

/// Formats a reply as redis-cli does: typed with quotes on a terminal, plain with `--raw`.
pub fn format_reply(value: &Value, raw: bool) -> String {
    let mut out = String::new();
    if raw {
        write_raw(&mut out, value);
    } else {
        write_typed(&mut out, value, 0);
    }
    out
}

fn quote(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for &b in bytes {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x07 => s.push_str("\\a"),
            0x08 => s.push_str("\\b"),
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s.push('"');
    s
}

fn write_raw(out: &mut String, value: &Value) {
    match value {
        Value::Nil => out.push('\n'),
        Value::Int(i) => {
            let _ = writeln!(out, "{i}");
        }
        Value::BulkString(b) => {
            out.push_str(&String::from_utf8_lossy(b));
            out.push('\n');
        }
        Value::SimpleString(s) => {
            let _ = writeln!(out, "{s}");
        }
        Value::Okay => out.push_str("OK\n"),
        Value::Double(d) => {
            let _ = writeln!(out, "{d}");
        }
        Value::Boolean(b) => {
            let _ = writeln!(out, "{}", if *b { 1 } else { 0 });
        }
        Value::Array(items) | Value::Set(items) => items.iter().for_each(|v| write_raw(out, v)),
        Value::Push { data, .. } => data.iter().for_each(|v| write_raw(out, v)),
        Value::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            write_raw(out, k);
            write_raw(out, v);
        }),
        Value::Attribute { data, .. } => write_raw(out, data),
        Value::VerbatimString { text, .. } => {
            let _ = writeln!(out, "{text}");
        }
        Value::BigNumber(n) => {
            let _ = writeln!(out, "{}", String::from_utf8_lossy(n));
        }
        Value::ServerError(e) => {
            let _ = writeln!(out, "{}", e.details().unwrap_or_default());
        }
        _ => {
            let _ = writeln!(out, "{value:?}");
        }
    }
}

fn write_typed(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Nil => out.push_str("(nil)\n"),
        Value::Int(i) => {
            let _ = writeln!(out, "(integer) {i}");
        }
        Value::BulkString(b) => {
            let _ = writeln!(out, "{}", quote(b));
        }
        Value::SimpleString(s) => {
            let _ = writeln!(out, "{s}");
        }
        Value::Okay => out.push_str("OK\n"),
        Value::Double(d) => {
            let _ = writeln!(out, "(double) {d}");
        }
        Value::Boolean(b) => {
            let _ = writeln!(out, "({b})");
        }
        Value::VerbatimString { text, .. } => {
            let _ = writeln!(out, "{}", quote(text.as_bytes()));
        }
        Value::BigNumber(n) => {
            let _ = writeln!(out, "(big number) {}", String::from_utf8_lossy(n));
        }
        Value::ServerError(e) => {
            let _ = writeln!(
                out,
                "(error) {} {}",
                e.code(),
                e.details().unwrap_or_default()
            );
        }
        Value::Array(items) | Value::Set(items) | Value::Push { data: items, .. } => {
            if items.is_empty() {
                out.push_str(if matches!(value, Value::Set(_)) {
                    "(empty set)\n"
                } else {
                    "(empty array)\n"
                });
                return;
            }
            let width = items.len().to_string().len();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&" ".repeat(indent));
                }
                let _ = write!(out, "{:>width$}) ", i + 1);
                write_typed(out, item, indent + width + 2);
            }
        }
        Value::Map(pairs) => {
            if pairs.is_empty() {
                out.push_str("(empty hash)\n");
                return;
            }
            let width = pairs.len().to_string().len();
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push_str(&" ".repeat(indent));
                }
                let _ = write!(out, "{:>width$}# ", i + 1);
                let key = format_reply(k, false);
                let _ = write!(out, "{} => ", key.trim_end());
                write_typed(out, v, indent + width + 2);
            }
        }
        Value::Attribute { data, .. } => write_typed(out, data, indent),
        _ => {
            let _ = writeln!(out, "{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_redis_cli() {
        assert_eq!(format_reply(&Value::Nil, false), "(nil)\n");
        assert_eq!(format_reply(&Value::Int(3), false), "(integer) 3\n");
        assert_eq!(
            format_reply(&Value::BulkString(b"a\"b\n".to_vec()), false),
            "\"a\\\"b\\n\"\n"
        );
        assert_eq!(format_reply(&Value::Okay, false), "OK\n");
        let arr = Value::Array(vec![
            Value::BulkString(b"x".to_vec()),
            Value::Array(vec![Value::Int(1), Value::Int(2)]),
        ]);
        assert_eq!(
            format_reply(&arr, false),
            "1) \"x\"\n2) 1) (integer) 1\n   2) (integer) 2\n"
        );
        assert_eq!(format_reply(&arr, true), "x\n1\n2\n");
        assert_eq!(
            format_reply(&Value::Array(vec![]), false),
            "(empty array)\n"
        );
    }
}
