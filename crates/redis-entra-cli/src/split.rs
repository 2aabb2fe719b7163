//! Splitting a typed line into arguments as redis-cli does (`sdssplitargs`).
//!
//! - arguments are separated by spaces, tabs and newlines;
//! - `"double quotes"` take the escapes `\n \r \t \b \a \\ \"` and `\xHH` (any byte);
//! - `'single quotes'` take `\'` only;
//! - a closing quote must be followed by a space or the end of the line.

/// Why a line could not be split (redis-cli says "Invalid argument(s)").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitError(pub &'static str);

impl std::fmt::Display for SplitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Invalid argument(s): {}", self.0)
    }
}

impl std::error::Error for SplitError {}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Splits `line` into arguments (bytes, since `\xHH` can make any byte).
pub fn split(line: &str) -> Result<Vec<Vec<u8>>, SplitError> {
    let p = line.as_bytes();
    let mut i = 0;
    let mut args = Vec::new();
    loop {
        while i < p.len() && p[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= p.len() {
            return Ok(args);
        }
        let mut current = Vec::new();
        let (mut in_double, mut in_single) = (false, false);
        loop {
            let c = p.get(i).copied();
            if in_double {
                match c {
                    None => return Err(SplitError("unbalanced double quotes")),
                    Some(b'\\') if p.get(i + 1) == Some(&b'x') => {
                        match (
                            p.get(i + 2).and_then(|&b| hex(b)),
                            p.get(i + 3).and_then(|&b| hex(b)),
                        ) {
                            (Some(h), Some(l)) => {
                                current.push(h * 16 + l);
                                i += 3;
                            }
                            _ => {
                                current.push(b'x');
                                i += 1;
                            }
                        }
                    }
                    Some(b'\\') if i + 1 < p.len() => {
                        i += 1;
                        current.push(match p[i] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                    }
                    Some(b'"') => {
                        if p.get(i + 1).is_some_and(|b| !b.is_ascii_whitespace()) {
                            return Err(SplitError("a closing quote must be followed by a space"));
                        }
                        i += 1;
                        break;
                    }
                    Some(b) => current.push(b),
                }
            } else if in_single {
                match c {
                    None => return Err(SplitError("unbalanced single quotes")),
                    Some(b'\\') if p.get(i + 1) == Some(&b'\'') => {
                        i += 1;
                        current.push(b'\'');
                    }
                    Some(b'\'') => {
                        if p.get(i + 1).is_some_and(|b| !b.is_ascii_whitespace()) {
                            return Err(SplitError("a closing quote must be followed by a space"));
                        }
                        i += 1;
                        break;
                    }
                    Some(b) => current.push(b),
                }
            } else {
                match c {
                    None => break,
                    Some(b) if b.is_ascii_whitespace() => break,
                    Some(b'"') => in_double = true,
                    Some(b'\'') => in_single = true,
                    Some(b) => current.push(b),
                }
            }
            i += 1;
        }
        args.push(current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(line: &str) -> Vec<String> {
        split(line)
            .unwrap()
            .into_iter()
            .map(|a| String::from_utf8_lossy(&a).into_owned())
            .collect()
    }

    #[test]
    fn splits_like_redis_cli() {
        assert_eq!(s("  SET  a 1 "), ["SET", "a", "1"]);
        assert_eq!(s(r#"SET "a b" 'c d'"#), ["SET", "a b", "c d"]);
        assert_eq!(s(r#"SET k "\x41\x42\n""#), ["SET", "k", "AB\n"]);
        assert_eq!(s(r#"SET k 'it\'s'"#), ["SET", "k", "it's"]);
        assert_eq!(s(r#"SET k 'no\nescape'"#), ["SET", "k", "no\\nescape"]);
        assert_eq!(s(r#"SET k """#), ["SET", "k", ""]);
        assert_eq!(s("GET a\"b\""), ["GET", "ab"]);
        assert_eq!(split(r#"SET "x\xff""#).unwrap()[1], vec![b'x', 0xff]);
        assert!(s("").is_empty());
    }

    #[test]
    fn refuses_what_redis_cli_refuses() {
        assert!(split(r#"SET "a"b"#).is_err());
        assert!(split(r#"SET "unterminated"#).is_err());
        assert!(split("SET 'unterminated").is_err());
    }
}
