//! The authentication core: token extraction, verification and route policy.
//! Nothing in here knows about Pingora or HTTP servers: it takes bytes and a
//! compiled policy and returns a decision, so it can be unit-tested,
//! benchmarked and fuzzed on its own.

pub mod claims;
pub mod dpop;
pub mod explain;
pub mod extract;
pub mod header;
pub mod introspected;
pub mod json;
pub mod policy;
mod reason;
pub(crate) mod registered;
pub mod signed;
pub mod token;
pub mod token_cache;
pub mod verify;

pub use reason::{Reason, Rejection, RejectionKind};
pub use verify::{IssuerVerifier, VerifiedToken};

#[cfg(test)]
mod tests;
