//! Runtime state shared across replicas: the revocation list, and the
//! Redis connection that keeps it in step. It outlives every config
//! snapshot; the request path reads only the local copy.

pub mod redis;
pub mod revocation;
