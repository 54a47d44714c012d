//! Metrics and logs: what operators see of every decision.

pub mod access;
pub mod client_errors;
pub mod logging;
pub mod metrics;
pub mod traces;

pub use metrics::Metrics;
