//! The top of the library: compiling a config (files, the environment,
//! DNS) into what the gateway serves from, and wiring the adapters into a
//! running server. Nothing below imports it.

pub mod compile;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod sources;

pub use compile::{Bootstrap, Compiled, Running, compile, compile_reusing, compile_with};

use std::path::Path;

use self::sources::{Sources, System};
use crate::config::schema::GatewayConfig;
use crate::config::{self, ConfigError};
use crate::pipeline::Snapshot;

/// Reads and parses the config file at `path` through `sources`, its
/// `${NAME}` references from their variables.
pub fn load(path: &Path, sources: &dyn Sources) -> Result<GatewayConfig, ConfigError> {
    config::load(path, sources.read(path), &|name| sources.var(name))
}

/// Loads and compiles a config file: what `run` does at startup.
pub fn load_compiled(path: &Path) -> Result<Compiled, ConfigError> {
    let config = load(path, &System)?;
    compile_reusing(path, config, &())
}

/// The snapshot of a config file, for commands that serve nothing.
pub fn load_snapshot(path: &Path) -> Result<Snapshot, ConfigError> {
    load_compiled(path).map(|compiled| compiled.snapshot)
}
