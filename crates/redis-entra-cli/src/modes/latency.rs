//! `--latency` and `--latency-history`: PING every 10 ms and print the round trip's minimum,
//! maximum and average in whole milliseconds, as redis-cli 7 does:
//!
//! - on a terminal (or `--no-raw`): one line, rewritten in place, until Ctrl-C;
//! - otherwise (`--raw`, `--csv`, `--json`, a pipe): one line after `-i` seconds (default 1),
//!   then exit; `min max avg count`, `min,max,avg,count` or a JSON object;
//! - `--latency-history`: a line per sample, and ` -- N seconds range` every `-i` seconds
//!   (default 15), after which the figures start again; until Ctrl-C.

use std::time::{Duration, Instant};

use crate::session::{self, print_stdout, Connection};
use crate::settings::Output;
use crate::Outcome;

/// Pause between two PINGs.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// `--latency-history`'s default range.
const HISTORY_DEFAULT: Duration = Duration::from_secs(15);

/// Running figures, in milliseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Figures {
    min: u64,
    max: u64,
    total: u64,
    count: u64,
}

impl Figures {
    /// Adds a sample.
    pub fn add(&mut self, ms: u64) {
        if self.count == 0 {
            self.min = ms;
            self.max = ms;
        } else {
            self.min = self.min.min(ms);
            self.max = self.max.max(ms);
        }
        self.total = self.total.saturating_add(ms);
        self.count += 1;
    }

    fn avg(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.total as f64 / self.count as f64
        }
    }

    /// The figures in `output`'s format, as redis-cli prints them.
    pub fn format(&self, output: Output) -> String {
        let (min, max, avg, count) = (self.min, self.max, self.avg(), self.count);
        match output {
            Output::Typed => format!("min: {min}, max: {max}, avg: {avg:.2} ({count} samples)"),
            Output::Csv => format!("{min},{max},{avg:.2},{count}\n"),
            Output::Raw => format!("{min} {max} {avg:.2} {count}\n"),
            Output::Json => format!(
                "{{\"min\": {min}, \"max\": {max}, \"avg\": {avg:.2}, \"count\": {count}}}\n"
            ),
        }
    }
}

/// Runs `--latency` (or `--latency-history`) on `conn`; `interval` is `-i`.
pub async fn run(
    conn: &mut Connection,
    output: Output,
    history: bool,
    interval: Option<Duration>,
) -> Outcome {
    let range = interval.unwrap_or(HISTORY_DEFAULT);
    let once_after = interval.unwrap_or(Duration::from_secs(1));
    let mut figures = Figures::default();
    let mut started = Instant::now();
    loop {
        let sent = Instant::now();
        if let Err(e) = session::execute(conn, &[b"PING".to_vec()]).await {
            if e.code().is_none() {
                eprintln!("\nI/O error");
                return Err(e.into());
            }
        }
        figures.add(sent.elapsed().as_millis() as u64);
        if output == Output::Typed {
            print_stdout(&format!("\x1b[0G\x1b[2K{}", figures.format(output)));
        } else if history {
            print_stdout(&figures.format(output));
        } else if started.elapsed() > once_after {
            print_stdout(&figures.format(output));
            return Ok(std::process::ExitCode::SUCCESS);
        }
        if history && started.elapsed() > range {
            print_stdout(&format!(
                " -- {:.2} seconds range\n",
                started.elapsed().as_secs_f64()
            ));
            started = Instant::now();
            figures = Figures::default();
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_like_redis_cli() {
        let mut f = Figures::default();
        for ms in [2, 0, 1] {
            f.add(ms);
        }
        assert_eq!(f.format(Output::Raw), "0 2 1.00 3\n");
        assert_eq!(f.format(Output::Csv), "0,2,1.00,3\n");
        assert_eq!(
            f.format(Output::Typed),
            "min: 0, max: 2, avg: 1.00 (3 samples)"
        );
        assert_eq!(
            f.format(Output::Json),
            "{\"min\": 0, \"max\": 2, \"avg\": 1.00, \"count\": 3}\n"
        );
    }
}
