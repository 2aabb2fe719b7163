//! redis-cli's modes other than "run one command": one file each. [`scan`] (`--scan`),
//! [`eval`] (`--eval`), [`pipe`] (`--pipe`), [`latency`] (`--latency`, `--latency-history`),
//! [`stat`] (`--stat`), [`bigkeys`] (`--bigkeys`, `--memkeys`).

pub mod bigkeys;
pub mod eval;
pub mod latency;
pub mod pipe;
pub mod scan;
pub mod stat;

use std::path::PathBuf;

use clap::Args;

/// The flags that choose a mode, and their options.
#[derive(Debug, Clone, Default, Args)]
pub struct ModeArgs {
    /// List the keys with SCAN, one a line (quoted on a terminal).
    #[arg(long)]
    pub scan: bool,
    /// With --scan: only keys matching this glob pattern (SCAN's MATCH; default: all).
    #[arg(long, value_name = "PATTERN")]
    pub pattern: Option<String>,
    /// As --pattern, given quoted ("a\x00*"), for a pattern that is not plain text.
    #[arg(long = "quoted-pattern", value_name = "PATTERN")]
    pub quoted_pattern: Option<String>,
    /// With --scan: SCAN's COUNT, the work asked of each call (redis-cli 7.2's --count).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// With --scan: only keys of this type (string, list, set, zset, hash, stream; SCAN's
    /// TYPE). Not a redis-cli flag.
    #[arg(long = "type", value_name = "TYPE")]
    pub key_type: Option<String>,
    /// Run the Lua script in FILE with EVAL: `--eval FILE key1 key2 , arg1 arg2` (a lone
    /// comma separates the keys from the arguments).
    #[arg(long, value_name = "FILE")]
    pub eval: Option<PathBuf>,
    /// Send the commands on standard input (Redis protocol, or one inline command a line) as
    /// fast as the server takes them; prints the number of replies and errors.
    #[arg(long)]
    pub pipe: bool,
    /// With --pipe: give up when no reply has come for N seconds after the input ended
    /// (default 30; 0 waits for ever).
    #[arg(long = "pipe-timeout", value_name = "N", default_value_t = 30)]
    pub pipe_timeout: u64,
    /// PING continuously and show the round trip's min, max and average (ms).
    #[arg(long)]
    pub latency: bool,
    /// As --latency, with a new range every -i seconds (default 15).
    #[arg(long = "latency-history")]
    pub latency_history: bool,
    /// Find the biggest key of each type (by length), and average sizes.
    #[arg(long)]
    pub bigkeys: bool,
    /// As --bigkeys, by memory (MEMORY USAGE).
    #[arg(long)]
    pub memkeys: bool,
    /// As --memkeys, with MEMORY USAGE's SAMPLES N.
    #[arg(long = "memkeys-samples", value_name = "N")]
    pub memkeys_samples: Option<u64>,
    /// A line of server figures (keys, memory, clients, requests, ...) every -i seconds.
    #[arg(long)]
    pub stat: bool,
}

/// A string given quoted (`"a b\x00"`), as redis-cli's `--quoted-input` and
/// `--quoted-pattern` read it: exactly one quoted or plain word; `None` otherwise.
pub fn unquote(text: &str) -> Option<Vec<u8>> {
    match crate::split::split(text) {
        Ok(mut words) if words.len() == 1 => words.pop(),
        _ => None,
    }
}

impl ModeArgs {
    /// The SCAN pattern: `--quoted-pattern` unquoted, else `--pattern`; `Err` for a quoted
    /// pattern that does not unquote.
    pub fn pattern(&self) -> Result<Option<Vec<u8>>, ()> {
        match (&self.quoted_pattern, &self.pattern) {
            (Some(q), _) => unquote(q).map(Some).ok_or(()),
            (None, p) => Ok(p.as_ref().map(|p| p.as_bytes().to_vec())),
        }
    }

    /// Whether a mode other than "run the command" was asked for.
    pub fn any(&self) -> bool {
        self.scan
            || self.eval.is_some()
            || self.pipe
            || self.latency
            || self.latency_history
            || self.stat
            || self.bigkeys
            || self.memkeys
            || self.memkeys_samples.is_some()
    }
}
