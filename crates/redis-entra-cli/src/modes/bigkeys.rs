//! `--bigkeys` and `--memkeys`: SCAN the keyspace, ask each key's TYPE and its size (STRLEN,
//! LLEN, SCARD, HLEN, ZCARD, XLEN; with `--memkeys`, MEMORY USAGE), and print the biggest key
//! of each type as it is found and a summary, in redis-cli 7's words. `-i` pauses every 100
//! SCAN calls; `--pattern` and `--count` apply to the SCAN.

use std::process::ExitCode;

use redis::Value;

use crate::format::quote;
use crate::modes::ModeArgs;
use crate::session::{print_stdout, Connection};
use crate::Outcome;

/// What is known of one type.
#[derive(Debug, Clone)]
struct TypeInfo {
    name: String,
    size_command: Option<&'static str>,
    unit: &'static str,
    biggest: u64,
    count: u64,
    total: u64,
    biggest_key: Option<String>,
}

impl TypeInfo {
    fn new(name: &str, size_command: Option<&'static str>, unit: &'static str) -> Self {
        Self {
            name: name.to_string(),
            size_command,
            unit,
            biggest: 0,
            count: 0,
            total: 0,
            biggest_key: None,
        }
    }
}

fn known_types() -> Vec<TypeInfo> {
    vec![
        TypeInfo::new("string", Some("STRLEN"), "bytes"),
        TypeInfo::new("list", Some("LLEN"), "items"),
        TypeInfo::new("set", Some("SCARD"), "members"),
        TypeInfo::new("hash", Some("HLEN"), "fields"),
        TypeInfo::new("zset", Some("ZCARD"), "members"),
        TypeInfo::new("stream", Some("XLEN"), "entries"),
    ]
}

fn fail(message: String) -> Outcome {
    eprintln!("{message}");
    Ok(ExitCode::from(crate::exit::ERROR_REPLY))
}

async fn query(
    conn: &mut Connection,
    commands: Vec<Vec<Vec<u8>>>,
) -> redis::RedisResult<Vec<Value>> {
    if commands.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for words in commands {
        let mut cmd = redis::cmd(&String::from_utf8_lossy(&words[0]));
        for w in &words[1..] {
            cmd.arg(w.as_slice());
        }
        pipe.add_command(cmd);
    }
    pipe.query_async::<Vec<Value>>(conn).await
}

