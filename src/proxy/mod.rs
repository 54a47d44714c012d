//! The thin adapter between Pingora's request phases and the auth core:
//! route the request, ask `auth` for a decision, rewrite headers, pick an
//! upstream, and count and log what happened.

pub mod canonical;
pub mod client;
pub mod cors;
mod gateway;
pub mod headers;
pub mod limits;
pub mod reject;
pub mod request_id;
pub mod router;

pub use gateway::{Gateway, RequestCtx};
