//! The Pingora adapter: turns a session into a request view for the
//! decision pipeline, and its decision into jwtgate's own answer or the
//! upstream request's headers; picks an upstream, and counts and logs what
//! happened.

mod gateway;
mod handshake;
pub mod headers;
pub mod keepalive;
pub mod preflight;
pub mod reject;
pub mod request_id;
pub mod sni;

pub use gateway::{Gateway, RequestCtx, Serving};
