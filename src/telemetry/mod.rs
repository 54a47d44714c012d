//! Metrics and logs: what operators see of every decision.

pub mod access;
pub mod client_errors;
pub mod logging;
pub mod metrics;

pub use metrics::Metrics;
