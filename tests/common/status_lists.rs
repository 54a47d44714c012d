//! The test Status List server (tests/idp/status_lists.mjs): Token Status
//! Lists made by npm `@sd-jwt/jwt-status-list`, a library jwtgate does not
//! use, signed with a fixture key and served on a loopback port the OS picks.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::common::{ISS, fixtures, http_client};
use crate::idp::{idp_dir, require_node};

pub struct ListServer {
    child: Child,
    pub port: u16,
    client: reqwest::Client,
}

impl ListServer {
    /// Starts the server, on `port` (0: one the OS picks).
    pub fn start(port: u16) -> Self {
        require_node();
        let mut child = Command::new("node")
            .arg(idp_dir().join("status_lists.mjs"))
            .current_dir(idp_dir())
            .env("STATUS_PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node status_lists.mjs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("read the list server's port");
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the list server did not start: {line:?}"));
        Self {
            child,
            port,
            client: http_client(),
        }
    }

    /// The prefix every list is served under (the issuer's `allowed_uris`).
    pub fn prefix(&self) -> String {
        format!("http://127.0.0.1:{}/lists/", self.port)
    }

    pub fn uri(&self, name: &str) -> String {
        format!("{}{name}", self.prefix())
    }

    /// Serves list `name` as `spec` says (see status_lists.mjs), signed by
    /// the fixture key `rsa.pem` as `rsa-1` unless `spec` names another.
    pub async fn put(&self, name: &str, spec: Value) {
        let mut spec = spec;
        let map = spec.as_object_mut().expect("spec is an object");
        map.entry("iss").or_insert(json!(ISS));
        let key = map.get("key").and_then(Value::as_str).unwrap_or("rsa.pem");
        let key = fixtures().join(key).display().to_string();
        map.insert("key".into(), json!(key));
        let url = format!("http://127.0.0.1:{}/control/lists/{name}", self.port);
        let response = self.client.put(url).json(&spec).send().await.unwrap();
        assert_eq!(response.status(), 204, "{}", response.text().await.unwrap());
    }

    /// From now on, list `name` is answered with 503.
    pub async fn fail(&self, name: &str) {
        let url = format!("http://127.0.0.1:{}/control/fail/{name}", self.port);
        let response = self.client.put(url).send().await.unwrap();
        assert_eq!(response.status(), 204);
    }

    /// How many GETs `path` got.
    pub async fn requests(&self, path: &str) -> u64 {
        let url = format!("http://127.0.0.1:{}/control/requests", self.port);
        let counts: Value = self
            .client
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        counts.get(path).and_then(Value::as_u64).unwrap_or(0)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ListServer {
    fn drop(&mut self) {
        self.stop();
    }
}
