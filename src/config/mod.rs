//! Configuration: `schema` is what users write, `load` reads it with precise
//! errors, `compile` turns it into the immutable [`Snapshot`] the proxy
//! serves from.

mod compile;
mod load;
pub mod schema;

pub use compile::{CompiledRoute, ForwardPlan, Snapshot, Upstream, compile};
pub use load::{ConfigError, load, parse};

use std::path::Path;

/// Loads and compiles a config file: what `run` and `check` both do.
pub fn load_snapshot(path: &Path) -> Result<Snapshot, ConfigError> {
    let config = load(path)?;
    compile(path, config)
}
