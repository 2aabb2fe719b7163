//! `redis-entra doctor`: finds out why signing in to Azure Cache for Redis fails, and says what
//! to change.
//!
//! The checks run in the order a connection goes through them, each in its own function:
//!
//! 1. [`config::check`]: which variables are set, which credential they select, contradictions;
//! 2. [`network::dns`], [`network::tcp`], [`network::tls`]: name resolution, a TCP connection,
//!    and a TLS handshake that verifies the certificate;
//! 3. [`token::acquire`]: a token from the credential, with the causes of Entra's errors
//!    recognised (AADSTS7000215, AADSTS700016, AADSTS90002, no managed identity here…);
//! 4. [`token::claims`]: `oid` (the username), `aud`, and `exp`/`nbf` against the local clock;
//! 5. [`server::auth`], [`server::read`], [`server::write`]: `AUTH <oid> <token>`, a `GET`, and a
//!    `SET` with a short TTL followed by `DEL` (the troubleshooting cases of Microsoft's guide:
//!    `WRONGPASS` and `NOPERM`).
//!
//! Each prints one line, `ok`, `FAIL` or `skip` (when a check it needs failed), and for a failure
//! a `fix:` line. The exit code is 0 when every check passes, else the class of the first
//! failure: 2 configuration, 4 DNS/TCP/TLS, 3 token/claims/AUTH, 1 a refused read or write.
//! Secrets (tokens, client secrets) are never printed.

mod config;
mod network;
mod server;
mod token;

use std::process::ExitCode;

use clap::Args;

use crate::exit;
use crate::settings::ConnectionArgs;
use crate::Outcome;

/// `doctor`'s flags.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Skip the write check (SET of a random key with a 30 s TTL, then DEL).
    #[arg(long)]
    pub read_only: bool,
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It passed.
    Ok,
    /// It failed.
    Fail,
    /// It did not run, because a check it needs failed.
    Skip,
}

/// One check's result: a line, and for a failure what to change.
#[derive(Debug, Clone)]
pub struct Check {
    /// The check's name (`TLS`, `token`, …).
    pub name: &'static str,
    /// How it ended.
    pub status: Status,
    /// What was found, in one line.
    pub line: String,
    /// What to change (failures).
    pub fix: Option<String>,
    /// Things worth knowing even when the check passed.
    pub notes: Vec<String>,
    /// The exit code a failure maps to.
    pub code: u8,
}

impl Check {
    /// A passed check.
    pub fn ok(name: &'static str, line: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Ok,
            line: line.into(),
            fix: None,
            notes: Vec::new(),
            code: exit::SUCCESS,
        }
    }

    /// A failed check, with the exit code its class maps to and what to change.
    pub fn fail(
        name: &'static str,
        code: u8,
        line: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            name,
            status: Status::Fail,
            line: line.into(),
            fix: Some(fix.into()),
            notes: Vec::new(),
            code,
        }
    }

    /// A check that did not run.
    pub fn skip(name: &'static str, why: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Skip,
            line: why.into(),
            fix: None,
            notes: Vec::new(),
            code: exit::SUCCESS,
        }
    }

    /// Adds notes.
    pub fn with_notes(mut self, notes: Vec<String>) -> Self {
        self.notes.extend(notes);
        self
    }

    /// Whether it passed.
    pub fn passed(&self) -> bool {
        self.status == Status::Ok
    }

    /// The check as printed.
    pub fn render(&self) -> String {
        let status = match self.status {
            Status::Ok => "ok",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut out = format!("{status:<5} {}: {}\n", self.name, one_line(&self.line));
        for note in &self.notes {
            out.push_str(&format!("      note: {}\n", one_line(note)));
        }
        if let Some(fix) = &self.fix {
            out.push_str(&format!("      fix: {}\n", one_line(fix)));
        }
        out
    }
}

/// The checks printed so far.
#[derive(Default)]
struct Report {
    checks: Vec<Check>,
}

