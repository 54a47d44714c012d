//! Test harness for the integration tests, shared by every `tests/*.rs`
//! crate so each test file holds its scenario and not a copy of the setup:
//!
//! - `gateway`: the real `jwtgate` binary on OS-chosen loopback ports, and
//!   what tests ask of it (requests, reloads, signals, metrics, log lines);
//! - `upstream`: the recording upstream, and the thread-and-runtime server
//!   under it that misbehaving upstreams use too;
//! - `config`: gateway configs built from the shared parts (listeners, the
//!   fixture-key issuer), and `jwtgate check` and friends on a config file;
//! - `tokens`: tokens signed by the fixture keys;
//! - `pki`: CAs and certificates made with `openssl`;
//! - `stubs`: a stub JWKS (any JSON) endpoint, and closed addresses;
//! - `daemon`: nginx and Caddy beside the gateway;
//! - `grpc`: a grpcio upstream and client (unary and streaming calls);
//! - `raw_http`, `prometheus`, `wait`: a raw HTTP/1.1 client, the metrics
//!   text reader, bounded polling.
//!
//! `idp.rs` (the test OpenID provider), `redis.rs` (a real redis-server) and
//! `otlp.rs` (an OpenTelemetry trace receiver) and `websocket.rs` (a Python
//! `websockets` echo server and client) are included only by the crates
//! that need them.
//!
//! Every test gets its own upstream and gateway process, so tests can run in
//! parallel without sharing ports, metrics or request logs.

#![allow(dead_code)]

mod config;
mod daemon;
mod gateway;
mod grpc;
mod pki;
mod prometheus;
mod raw_http;
mod stubs;
mod tokens;
mod upstream;
mod wait;

use std::collections::BTreeSet;
use std::net::TcpListener as StdTcpListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

// Each test crate uses the part of the harness its tests need.
#[allow(unused_imports)]
pub use self::{
    config::*, daemon::*, gateway::*, grpc::*, pki::*, prometheus::*, raw_http::*, stubs::*,
    tokens::*, upstream::*, wait::*,
};

/// The realm every challenge carries with the default config.
pub const REALM: &str = "jwtgate";

/// Absolute path of the test-only key fixtures.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys")
}

/// A program in the virtualenv scripts/setup fills from PyPI: under
/// `$JWTGATE_TOOLS` when set (CI gives it a folder of its own), else the
/// repository's `.tools`.
pub fn venv_bin(name: &str) -> PathBuf {
    tools_folder().join("venv/bin").join(name)
}

/// The repository's files matching `patterns` (git pathspecs), tracked or
/// new, sorted: not what a local run writes under an ignored folder
/// (`target/`, `benches/load/results/`, `.tools/`).
pub fn repository_files(patterns: &[&str]) -> Vec<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let listed = std::process::Command::new("git")
        .args([
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "-z",
            "--",
        ])
        .args(patterns)
        .current_dir(repo)
        .output()
        .expect("run git ls-files");
    assert!(listed.status.success(), "git ls-files: {listed:?}");
    let mut found: Vec<PathBuf> = listed
        .stdout
        .split(|byte| *byte == 0)
        .filter(|name| !name.is_empty())
        .map(|name| repo.join(String::from_utf8_lossy(name).as_ref()))
        .filter(|path| path.is_file())
        .collect();
    found.sort();
    found
}

/// A Rust tool scripts/setup builds from crates.io (its `cargo:` arguments).
pub fn cargo_tool_bin(name: &str) -> PathBuf {
    tools_folder().join("cargo/bin").join(name)
}

fn tools_folder() -> PathBuf {
    std::env::var_os("JWTGATE_TOOLS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools"),
        PathBuf::from,
    )
}

/// A loopback port the OS considers free right now. Pingora binds its own
/// sockets, so the port is read back and released; a per-process set makes
/// sure two gateways of this test binary never get the same one. Released,
/// it can still be taken by any other listener before the gateway binds it,
/// which [`Gateway::start`] finds out and retries.
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

/// A client that ignores proxy settings from the environment: the tests
/// talk to loopback only.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client")
}
