//! The Pingora adapter: turns a session into a request view for the
//! decision pipeline, and its decision into jwtgate's own answer or the
//! upstream request's headers; picks an upstream, and counts and logs what
//! happened.

pub mod client_certs;
mod deadline_io;
mod failure;
mod gateway;
mod handshake;
pub mod headers;
mod http2;
pub mod keepalive;
mod live;
mod response_headers;
pub mod sni;
pub mod streams;
mod websocket;
mod write_buffer;

pub use failure::ProxyFailure;
pub use gateway::{Gateway, RequestCtx, Serving};
