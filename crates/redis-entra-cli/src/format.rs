//! Replies printed as redis-cli prints them: typed on a terminal, raw when piped or with
//! `--raw`, JSON with `--json`.
//!
//! JSON follows redis-cli 7's `--json`: strings (bulk, simple, verbatim) are JSON strings,
//! integers numbers, nil `null`, booleans `true`/`false`, arrays, sets and pushes arrays, maps
//! objects (a key that is not a string is written as the string of its JSON, e.g. `"1"`),
//! doubles numbers and big numbers their digits. Where redis-cli writes something that is not
//! JSON, this writes JSON instead:
//!
//! - an error reply nested in an array (EXEC, pipelines) is `{"error":"ERR …"}` where redis-cli
//!   writes `error:"ERR …"`; an error reply at the top is printed to stderr as `(error) ERR …`
//!   with nothing on stdout (exit code 0, or 1 with `-e`, as redis-cli), so stdout always parses;
//! - bytes that are not UTF-8 become U+FFFD where redis-cli copies them as they are;
//! - infinite and NaN doubles are the strings `"inf"`, `"-inf"`, `"nan"`.

use std::fmt::Write as _;

use redis::Value;

use crate::settings::Output;

/// Formats a reply in `output`'s format, ending with a newline (raw replies: with `-D`), as
/// text: bytes that are not UTF-8 become U+FFFD (see [`reply_bytes`] for the exact bytes).
pub fn reply(value: &Value, output: Output) -> String {
    String::from_utf8_lossy(&reply_bytes(value, output)).into_owned()
}

/// [`reply`] as bytes: raw replies keep a value's bytes as they are (`--raw GET` of binary
/// data, `-D "" --raw DUMP`), as redis-cli writes them.
pub fn reply_bytes(value: &Value, output: Output) -> Vec<u8> {
    match output {
        Output::Raw => {
            let mut out = Vec::new();
            write_raw(&mut out, value);
            out.extend_from_slice(reply_delimiter().as_bytes());
            out
        }
        Output::Typed => {
            let mut out = String::new();
            write_typed(&mut out, value, 0);
            out.into_bytes()
        }
        Output::Json => {
            let mut out = String::new();
            write_json(&mut out, value);
            out.push('\n');
            out.into_bytes()
        }
        Output::Csv => {
            let mut out = String::new();
            crate::csv::write(&mut out, value);
            out.push('\n');
            out.into_bytes()
        }
    }
}

/// `-d` and `-D`: what separates the elements of a raw reply, and what ends a raw reply
/// (both a newline unless given).
static DELIMITERS: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// Sets `-d` (between the elements of a raw reply) and `-D` (after each raw reply), once.
pub fn set_delimiters(element: Option<String>, reply: Option<String>) {
    let _ = DELIMITERS.set((
        element.unwrap_or_else(|| "\n".into()),
        reply.unwrap_or_else(|| "\n".into()),
    ));
}

fn element_delimiter() -> &'static str {
    DELIMITERS.get().map_or("\n", |(e, _)| e.as_str())
}

fn reply_delimiter() -> &'static str {
    DELIMITERS.get().map_or("\n", |(_, r)| r.as_str())
}

/// A reply printed as it is, as redis-cli prints the text replies of `INFO`, `CLIENT LIST`, …
/// ([`forces_raw`]) whatever the output format: raw, with nothing after it.
pub fn verbatim(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_raw(&mut out, value);
    out
}

/// A double as redis-cli shows it: `inf`, `-inf`, `nan`, or its shortest decimal form.
pub fn double(d: f64) -> String {
    if d.is_nan() {
        "nan".into()
    } else if d.is_infinite() {
        if d > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        d.to_string()
    }
}

/// Formats an error reply (`CODE detail`) as redis-cli does: `(error) CODE detail` on a
/// terminal, `CODE detail` and an empty line raw (redis-cli ends a raw error with a newline, then
/// ends the reply with another).
pub fn error(text: &str, output: Output) -> String {
    match output {
        Output::Raw => format!("{text}\n\n"),
        Output::Csv => format!("{}\n", crate::csv::error(text)),
        Output::Typed | Output::Json => format!("(error) {text}\n"),
    }
}

/// The text of a Redis error reply: `CODE detail`.
pub fn error_text(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) if !detail.is_empty() => format!("{code} {detail}"),
        (Some(code), _) => code.to_string(),
        _ => e.to_string(),
    }
}

