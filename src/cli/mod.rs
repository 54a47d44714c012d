/// `println!` for the commands: `println!` panics when stdout is a closed
/// pipe (`jwtgate token mint --count 1000 | head -1`); this ends the
/// process quietly instead, as Unix tools do.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::print_line(format_args!($($arg)*))
    };
}

pub mod check;
pub mod completions;
pub mod health;
mod reference;
pub mod revoke;
pub mod schema;
pub mod token;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

pub const DEFAULT_CONFIG: &str = "gateway.yaml";

/// `-c/--config`, for every command that reads a config file.
#[derive(Args)]
pub struct ConfigArgs {
    /// The config file.
    #[arg(short, long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
}

/// `run`'s arguments.
#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Reload the config whenever it, or a certificate or key file it
    /// names, changes (also through a Kubernetes ConfigMap's or Secret's
    /// `..data` symlink). SIGHUP and
    /// `POST /-/reload` on the admin listener reload it with or without.
    #[arg(long)]
    pub watch: bool,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    // First, so that a SIGHUP during startup does not kill the process.
    jwtgate::shutdown::survive_hangup().context("cannot install the SIGHUP handler")?;
    let path = args.config.config;
    let compiled = jwtgate::assemble::load_compiled(&path)?;
    for warning in &compiled.snapshot.warnings {
        tracing::warn!("{warning}");
    }
    let options = jwtgate::assemble::server::RunOptions {
        config_path: path,
        watch: args.watch,
    };
    jwtgate::assemble::server::run(compiled, options, jwtgate::clock::system())?;
    Ok(ExitCode::SUCCESS)
}

pub fn print_line(line: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_fmt(line)
        .and_then(|()| stdout.write_all(b"\n"))
    {
        drop(stdout);
        exit_on_output_error(&error);
    }
}

/// Whether `error` comes from writing to a reader that went away.
pub fn is_closed_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A reader that stopped reading (`| head`) got what it wanted: exit 0
/// without a word. Any other failure to write is an error.
fn exit_on_output_error(error: &std::io::Error) -> ! {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to standard output: {error}");
    std::process::exit(1);
}
