//! Metrics, logs and traces: what operators see of every decision.

pub mod access;
pub mod client_errors;
pub mod exemplar;
pub mod logging;
pub mod metrics;
pub mod openmetrics;
pub mod traces;

pub use exemplar::Exemplar;
pub use metrics::Metrics;
