//! The env file: `export NAME=VALUE` lines that let an unmodified Azure SDK sample reach the
//! emulator, written atomically so a reader never sees half of it.

use std::io::Write;
use std::path::Path;

use crate::Error;

/// Quotes a value for a POSIX shell when it needs quoting.
pub fn shell_quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:@%+=,~".contains(&b));
    if plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// Renders `export NAME=VALUE` lines.
///
/// ```
/// let text = redis_entra_emulator::env_file::render(&[("A".into(), "x y".into())]);
/// assert_eq!(text, "export A='x y'\n");
/// ```
pub fn render(vars: &[(String, String)]) -> String {
    vars.iter()
        .map(|(k, v)| format!("export {k}={}\n", shell_quote(v)))
        .collect()
}

/// Parses what [`render`] writes (and plain `NAME=VALUE` lines), for tests and tools.
pub fn parse(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let line = line.strip_prefix("export ").unwrap_or(line);
            let (k, v) = line.split_once('=')?;
            let v = if let Some(inner) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
                inner.replace(r"'\''", "'")
            } else {
                v.to_string()
            };
            Some((k.to_string(), v))
        })
        .collect()
}

/// Writes `contents` to `path` atomically (a temporary file in the same folder, then rename),
/// readable by the owner only, since it holds secrets.
pub fn write_atomic(path: &Path, contents: &str) -> Result<(), Error> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| Error::io(format!("creating a file in {}", dir.display()), e))?;
    tmp.write_all(contents.as_bytes())
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    tmp.persist(path)
        .map_err(|e| Error::io(format!("writing {}", path.display()), e.error))?;
    Ok(())
}
