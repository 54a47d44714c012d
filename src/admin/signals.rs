//! `POST /ssf/events/{name}` on the admin listener: Shared Signals push
//! delivery (RFC 8935). The transmitter named in the path authenticates
//! with its configured bearer secret and sends one SET as
//! `application/secevent+jwt`; the answer is `202` once it is verified and
//! applied (or recognized as a replay), else `400` with RFC 8935's
//! `{"err", "description"}`.

use std::sync::Arc;

use http::{Method, Response, StatusCode};
use pingora::protocols::http::ServerSession;
use serde_json::json;

use super::revocations::{bearer, read_body};
use crate::ssf::set::MAX_SET_BYTES;
use crate::ssf::{Receiver, Refused};

pub const PREFIX: &str = "/ssf/events/";

pub async fn handle(receiver: &Arc<Receiver>, session: &mut ServerSession) -> Response<Vec<u8>> {
    let header = session.req_header();
    let name = header.uri.path().trim_start_matches(PREFIX).to_string();
    let Some(transmitter) = receiver.transmitter(&name).cloned() else {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            b"no such transmitter\n".to_vec(),
        );
    };
    if header.method != Method::POST {
        let mut response = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            b"push SETs with POST\n".to_vec(),
        );
        response
            .headers_mut()
            .insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
        return response;
    }
    let token = bearer(&header.headers).map(str::to_string);
    let content_type = header
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let body = match read_body(session, MAX_SET_BYTES).await {
        Ok(body) => body,
        Err(error) => {
            return error_reply(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &error.to_string(),
            );
        }
    };
    let pushed = receiver
        .push(
            &transmitter,
            token.as_deref(),
            content_type.as_deref(),
            &body,
        )
        .await;
    match pushed {
        Ok(()) => reply(StatusCode::ACCEPTED, "text/plain", Vec::new()),
        Err(Refused::Set(error)) => error_reply(
            StatusCode::BAD_REQUEST,
            error.code.as_str(),
            &error.description,
        ),
        // Not the SET's fault: the transmitter should send it again.
        Err(Refused::Storage) => error_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the revocation could not be stored; see jwtgate's log",
        ),
    }
}

fn error_reply(status: StatusCode, code: &str, description: &str) -> Response<Vec<u8>> {
    let mut body = json!({ "err": code, "description": description }).to_string();
    body.push('\n');
    reply(status, "application/json", body.into_bytes())
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    super::reply(status, content_type, body)
}
