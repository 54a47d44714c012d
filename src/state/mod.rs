//! Runtime state that outlives every config snapshot: the revocation list,
//! shared across replicas, and the rate-limit counters, whose budgets may
//! be shared too, both through the one Redis layer in [`redis`]. The
//! request path reads only the local copies.

pub mod dpop_replay;
pub mod live;
pub mod rate_limit;
pub mod redis;
pub mod revocation;
pub mod status_list;
