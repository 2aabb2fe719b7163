//! `--eval FILE key1 key2 , arg1 arg2`: `EVAL <the file> 2 key1 key2 arg1 arg2`, printed and
//! repeated (`-r`, `-i`) as a command is. As redis-cli, the first lone `,` separates the keys
//! from the arguments, and a file that cannot be read is `Can't open file '…': …` on stderr,
//! exit 1.

use std::path::Path;

/// The largest script read (Redis' own limit on a string).
const MAX_SCRIPT: u64 = 512 * 1024 * 1024;

/// Why a file cannot be read, in the C library's words (`No such file or directory`).
fn reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Reads the script; on failure, redis-cli's message.
pub fn read_script(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let cant = |e: &std::io::Error| format!("Can't open file '{}': {}", path.display(), reason(e));
    let file = std::fs::File::open(path).map_err(|e| cant(&e))?;
    let mut script = Vec::new();
    file.take(MAX_SCRIPT)
        .read_to_end(&mut script)
        .map_err(|e| cant(&e))?;
    Ok(script)
}

/// The EVAL command for `script` and the words after the file.
pub fn eval_words(script: Vec<u8>, words: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let comma = words.iter().position(|w| w == b",");
    let (keys, args): (&[Vec<u8>], &[Vec<u8>]) = match comma {
        Some(i) => (&words[..i], &words[i + 1..]),
        None => (words, &[]),
    };
    let mut out = Vec::with_capacity(words.len() + 3);
    out.push(b"EVAL".to_vec());
    out.push(script);
    out.push(keys.len().to_string().into_bytes());
    out.extend(keys.iter().cloned());
    out.extend(args.iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<Vec<u8>> {
        s.split(' ')
            .filter(|x| !x.is_empty())
            .map(|x| x.as_bytes().to_vec())
            .collect()
    }

    #[test]
    fn keys_then_arguments() {
        let text = |v: Vec<Vec<u8>>| {
            v.into_iter()
                .map(|x| String::from_utf8(x).unwrap())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            text(eval_words(b"s".to_vec(), &w("k1 k2 , a1 , a2"))),
            "EVAL s 2 k1 k2 a1 , a2"
        );
        assert_eq!(text(eval_words(b"s".to_vec(), &w("k1"))), "EVAL s 1 k1");
        assert_eq!(text(eval_words(b"s".to_vec(), &w(", a"))), "EVAL s 0 a");
        assert_eq!(text(eval_words(b"s".to_vec(), &[])), "EVAL s 0");
    }

    #[test]
    fn unreadable_files_as_redis_cli_says() {
        let e = read_script(Path::new("/nonexistent/x.lua")).unwrap_err();
        assert_eq!(
            e,
            "Can't open file '/nonexistent/x.lua': No such file or directory"
        );
    }
}
