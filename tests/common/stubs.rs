//! Small servers the gateway talks to besides the recording upstream: a
//! JSON endpoint (a stub JWKS), a fixed body of any type, and addresses
//! where nothing listens.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};

use super::fixture_bytes;

/// Serves `body` as `application/json` to every request on a loopback port,
/// then closes the connection; `headers` (`name: value\r\n` lines) are added
/// to each answer. Its thread lives as long as the test process.
pub fn serve_json(body: Vec<u8>, headers: &str) -> SocketAddr {
    serve_body(
        body,
        &format!("content-type: application/json\r\n{headers}"),
    )
}

/// [`serve_json`] with the `content-type` in `headers`.
pub fn serve_body(body: Vec<u8>, headers: &str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the JSON server");
    let addr = listener.local_addr().expect("JSON server address");
    let headers = headers.to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    addr
}

/// A JWKS endpoint serving the fixture JWK Set, cacheable for five minutes.
pub fn serve_jwks() -> SocketAddr {
    serve_json(fixture_bytes("jwks.json"), "cache-control: max-age=300\r\n")
}

/// A loopback address where nothing listens: bound, then released.
pub fn closed_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr
}