/// Whether redis-cli prints this command's reply raw even on a terminal (`INFO`, `CLIENT
/// LIST`, `CLUSTER NODES`, … whose replies are text meant to be read as it is).
pub fn forces_raw(words: &[Vec<u8>]) -> bool {
    let word = |i: usize| {
        words
            .get(i)
            .map(|w| String::from_utf8_lossy(w).to_ascii_lowercase())
            .unwrap_or_default()
    };
    let (first, second) = (word(0), word(1));
    match first.as_str() {
        "info" | "lolwut" => true,
        "debug" => matches!(
            second.as_str(),
            "htstats" | "htstats-key" | "client-eviction"
        ),
        "memory" => matches!(second.as_str(), "malloc-stats" | "doctor"),
        "cluster" => words.len() == 2 && matches!(second.as_str(), "nodes" | "info"),
        "client" => matches!(second.as_str(), "list" | "info"),
        "latency" => {
            (words.len() == 3 && second == "graph") || (words.len() == 2 && second == "doctor")
        }
        _ => false,
    }
}

/// redis-cli's quoting of a string on a terminal (`sdscatrepr`).
pub fn quote(bytes: &[u8]) -> String {
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

fn server_error_text(e: &redis::ServerError) -> String {
    match e.details() {
        Some(d) if !d.is_empty() => format!("{} {d}", e.code()),
        _ => e.code().to_string(),
    }
}

/// redis-cli's raw form of a reply (`cliFormatReplyRaw`), without the newline that ends it:
/// the elements of an array, set or push joined by newlines, a map's pairs as `key value`
/// lines, nil as nothing, booleans `(true)`/`(false)`, an error with its own newline.
fn write_raw(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Nil => {}
        Value::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Value::BulkString(b) => out.extend_from_slice(b),
        Value::SimpleString(s) => out.extend_from_slice(s.as_bytes()),
        Value::Okay => out.extend_from_slice(b"OK"),
        Value::Double(d) => out.extend_from_slice(double(*d).as_bytes()),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"(true)" } else { b"(false)" }),
        Value::Array(items) | Value::Set(items) | Value::Push { data: items, .. } => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(element_delimiter().as_bytes());
                }
                write_raw(out, item);
            }
        }
        Value::Map(pairs) => {
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(element_delimiter().as_bytes());
                }
                write_raw(out, k);
                out.push(b' ');
                write_raw(out, v);
            }
        }
        Value::Attribute { data, .. } => write_raw(out, data),
        Value::VerbatimString { text, .. } => out.extend_from_slice(text.as_bytes()),
        Value::BigNumber(n) => out.extend_from_slice(n),
        Value::ServerError(e) => {
            out.extend_from_slice(server_error_text(e).as_bytes());
            out.push(b'\n');
        }
        _ => out.extend_from_slice(format!("{value:?}").as_bytes()),
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
        // redis-cli prints verbatim strings (INFO, LATENCY DOCTOR on RESP3) as they are.
        Value::VerbatimString { text, .. } => {
            out.push_str(text);
            if !text.ends_with('\n') {
                out.push('\n');
            }
        }
        Value::BigNumber(n) => {
            let _ = writeln!(out, "(big number) {}", String::from_utf8_lossy(n));
        }
        Value::ServerError(e) => {
            let _ = writeln!(out, "(error) {}", server_error_text(e));
        }
        Value::Array(items) | Value::Set(items) | Value::Push { data: items, .. } => {
            if items.is_empty() {
                out.push_str(match value {
                    Value::Set(_) => "(empty set)\n",
                    Value::Push { .. } => "(empty push)\n",
                    _ => "(empty array)\n",
                });
                return;
            }
            let sep = if matches!(value, Value::Set(_)) {
                '~'
            } else {
                ')'
            };
            let width = items.len().to_string().len();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&" ".repeat(indent));
                }
                let _ = write!(out, "{:>width$}{sep} ", i + 1);
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
                let mut key = String::new();
                write_typed(&mut key, k, indent + width + 2);
                let _ = write!(out, "{} => ", key.trim_end_matches('\n'));
                write_typed(out, v, indent + width + 2);
            }
        }
        Value::Attribute { data, .. } => write_typed(out, data, indent),
        _ => {
            let _ = writeln!(out, "{value:?}");
        }
    }
}

fn json_string(out: &mut String, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    // Serialising a string cannot fail.
    out.push_str(&serde_json::to_string(text.as_ref()).unwrap_or_else(|_| "\"\"".into()));
}

