//! `redis-entra`: a redis-cli that signs in with Microsoft Entra ID, plus `token`, `demo` and
//! `emulator`.

mod command;
mod demo;
mod emulator;
mod settings;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A redis-cli that signs in with Microsoft Entra ID.
///
/// Without a subcommand, runs one Redis command (`redis-entra GET key`) against the cache that
/// the flags, or Service Connector's AZURE_REDIS_* variables, name.
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

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Acquire a token with the configured credential and print its claims (never the token,
    /// unless --raw).
    Token(token::TokenArgs),
    /// Start a local Azure in process and run seed 000's hello world and re-authentication
    /// scenario against it.
    Demo(demo::DemoArgs),
    /// Run the local Azure (fake Entra ID + Redis gateway) until interrupted.
    Emulator(emulator::EmulatorArgs),
    /// A Redis command and its arguments, e.g. `redis-entra SET key value`.
    #[command(external_subcommand)]
    Redis(Vec<String>),
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Token(args)) => token::run(&cli.connection, args).await,
            Some(Command::Demo(args)) => demo::run(args).await,
            Some(Command::Emulator(args)) => emulator::run(args).await,
            Some(Command::Redis(words)) => command::run(&cli.connection, words).await,
            None => Err(anyhow::anyhow!(
                "no command given: try `redis-entra PING`, `redis-entra token`, `redis-entra demo` or `redis-entra --help`"
            )
            .into()),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {:#}", e.error);
            ExitCode::from(e.code)
        }
    }
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub error: anyhow::Error,
    pub code: u8,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self { error, code: 1 }
    }
}

impl From<redis::RedisError> for Failure {
    fn from(error: redis::RedisError) -> Self {
        Self {
            error: error.into(),
            code: 1,
        }
    }
}

impl From<redis_entra::Error> for Failure {
    fn from(error: redis_entra::Error) -> Self {
        Self {
            error: error.into(),
            code: 1,
        }
    }
}

/// What every subcommand returns.
pub type Outcome = Result<ExitCode, Failure>;
