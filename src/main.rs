//! The `jwtgate` command line: `run` (the default), `check`, and `token`
//! tools for development and load tests.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use jwtgate::telemetry::logging::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "jwtgate",
    version,
    about = "An API gateway that verifies JSON Web Tokens at the edge"
)]
struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(flatten)]
    run: cli::RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

// Parsed once at startup; the size of the largest variant doesn't matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Start the gateway (the default when no command is given).
    Run(cli::RunArgs),
    /// Validate a config file and print a summary of its issuers and routes.
    Check {
        /// The config file.
        #[arg(short, long, default_value = "gateway.yaml")]
        config: PathBuf,
    },
    /// Mint, inspect and verify tokens.
    #[command(subcommand)]
    Token(cli::token::TokenCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let outcome = match cli.command {
        None => cli::run(cli.run),
        Some(Command::Run(args)) => cli::run(args),
        Some(Command::Check { config }) => cli::check::check(&config),
        Some(Command::Token(command)) => cli::token::token(command),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