/// Runs `--bigkeys` (or, with `memkeys`, `--memkeys`) on `conn`.
pub async fn run(
    conn: &mut Connection,
    modes: &ModeArgs,
    memkeys: bool,
    interval: Option<std::time::Duration>,
) -> Outcome {
    let total_keys = match crate::session::execute(conn, &[b"DBSIZE".to_vec()]).await {
        Ok(Value::Int(n)) => n.max(0) as u64,
        Ok(_) => return fail("Non INTEGER response from DBSIZE!".into()),
        Err(e) if e.code().is_some() => {
            return fail(format!(
                "Couldn't determine DBSIZE: {}",
                crate::format::error_text(&e)
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let mut types = known_types();
    print_stdout(
        "\n# Scanning the entire keyspace to find biggest keys as well as\n\
         # average sizes per key type.  You can use -i 0.1 to sleep 0.1 sec\n\
         # per 100 SCAN commands (not usually needed).\n\n",
    );
    let (mut sampled, mut total_len, mut loops) = (0u64, 0u64, 0u64);
    let mut cursor = b"0".to_vec();
    loop {
        let pct = 100.0 * sampled as f64 / total_keys as f64;
        let words = crate::modes::scan::scan_words(&cursor, modes);
        let (next, keys) = match crate::session::execute(conn, &words).await {
            Ok(v) => match crate::modes::scan::parse(v) {
                Ok(parsed) => parsed,
                Err(message) => return fail(message),
            },
            Err(e) if e.code().is_some() => {
                return fail(format!("SCAN error: {}", crate::format::error_text(&e)))
            }
            Err(e) => return Err(e.into()),
        };
        loops += 1;
        let kinds = query(
            conn,
            keys.iter()
                .map(|k| vec![b"TYPE".to_vec(), k.clone()])
                .collect(),
        )
        .await?;
        let mut slots: Vec<Option<usize>> = Vec::with_capacity(keys.len());
        for kind in kinds {
            let name = match kind {
                Value::SimpleString(s) => s,
                Value::Okay => "OK".into(),
                Value::ServerError(e) => {
                    return fail(format!(
                        "TYPE returned an error: {}",
                        e.details()
                            .map_or(e.code().to_string(), |d| format!("{} {d}", e.code()))
                    ))
                }
                other => return fail(format!("Invalid reply type ({other:?}) for TYPE")),
            };
            let slot = match types.iter().position(|t| t.name == name) {
                Some(i) => Some(i),
                None if name == "none" => None, // deleted since the SCAN
                None => {
                    types.push(TypeInfo::new(&name, None, "?"));
                    Some(types.len() - 1)
                }
            };
            slots.push(slot);
        }
        let wanted: Vec<usize> = (0..keys.len())
            .filter(|&i| slots[i].is_some_and(|t| memkeys || types[t].size_command.is_some()))
            .collect();
        let commands = wanted
            .iter()
            .map(|&i| {
                let key = keys[i].clone();
                match (memkeys, modes.memkeys_samples) {
                    (false, _) => vec![
                        types[slots[i].unwrap_or_default()]
                            .size_command
                            .unwrap_or("STRLEN")
                            .as_bytes()
                            .to_vec(),
                        key,
                    ],
                    (true, None) => vec![b"MEMORY".to_vec(), b"USAGE".to_vec(), key],
                    (true, Some(n)) => vec![
                        b"MEMORY".to_vec(),
                        b"USAGE".to_vec(),
                        key,
                        b"SAMPLES".to_vec(),
                        n.to_string().into_bytes(),
                    ],
                }
            })
            .collect();
        let replies = query(conn, commands).await?;
        let mut sizes = vec![0u64; keys.len()];
        for (&i, reply) in wanted.iter().zip(replies) {
            match reply {
                Value::Int(n) => sizes[i] = n.max(0) as u64,
                _ => eprintln!(
                    "Warning:  {} on '{}' failed (may have changed type)",
                    if memkeys {
                        "MEMORY USAGE"
                    } else {
                        slots[i].and_then(|t| types[t].size_command).unwrap_or("?")
                    },
                    String::from_utf8_lossy(&keys[i])
                ),
            }
        }
        let mut out = String::new();
        for (i, key) in keys.iter().enumerate() {
            let Some(t) = slots[i] else { continue };
            let info = &mut types[t];
            info.total += sizes[i];
            info.count += 1;
            total_len += key.len() as u64;
            sampled += 1;
            if info.biggest < sizes[i] {
                let shown = quote(key);
                out.push_str(&format!(
                    "[{pct:05.2}%] Biggest {:<6} found so far '{shown}' with {} {}\n",
                    info.name,
                    sizes[i],
                    if memkeys { "bytes" } else { info.unit }
                ));
                info.biggest_key = Some(shown);
                info.biggest = sizes[i];
            }
            if sampled.is_multiple_of(1_000_000) {
                out.push_str(&format!("[{pct:05.2}%] Sampled {sampled} keys so far\n"));
            }
        }
        print_stdout(&out);
        if let Some(pause) = interval.filter(|_| loops.is_multiple_of(100)) {
            tokio::time::sleep(pause).await;
        }
        if next == b"0" {
            break;
        }
        cursor = next;
    }
    print_stdout(&summary(&types, sampled, total_len, memkeys));
    Ok(ExitCode::SUCCESS)
}

fn summary(types: &[TypeInfo], sampled: u64, total_len: u64, memkeys: bool) -> String {
    let mut out = String::from("\n-------- summary -------\n\n");
    out.push_str(&format!("Sampled {sampled} keys in the keyspace!\n"));
    let avg = if total_len > 0 {
        total_len as f64 / sampled as f64
    } else {
        0.0
    };
    out.push_str(&format!(
        "Total key length in bytes is {total_len} (avg len {avg:.2})\n\n"
    ));
    let unit = |t: &TypeInfo| if memkeys { "bytes" } else { t.unit };
    for t in types {
        if let Some(key) = &t.biggest_key {
            out.push_str(&format!(
                "Biggest {:>6} found '{key}' has {} {}\n",
                t.name,
                t.biggest,
                unit(t)
            ));
        }
    }
    out.push('\n');
    for t in types {
        let share = if sampled > 0 {
            100.0 * t.count as f64 / sampled as f64
        } else {
            0.0
        };
        let avg = if t.count > 0 {
            t.total as f64 / t.count as f64
        } else {
            0.0
        };
        out.push_str(&format!(
            "{} {}s with {} {} ({share:05.2}% of keys, avg size {avg:.2})\n",
            t.count,
            t.name,
            t.total,
            unit(t)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_like_redis_cli() {
        let mut types = known_types();
        types[0].count = 3;
        types[0].total = 10;
        types[0].biggest = 5;
        types[0].biggest_key = Some("\"k\"".into());
        let s = summary(&types, 3, 6, false);
        assert!(s.contains("Sampled 3 keys in the keyspace!\n"));
        assert!(s.contains("Total key length in bytes is 6 (avg len 2.00)\n"));
        assert!(s.contains("Biggest string found '\"k\"' has 5 bytes\n"));
        assert!(s.contains("3 strings with 10 bytes (100.00% of keys, avg size 3.33)\n"));
        assert!(s.contains("0 lists with 0 items (00.00% of keys, avg size 0.00)\n"));
    }
}
