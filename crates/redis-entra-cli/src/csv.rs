//! `--csv`: replies as redis-cli 7 writes them in CSV.
//!
//! Strings (bulk, simple, verbatim) are quoted as on a terminal (`"a\"b"`, `\n`, `\xff`),
//! integers and doubles bare, nil `NULL`, booleans `true`/`false`, an error `ERROR,"ERR …"`;
//! arrays, sets, pushes and maps (CSV has no map: keys and values in a row) are their elements
//! joined by commas, flattened. Each reply ends with a newline.

use std::fmt::Write as _;

use redis::Value;

use crate::format::quote;

/// Writes `value` as a CSV row (without the newline).
pub fn write(out: &mut String, value: &Value) {
    match value {
        Value::Nil => out.push_str("NULL"),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::BulkString(b) => out.push_str(&quote(b)),
        Value::SimpleString(s) => out.push_str(&quote(s.as_bytes())),
        Value::Okay => out.push_str(&quote(b"OK")),
        Value::Double(d) => out.push_str(&crate::format::double(*d)),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::VerbatimString { text, .. } => out.push_str(&quote(text.as_bytes())),
        Value::BigNumber(n) => out.push_str(&String::from_utf8_lossy(n)),
        Value::ServerError(e) => {
            let text = match e.details() {
                Some(d) if !d.is_empty() => format!("{} {d}", e.code()),
                _ => e.code().to_string(),
            };
            out.push_str(&error(&text));
        }
        Value::Array(items) | Value::Set(items) | Value::Push { data: items, .. } => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(out, item);
            }
        }
        Value::Map(pairs) => {
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(out, k);
                out.push(',');
                write(out, v);
            }
        }
        Value::Attribute { data, .. } => write(out, data),
        other => out.push_str(&quote(format!("{other:?}").as_bytes())),
    }
}

/// An error reply in CSV: `ERROR,"CODE detail"`.
pub fn error(text: &str) -> String {
    format!("ERROR,{}", quote(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(v: &Value) -> String {
        let mut s = String::new();
        write(&mut s, v);
        s
    }

    #[test]
    fn rows_like_redis_cli() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert_eq!(csv(&Value::Nil), "NULL");
        assert_eq!(csv(&Value::Int(-3)), "-3");
        assert_eq!(csv(&bulk("a\"b,c\n")), "\"a\\\"b,c\\n\"");
        assert_eq!(csv(&Value::Okay), "\"OK\"");
        assert_eq!(
            csv(&Value::Array(vec![bulk("x"), Value::Int(1), Value::Nil])),
            "\"x\",1,NULL"
        );
        assert_eq!(
            csv(&Value::Map(vec![
                (bulk("f"), bulk("v")),
                (bulk("g"), Value::Int(2))
            ])),
            "\"f\",\"v\",\"g\",2"
        );
        assert_eq!(csv(&Value::Array(vec![])), "");
        assert_eq!(error("ERR bad"), "ERROR,\"ERR bad\"");
        assert_eq!(csv(&Value::Boolean(false)), "false");
    }
}
