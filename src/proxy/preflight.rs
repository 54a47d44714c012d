//! The Pingora side of CORS: the policy (`pipeline::cors`) reads and writes
//! headers through [`ResponseHeaders`], implemented here for Pingora's
//! response header, and a preflight's whole answer is built here.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use pingora::http::ResponseHeader;

use super::{headers, reject};
use crate::pipeline::cors::{CorsPolicy, ResponseHeaders};

impl ResponseHeaders for ResponseHeader {
    fn header_map(&self) -> &HeaderMap {
        &self.headers
    }

    fn set(&mut self, name: &'static str, value: HeaderValue) {
        self.insert_header(name, value)
            .expect("a HeaderValue is always a valid value");
    }

    fn remove(&mut self, name: &'static str) {
        self.remove_header(name);
    }
}

/// The whole response to a preflight: `204` with the CORS headers, or `403`
/// with a JSON body and none of them.
pub fn preflight_response(
    policy: &CorsPolicy,
    request: &HeaderMap,
    request_id: &str,
) -> (ResponseHeader, Bytes) {
    let mut allowed = ResponseHeader::build(204, Some(8)).expect("valid status");
    match policy.preflight(request, &mut allowed) {
        Ok(()) => {
            allowed
                .insert_header(headers::REQUEST_ID, request_id)
                .expect("request ids are visible ASCII");
            (allowed, Bytes::new())
        }
        Err(refusal) => reject::refused(
            403,
            "cors_preflight_refused",
            refusal.description(),
            request_id,
        ),
    }
}
