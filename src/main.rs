//! The `jwtgate` command line: `run` (the default), `check`, `token`
//! tools for development and load tests, `revoke`, and `schema`; `health`
//! for container health checks; `completions` and `man` generated from
//! this definition.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use jwtgate::telemetry::logging::{self, LogFormat};

#[global_allocator]
static ALLOCATOR: jwtgate::memory::Allocator = jwtgate::memory::Allocator;

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
    /// The config file to run with when no command is given [default:
    /// gateway.yaml].
    #[arg(short, long)]
    config: Option<PathBuf>,
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
    Check(cli::check::CheckArgs),
    /// Mint, inspect and verify tokens.
    #[command(subcommand)]
    Token(cli::token::TokenCommand),
    /// Revoke tokens, subjects or sessions through a running gateway's
    /// admin listener.
    Revoke(cli::revoke::RevokeArgs),
    /// Ask a running gateway's admin listener whether it is ready (exit 0)
    /// or not (exit 1): the container image's HEALTHCHECK.
    Health(cli::health::HealthArgs),
    /// Print the completion script for a shell.
    Completions(cli::completions::CompletionsArgs),
    /// Write the manual pages (roff).
    Man(cli::completions::ManArgs),
    /// Print the JSON Schema of the config file (for editors and CI), or
    /// the configuration reference rendered from it.
    Schema(cli::schema::SchemaArgs),
}

fn main() -> ExitCode {
    jwtgate::memory::disable_transparent_huge_pages();
    jwtgate::tls_provider::install();
    let cli = Cli::parse();
    let clock = jwtgate::clock::system();
    logging::init(
        cli.log_format,
        std::sync::Arc::new(move || clock.now_unix()),
    );
    let outcome = match cli.command {
        // `-c` before a command would be read here and never reach the
        // command: say so rather than use the command's default file.
        Some(_) if cli.config.is_some() => Err(anyhow::anyhow!(
            "-c/--config goes after the command, e.g. `jwtgate check -c FILE`"
        )),
        None => cli::run(cli::RunArgs {
            config: cli::ConfigArgs {
                config: cli.config.unwrap_or_else(|| cli::DEFAULT_CONFIG.into()),
            },
            watch: false,
        }),
        Some(Command::Run(args)) => cli::run(args),
        Some(Command::Check(args)) => cli::check::check(&args),
        Some(Command::Token(command)) => cli::token::token(command),
        Some(Command::Revoke(args)) => cli::revoke::revoke(args),
        Some(Command::Health(args)) => cli::health::health(&args),
        Some(Command::Completions(args)) => cli::completions::completions(&args, Cli::command()),
        Some(Command::Man(args)) => cli::completions::man(&args, Cli::command()),
        Some(Command::Schema(args)) => cli::schema::schema(&args),
    };
    match outcome {
        Ok(code) => code,
        // The reader of our output went away (`| head -1`): nothing to say.
        Err(error) if cli::is_closed_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
