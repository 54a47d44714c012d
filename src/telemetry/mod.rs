//! Metrics and logs: what operators see of every decision.

pub mod access;
pub mod client_errors;
pub mod exemplar;
pub mod logging;
pub mod metrics;
pub mod openmetrics;

pub use exemplar::Exemplar;
pub use metrics::Metrics;
