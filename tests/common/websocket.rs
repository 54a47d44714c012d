//! A WebSocket between a Python `websockets` client and a `websockets` echo
//! server, through the gateway: what the tests of connections that outlive
//! their request (long_lived.rs, shared_signals.rs) open and watch end.

#![allow(dead_code)]

use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::common::{Gateway, venv_bin};

/// The echo server: prints its port, then one line per connection that
/// ends, with the close code and reason it received.
pub const ECHO_SERVER: &str = r#"
import asyncio, sys
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

async def echo(ws):
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass  # the close code below says how
    finally:
        code = ws.close_code if ws.close_code is not None else 1006
        print(f"closed {code} {ws.close_reason or ''}".strip(), flush=True)

async def main():
    async with serve(echo, "127.0.0.1", 0) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()

asyncio.run(main())
"#;

/// The client: connects with the token, has one message echoed, prints
/// `ready`, then sends a message every 200 ms for `seconds` and prints how
/// the connection ended (`open` when it never did) with the Unix time.
pub const CLIENT: &str = r#"
import json, sys, time
from websockets.sync.client import connect
from websockets.exceptions import ConnectionClosed

url, token, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
with connect(url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=10) as ws:
    ws.send("hello")
    assert ws.recv(timeout=10) == "hello"
    print("ready", flush=True)
    end, outcome = time.time() + seconds, {"ended": False}
    try:
        while time.time() < end:
            ws.send("ping")
            assert ws.recv(timeout=1) == "ping"
            time.sleep(0.2)
    except ConnectionClosed as closed:
        frame = closed.rcvd
        outcome = {"ended": True, "code": frame.code if frame else 1006,
                   "reason": frame.reason if frame else ""}
    except TimeoutError:
        # Not answered: the connection is going away; see how it closes.
        try:
            ws.recv(timeout=10)
        except ConnectionClosed as closed:
            frame = closed.rcvd
            outcome = {"ended": True, "code": frame.code if frame else 1006,
                       "reason": frame.reason if frame else ""}
    outcome["at"] = time.time()
    print(json.dumps(outcome), flush=True)
"#;

pub struct Python {
    child: Child,
    stdout: std::io::BufReader<ChildStdout>,
    _dir: tempfile::TempDir,
}

impl Python {
    pub fn run(script: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("script.py");
        std::fs::write(&path, script).expect("write the script");
        let python = venv_bin("python");
        let mut child = Command::new(&python)
            .arg(&path)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("run {} (scripts/test installs it): {e}", python.display()));
        let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        Self {
            child,
            stdout,
            _dir: dir,
        }
    }

    /// The next line the script prints; blocks the calling thread.
    pub fn line(&mut self) -> String {
        use std::io::BufRead;
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read the script");
        assert!(!line.is_empty(), "the script ended without a word");
        line.trim_end().to_string()
    }

    pub async fn next_line(mut self) -> (Self, String) {
        tokio::task::spawn_blocking(move || {
            let line = self.line();
            (self, line)
        })
        .await
        .expect("reader thread")
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A websockets client through `gateway` on `path`, once its first message
/// came back.
pub async fn client(gateway: &Gateway, path: &str, token: &str, seconds: u32) -> Python {
    let url = format!("ws://{}{path}", gateway.proxy_addr());
    let client = Python::run(CLIENT, &[&url, token, &seconds.to_string()]);
    let (client, ready) = client.next_line().await;
    assert_eq!(ready, "ready");
    client
}

pub async fn outcome(client: Python) -> Value {
    let (_client, line) = client.next_line().await;
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// Seconds since the Unix epoch, to set beside the client's `at`.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `client` was closed with 1008 "token revoked" less than a second after
/// `since` (a Unix time taken just before the revocation was made), and the
/// echo server behind it saw the same close.
pub async fn expect_revoked_at_once(client: Python, echo: Python, since: f64) {
    let ended = outcome(client).await;
    assert_eq!(ended["code"], 1008, "{ended}");
    assert_eq!(ended["reason"], "token revoked", "{ended}");
    let after = ended["at"].as_f64().unwrap() - since;
    assert!(after < 1.0, "ended {after:.3}s after the revocation");
    let (_echo, upstream_saw) = echo.next_line().await;
    assert_eq!(upstream_saw, "closed 1008 token revoked");
}

/// One connection of `route` was ended for `reason`.
pub async fn expect_ended(gateway: &Gateway, route: &str, reason: &str) {
    gateway
        .expect_metric(
            "jwtgate_connections_ended_total",
            &[("route", route), ("reason", reason)],
            1.0,
        )
        .await;
}