impl Report {
    fn add(&mut self, check: Check) {
        crate::session::print_stdout(&check.render());
        self.checks.push(check);
    }

    fn exit_code(&self) -> u8 {
        self.checks
            .iter()
            .find(|c| c.status == Status::Fail)
            .map(|c| c.code)
            .unwrap_or(exit::SUCCESS)
    }
}

/// Runs every check in order and prints the result.
pub async fn run(args: &ConnectionArgs, doctor: DoctorArgs) -> Outcome {
    println!("redis-entra doctor: checking how this machine signs in to Azure Cache for Redis");
    let mut report = Report::default();

    let config = config::check(args);
    let options = config.options.clone();
    let credential = config.credential.clone();
    let managed_identity = config.managed_identity;
    let access_key = config.access_key.clone();
    report.add(config.check);

    // The network path to the cache.
    let mut tls_ok = false;
    match &options {
        None => {
            for name in ["DNS", "TCP", "TLS"] {
                report.add(Check::skip(
                    name,
                    "needs a host and port (see configuration)",
                ));
            }
        }
        Some(options) => {
            let (check, addrs) = network::dns(&options.host, options.port).await;
            report.add(check);
            if addrs.is_empty() {
                report.add(Check::skip("TCP", "needs the host's addresses (see DNS)"));
                report.add(Check::skip("TLS", "needs a TCP connection (see TCP)"));
            } else {
                let (check, addr) = network::tcp(&options.host, options.port, &addrs).await;
                report.add(check);
                match addr {
                    None => report.add(Check::skip("TLS", "needs a TCP connection (see TCP)")),
                    Some(addr) => {
                        let check = network::tls(&options.host, addr, &options.tls).await;
                        tls_ok = check.passed();
                        report.add(check);
                    }
                }
            }
        }
    }

    // The token, which does not depend on the cache.
    let creds = match (&credential, access_key) {
        (_, Some(key)) => {
            report.add(Check::skip(
                "token",
                "an access key: no Entra ID token to check",
            ));
            report.add(Check::skip("claims", "an access key has no claims"));
            Some(key)
        }
        (None, None) => {
            report.add(Check::skip(
                "token",
                "needs a valid credential configuration (see configuration)",
            ));
            report.add(Check::skip("claims", "needs a token"));
            None
        }
        (Some(credential), None) => {
            let (check, token) = token::acquire(credential, managed_identity).await;
            report.add(check);
            match token {
                None => {
                    report.add(Check::skip("claims", "needs a token"));
                    None
                }
                Some(token) => {
                    let (check, creds) = token::claims(token);
                    report.add(check);
                    creds
                }
            }
        }
    };

    // Signing in to Redis, then a read and a write.
    let conn = match (&options, creds, tls_ok) {
        (Some(options), Some(creds), true) => {
            let (check, conn) = server::auth(options, &creds).await;
            report.add(check);
            conn.map(|c| (c, creds))
        }
        (_, creds, _) => {
            let why = if !tls_ok {
                "needs a TLS connection (see above)"
            } else if creds.is_none() {
                "needs a token with an oid (see above)"
            } else {
                "needs a host and port"
            };
            report.add(Check::skip("AUTH", why));
            None
        }
    };
    match conn {
        Some((mut conn, creds)) => {
            report.add(server::read(&mut conn, creds.username()).await);
            if doctor.read_only {
                report.add(Check::skip("write", "--read-only"));
            } else {
                report.add(server::write(&mut conn, creds.username()).await);
            }
        }
        None => {
            report.add(Check::skip("read", "needs AUTH"));
            report.add(Check::skip("write", "needs AUTH"));
        }
    }

    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.name)
        .collect();
    if failed.is_empty() {
        println!("all checks passed");
    } else {
        println!(
            "{} check(s) failed: {}; fix the first one first",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(ExitCode::from(report.exit_code()))
}
