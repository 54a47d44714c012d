//! Configuration as users write it: `schema` holds the serde types of
//! `gateway.yaml` and nothing else, `load` reads a file into them with
//! errors that point at a line and column. Turning them into what the
//! gateway serves from is [`crate::assemble`]'s job.

mod load;
pub mod locate;
pub mod schema;

pub use load::{ConfigError, field_position, load, parse};

/// Relative paths in the config are relative to the config file.
pub fn resolve_path(base_dir: &std::path::Path, file: &std::path::Path) -> std::path::PathBuf {
    if file.is_absolute() {
        file.to_path_buf()
    } else {
        base_dir.join(file)
    }
}