fn write_json(out: &mut String, value: &Value) {
    match value {
        Value::Nil => out.push_str("null"),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::BulkString(b) => json_string(out, b),
        Value::SimpleString(s) => json_string(out, s.as_bytes()),
        Value::Okay => out.push_str("\"OK\""),
        Value::Double(d) if d.is_nan() => out.push_str("\"nan\""),
        Value::Double(d) if d.is_infinite() => {
            out.push_str(if *d > 0.0 { "\"inf\"" } else { "\"-inf\"" })
        }
        Value::Double(d) => {
            let _ = write!(out, "{d}");
        }
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::VerbatimString { text, .. } => json_string(out, text.as_bytes()),
        Value::BigNumber(n) => {
            let digits = String::from_utf8_lossy(n);
            if !digits.is_empty()
                && digits
                    .trim_start_matches('-')
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            {
                out.push_str(&digits);
            } else {
                json_string(out, n);
            }
        }
        Value::ServerError(e) => {
            out.push_str("{\"error\":");
            json_string(out, server_error_text(e).as_bytes());
            out.push('}');
        }
        Value::Array(items) | Value::Set(items) | Value::Push { data: items, .. } => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item);
            }
            out.push(']');
        }
        Value::Map(pairs) => {
            out.push('{');
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let mut key = String::new();
                write_json(&mut key, k);
                if key.starts_with('"') {
                    out.push_str(&key);
                } else {
                    json_string(out, key.as_bytes());
                }
                out.push(':');
                write_json(out, v);
            }
            out.push('}');
        }
        Value::Attribute { data, .. } => write_json(out, data),
        _ => json_string(out, format!("{value:?}").as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn typed_like_redis_cli() {
        assert_eq!(reply(&Value::Nil, Output::Typed), "(nil)\n");
        assert_eq!(reply(&Value::Int(3), Output::Typed), "(integer) 3\n");
        assert_eq!(reply(&bulk("a\"b\n"), Output::Typed), "\"a\\\"b\\n\"\n");
        assert_eq!(reply(&Value::Okay, Output::Typed), "OK\n");
        let arr = Value::Array(vec![
            bulk("x"),
            Value::Array(vec![Value::Int(1), Value::Int(2)]),
        ]);
        assert_eq!(
            reply(&arr, Output::Typed),
            "1) \"x\"\n2) 1) (integer) 1\n   2) (integer) 2\n"
        );
        assert_eq!(reply(&arr, Output::Raw), "x\n1\n2\n");
        assert_eq!(
            reply(&Value::Array(vec![]), Output::Typed),
            "(empty array)\n"
        );
        let map = Value::Map(vec![(bulk("f"), bulk("v")), (bulk("g"), Value::Int(2))]);
        assert_eq!(
            reply(&map, Output::Typed),
            "1# \"f\" => \"v\"\n2# \"g\" => (integer) 2\n"
        );
        assert_eq!(
            reply(&Value::Set(vec![bulk("a")]), Output::Typed),
            "1~ \"a\"\n"
        );
    }

    #[test]
    fn json_like_redis_cli() {
        assert_eq!(reply(&bulk("1"), Output::Json), "\"1\"\n");
        assert_eq!(reply(&Value::Nil, Output::Json), "null\n");
        assert_eq!(reply(&Value::Int(2), Output::Json), "2\n");
        assert_eq!(reply(&Value::Okay, Output::Json), "\"OK\"\n");
        let arr = Value::Array(vec![bulk("x"), bulk("é\"y")]);
        assert_eq!(reply(&arr, Output::Json), "[\"x\",\"é\\\"y\"]\n");
        let map = Value::Map(vec![
            (bulk("f"), bulk("v")),
            (Value::Int(1), Value::Double(1.5)),
        ]);
        assert_eq!(reply(&map, Output::Json), "{\"f\":\"v\",\"1\":1.5}\n");
        let nested = redis::parse_redis_value(b"*2\r\n:1\r\n-ERR bad\r\n")
            .expect("a RESP array with an error");
        assert_eq!(
            reply(&nested, Output::Json),
            "[1,{\"error\":\"ERR bad\"}]\n"
        );
        // Whatever the error, it is an object, so the document parses.
        let text = reply(&nested, Output::Json);
        assert!(
            serde_json::from_str::<serde_json::Value>(&text).is_ok(),
            "{text}"
        );
        assert_eq!(reply(&Value::Boolean(true), Output::Json), "true\n");
        assert_eq!(
            reply(&Value::BulkString(vec![b'a', 0xff]), Output::Json),
            "\"a\u{fffd}\"\n"
        );
    }

    #[test]
    fn info_prints_raw() {
        let w = |s: &str| {
            s.split(' ')
                .map(|x| x.as_bytes().to_vec())
                .collect::<Vec<_>>()
        };
        assert!(forces_raw(&w("INFO")));
        assert!(forces_raw(&w("client list")));
        assert!(!forces_raw(&w("GET info")));
    }
}
