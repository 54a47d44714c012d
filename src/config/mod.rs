//! Configuration as users write it: `schema` holds the serde types of
//! `gateway.yaml` and nothing else, `load` reads a file into them with
//! errors that point at a line and column. Turning them into what the
//! gateway serves from is [`crate::assemble`]'s job.

mod load;
pub mod schema;

pub use load::{ConfigError, load, parse};
