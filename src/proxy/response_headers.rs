//! The Pingora side of CORS: the policy (`pipeline::cors`) reads and writes
//! headers through [`ResponseHeaders`], implemented here for Pingora's
//! response header, so the upstream's responses are decorated in place.

use http::{HeaderMap, HeaderValue};
use pingora::http::ResponseHeader;

use crate::pipeline::cors::ResponseHeaders;

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
