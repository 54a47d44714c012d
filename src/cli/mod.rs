pub mod check;
pub mod token;

use std::path::PathBuf;
use std::process::ExitCode;

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
    let snapshot = jwtgate::config::load_snapshot(&args.config)?;
    for warning in &snapshot.warnings {
        tracing::warn!("{warning}");
    }
    let never =
        jwtgate::server::run(snapshot, jwtgate::clock::system()).map_err(anyhow::Error::msg)?;
    match never {}
}
