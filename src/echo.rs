//! The built-in echo upstream: answers every request with the method, path,
//! query and headers it received, as JSON. With it, the shipped
//! `gateway.yaml` works with no other service, and users can see exactly
//! which identity headers jwtgate forwarded.

use std::collections::BTreeMap;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

/// Bodies are read to keep the connection reusable, but only counted.
const MAX_BODY_BYTES: usize = 1 << 20;

pub struct Echo;

#[async_trait]
impl ServeHttp for Echo {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let request = session.req_header();
        let method = request.method.to_string();
        let path = request.uri.path().to_string();
        let query = request.uri.query().map(str::to_owned);
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in &request.headers {
            headers
                .entry(name.as_str().to_string())
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
        let mut body_bytes = 0usize;
        while let Ok(Some(chunk)) = session.read_request_body().await {
            body_bytes += chunk.len();
            if body_bytes > MAX_BODY_BYTES {
                break;
            }
        }
        let body = json!({
            "method": method,
            "path": path,
            "query": query,
            "headers": headers,
            "body_bytes": body_bytes,
        });
        let body = serde_json::to_vec_pretty(&body).expect("JSON values serialize");
        Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .expect("static response parts are valid")
    }
}
