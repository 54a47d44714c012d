//! Test harness for the integration tests: a recording upstream, the real
//! `jwtgate` binary started on OS-chosen loopback ports, token builders,
//! gateway configs built from their shared parts, a test PKI, stub servers,
//! nginx and Caddy processes, a raw HTTP/1.1 client (for request lines
//! reqwest would normalize) and a Prometheus text reader.
//!
//! Every test gets its own upstream and gateway process, so tests can run in
//! parallel without sharing ports, metrics or request logs.

#![allow(dead_code)]

mod config;
mod daemon;
mod gateway;
mod pki;
mod prometheus;
mod raw_http;
mod stubs;
mod tokens;
mod upstream;

use std::collections::BTreeSet;
use std::net::TcpListener as StdTcpListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

// Each test crate uses the part of the harness its tests need.
#[allow(unused_imports)]
pub use self::{
    config::*, daemon::*, gateway::*, pki::*, prometheus::*, raw_http::*, stubs::*, tokens::*,
    upstream::*,
};

/// The realm every challenge carries with the default config.
pub const REALM: &str = "jwtgate";

/// Absolute path of the test-only key fixtures.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys")
}

/// A loopback port the OS considers free right now. Pingora binds its own
/// sockets, so the port is read back and released; a per-process set makes
/// sure two gateways of this test binary never get the same one.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let listener = StdTcpListener::bind("127.0.0.1:0").expect("bind for a free port");
        let port = listener.local_addr().expect("local addr").port();
        drop(listener);
        if HANDED_OUT.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// A fresh recording upstream and a gateway running `config` in front of it.
pub async fn start(config: &str) -> (Upstream, Gateway) {
    let upstream = Upstream::start();
    let gateway = Gateway::start(config, &upstream).await;
    (upstream, gateway)
}
