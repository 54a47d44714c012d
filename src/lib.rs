//! jwtgate: an API gateway that verifies JSON Web Tokens at the edge.
//!
//! The library is shared by the `jwtgate` binary, the integration tests and
//! the benches. `auth`, `keys` and `pipeline` know nothing of Pingora:
//! `pipeline` takes a request view and returns a decision, using `auth` to
//! verify tokens. `proxy` adapts that decision to Pingora's request phases.
//! Dependencies point one way: `jose` (algorithms) ← `keys` ← `auth` ←
//! `state` (the revocation list) ← `pipeline` ← the adapters.

pub mod admin;
pub mod answers;
pub mod assemble;
pub mod auth;
pub mod authz;
pub mod certificates;
pub mod client_certs;
pub mod clock;
pub mod config;
pub mod digest;
pub mod echo;
pub mod identity;
pub mod introspection;
pub mod jose;
pub mod keys;
pub mod memory;
pub mod mint;
pub mod pipeline;
pub mod proxy;
pub mod shutdown;
pub mod ssf;
pub mod state;
pub mod telemetry;
pub mod tls_provider;
pub mod upstream;
