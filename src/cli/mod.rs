pub mod check;
pub mod token;

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

pub fn run(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    // First, so that a SIGHUP during startup does not kill the process.
    jwtgate::shutdown::survive_hangup().context("cannot install the SIGHUP handler")?;
    let snapshot = jwtgate::config::load_snapshot(&args.config)?;
    for warning in &snapshot.warnings {
        tracing::warn!("{warning}");
    }
    jwtgate::server::run(snapshot, jwtgate::clock::system())?;
    Ok(ExitCode::SUCCESS)
}
