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

use crate::config::{ConfigError, load};
use crate::pipeline::Snapshot;

/// Loads and compiles a config file: what `run` does at startup.
pub fn load_compiled(path: &Path) -> Result<Compiled, ConfigError> {
    let config = load(path)?;
    compile_reusing(path, config, &())
}

/// The snapshot of a config file, for commands that serve nothing.
pub fn load_snapshot(path: &Path) -> Result<Snapshot, ConfigError> {
    load_compiled(path).map(|compiled| compiled.snapshot)
}
