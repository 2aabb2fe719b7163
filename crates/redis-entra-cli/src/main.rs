//! `redis-entra`: a redis-cli that signs in with Microsoft Entra ID, plus `token`, `doctor`,
//! `demo` and `emulator`.
//!
//! One file per subcommand: [`command`] (one command, and the subscriptions in [`subscribe`]),
//! [`prompt`] (no command: the interactive prompt), [`token`], [`doctor`], [`demo`],
//! [`emulator`]. What they share: [`settings`] (redis-cli's flags and the AZURE_* variables),
//! [`session`] (signing in, routing and printing a command), [`format`](mod@format) (redis-cli's output
//! formats), [`split`] (redis-cli's argument quoting) and [`exit`] (the exit codes).

mod command;
mod csv;
mod demo;
mod doctor;
mod emulator;
mod exit;
mod format;
mod identity;
mod modes;
mod prompt;
mod redis_cli_flags;
mod session;
mod settings;
mod split;
mod subscribe;
mod token;
mod token_cache;
mod uri;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

/// A redis-cli that signs in with Microsoft Entra ID.
///
/// `redis-entra GET key` runs one command against the cache that the flags, or Service
/// Connector's AZURE_REDIS_* variables, name; without a command it opens an interactive prompt.
/// The password is an Entra ID access token from --credential or the AZURE_* variables, kept
/// between runs and renewed automatically; the username is its oid claim.
#[derive(Debug, Parser)]
#[command(name = "redis-entra", version, disable_help_flag = true)]
#[command(
    args_conflicts_with_subcommands = false,
    subcommand_precedence_over_arg = true
)]
pub struct Cli {
    #[command(flatten)]
    pub connection: settings::ConnectionArgs,

    /// Print help.
    #[arg(long, action = clap::ArgAction::Help, global = true)]
    help: Option<bool>,

    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, default_value = "warn", global = true)]
    pub log: String,

    #[command(flatten)]
    pub modes: modes::ModeArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Acquire a token with the configured credential and print its claims (never the token,
    /// unless --raw).
    Token(token::TokenArgs),
    /// Check configuration, DNS, TCP, TLS, token, claims, AUTH, a read and a write, and say what
    /// to change for each failure.
    Doctor(doctor::DoctorArgs),
    /// Start a local Azure in process and run the hello world and re-authentication scenarios
    /// of Microsoft's Azure Cache for Redis Python samples against it.
    Demo(demo::DemoArgs),
    /// Run the local Azure (fake Entra ID + Redis gateway) until interrupted.
    Emulator(Box<emulator::EmulatorArgs>),
    /// A Redis command and its arguments, e.g. `redis-entra SET key value`.
    #[command(external_subcommand)]
    /// (Arguments are bytes, as redis-cli takes them: they need not be UTF-8.)
    Redis(Vec<OsString>),
}

/// `redis-entra emulator …`, parsed on its own: its `--help` lists the emulator's options only,
/// and a client flag (`-c`, `--raw`, …) is an error there rather than silently ignored.
#[derive(Debug, Parser)]
#[command(
    name = "redis-entra emulator",
    version,
    about = "Run the local Azure (fake Entra ID + Redis gateway) until interrupted."
)]
struct EmulatorCli {
    #[command(flatten)]
    args: emulator::EmulatorArgs,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, default_value = "warn")]
    log: String,
}

/// Runs `redis-entra emulator …` when that is the command line (the subcommand first).
fn emulator_command() -> Option<ExitCode> {
    let mut argv = std::env::args_os();
    let program = argv.next()?;
    let rest: Vec<OsString> = argv.collect();
    if rest.first().is_none_or(|first| first != "emulator") {
        return None;
    }
    let name = format!("{} emulator", program.to_string_lossy());
    let parsed = EmulatorCli::try_parse_from(
        std::iter::once(OsString::from(name)).chain(rest.into_iter().skip(1)),
    );
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return Some(ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::SUCCESS
            }));
        }
    };
    init_logging(&cli.log);
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return Some(code),
    };
    let result = runtime.block_on(emulator::run(cli.args));
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    Some(match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {:#}", e.error);
            ExitCode::from(e.code)
        }
    })
}

/// The command's async runtime; on failure, the message is printed and the exit code returned.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(exit::ERROR_REPLY)
        })
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Parses the command line; a refused redis-cli flag gets its reason (exit 2).
fn parse() -> Result<Cli, ExitCode> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let command = Cli::command().after_help(redis_cli_flags::help());
    let matches = command
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m));
    match matches {
        Ok(cli) => Ok(cli),
        Err(e) => {
            if e.kind() == ErrorKind::UnknownArgument {
                if let Some(ContextValue::String(flag)) = e.get(ContextKind::InvalidArg) {
                    if let Some(reason) = redis_cli_flags::refusal(flag) {
                        let name = flag.split('=').next().unwrap_or(flag);
                        eprintln!(
                            "error: redis-cli's {name} is not supported by redis-entra: {reason}"
                        );
                        return Err(ExitCode::from(exit::USAGE));
                    }
                }
            }
            let _ = e.print();
            Err(ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::SUCCESS
            }))
        }
    }
}

fn main() -> ExitCode {
    if let Some(code) = emulator_command() {
        return code;
    }
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    init_logging(&cli.log);
    format::set_delimiters(
        cli.connection.element_delimiter.clone(),
        cli.connection.reply_delimiter.clone(),
    );
    if let Err(e) = cli.connection.check_supported() {
        eprintln!("error: {e}");
        return ExitCode::from(exit::USAGE);
    }
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Token(args)) => token::run(&cli.connection, args).await,
            Some(Command::Doctor(args)) => doctor::run(&cli.connection, args).await,
            Some(Command::Demo(args)) => demo::run(args).await,
            Some(Command::Emulator(args)) => emulator::run(*args).await,
            Some(Command::Redis(words)) => command::run(&cli.connection, &cli.modes, words).await,
            None if cli.modes.any() => command::run(&cli.connection, &cli.modes, Vec::new()).await,
            None => prompt::run(&cli.connection).await,
        }
    });
    // Background tasks (token refresh, connection upkeep) must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(code) => code,
        Err(e) => {
            if e.code == exit::AUTH {
                token_cache::forget_refused();
            }
            eprintln!("error: {:#}", e.error);
            match e.code {
                exit::AUTH | exit::CONNECTION => eprintln!(
                    "hint: `redis-entra doctor` checks each step (DNS, TCP, TLS, token, AUTH) and says what to change"
                ),
                _ => {}
            }
            ExitCode::from(e.code)
        }
    }
}

/// An error with the exit code it maps to (see [`exit`]).
#[derive(Debug)]
pub struct Failure {
    pub error: anyhow::Error,
    pub code: u8,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        let code = exit::of(&error);
        Self { error, code }
    }
}

impl From<redis::RedisError> for Failure {
    fn from(error: redis::RedisError) -> Self {
        let code = exit::of_redis(&error);
        Self {
            error: error.into(),
            code,
        }
    }
}

impl From<redis_entra::Error> for Failure {
    fn from(error: redis_entra::Error) -> Self {
        let code = exit::of_library(&error);
        Self {
            error: error.into(),
            code,
        }
    }
}

/// What every subcommand returns.
pub type Outcome = Result<ExitCode, Failure>;
