pub mod check;
pub mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

#[derive(Args)]
pub struct RunArgs {
    /// The config file.
    #[arg(short, long, default_value = "gateway.yaml")]
    pub config: PathBuf,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let snapshot = jwtgate::config::load_snapshot(&args.config)?;
    for warning in &snapshot.warnings {
        tracing::warn!("{warning}");
    }
    let never =
        jwtgate::server::run(snapshot, jwtgate::clock::system()).map_err(anyhow::Error::msg)?;
    match never {}
}
