//! Runtime state: the revocation list, shared across replicas, and the
//! Redis connection that keeps it in step; the rate-limit counters, each
//! replica's own. It outlives every config snapshot; the request path reads
//! only the local copy.

pub mod rate_limit;
pub mod rate_limit_sync;
pub mod redis;
pub mod revocation;
