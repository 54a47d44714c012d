//! Configuration: `schema` is what users write, `load` reads it with precise
//! errors, `compile` turns it into the restart-only [`Bootstrap`] and the
//! immutable [`Snapshot`] the proxy serves from (and a reload swaps).

mod compile;
mod load;
pub mod schema;
mod upstream_tls;

pub use compile::{
    Bootstrap, ClaimHeader, Compiled, CompiledRoute, ExistingKeys, ForwardPlan, HttpsState,
    Snapshot, Upstream, compile, compile_reusing,
};
pub use load::{ConfigError, load, parse};
pub use upstream_tls::{UpstreamTls, UpstreamTlsError};

use std::path::Path;

/// Loads and compiles a config file: what `run` does at startup.
pub fn load_compiled(path: &Path) -> Result<Compiled, ConfigError> {
    let config = load(path)?;
    compile_reusing(path, config, &|_| None)
}

/// The snapshot of a config file, for commands that serve nothing.
pub fn load_snapshot(path: &Path) -> Result<Snapshot, ConfigError> {
    load_compiled(path).map(|compiled| compiled.snapshot)
}
