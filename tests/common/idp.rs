//! A real OpenID Provider for the integration tests: `tests/idp/server.mjs`
//! (oidc-provider on Node.js), started on a loopback port per test.
//!
//! Node.js and the IdP's packages (`npm ci --prefix tests/idp`) are required:
//! when they are missing the tests fail with a message saying so, they never
//! skip. Every process started here is killed when its [`Idp`] is dropped,
//! also when a test panics.

#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "dpop.rs"]
pub mod dpop;

#[path = "idp_bound.rs"]
mod bound;

#[path = "idp_introspection.rs"]
mod introspection;

// Each test crate uses the part it needs.
#[allow(unused_imports)]
pub use bound::{ClientAuth, Reply, TokenRequest, access_token};
#[allow(unused_imports)]
pub use dpop::{DpopKey, Proof, Tamper};
#[allow(unused_imports)]
pub use introspection::{
    ClientKey, INTROSPECTION_JWT, INTROSPECTOR_JWT, KeyKind, SignedIntrospection,
};

pub const CLIENT_ID: &str = "jwtgate-test";
pub const CLIENT_SECRET: &str = "jwtgate-test-secret";
/// The resource indicator every token is requested for; it becomes `aud`.
pub const RESOURCE: &str = "urn:jwtgate:test-api";
/// Tokens for this resource are opaque: introspected, not verified.
pub const OPAQUE_RESOURCE: &str = "urn:jwtgate:opaque-api";
/// Its tokens are bound to the DPoP key of the proof sent with the token
/// request (`cnf.jkt`); a request without a proof is refused.
pub const DPOP_CLIENT: &str = "dpop-client";
/// Its tokens are bound to the certificate it presents (`cnf["x5t#S256"]`).
pub const MTLS_CLIENT: &str = "mtls-client";
/// A resource server's client: it may introspect any token, and get none.
pub const INTROSPECTOR: &str = "gateway-introspector";
/// The request header carrying the client certificate (URL-encoded PEM) to
/// the IdP, which listens on plain HTTP: it stands in for a TLS terminator.
pub const CLIENT_CERT_HEADER: &str = "x-client-cert";

/// The secret of each of the IdP's clients.
pub fn client_secret(client_id: &str) -> String {
    format!("{client_id}-secret")
}

const LISTENING: &str = "IDP_LISTENING ";
const STARTUP_LIMIT: Duration = Duration::from_secs(20);
const SETUP_HINT: &str = "the tests with the IdP or DPoP proofs need Node.js (>= 20) on PATH \
     and the test IdP's packages: run `npm ci --prefix tests/idp` from the repository root";

/// `tests/idp`.
pub fn idp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/idp")
}

fn server_script() -> PathBuf {
    idp_dir().join("server.mjs")
}

/// Panics, loudly, when `node` or `tests/idp/node_modules` is missing.
pub fn require_node() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        match Command::new("node").arg("--version").output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => panic!(
                "`node --version` failed ({}): {}\n{SETUP_HINT}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(e) => panic!("cannot run `node` ({e})\n{SETUP_HINT}"),
        }
        let package = idp_dir().join("node_modules/oidc-provider/package.json");
        assert!(
            package.is_file(),
            "{} is missing: the test IdP's packages are not installed\n{SETUP_HINT}",
            package.display()
        );
    });
}

/// How to start the IdP. `Default` is an OS-chosen port and one ephemeral
/// RS256 key.
#[derive(Debug, Clone, Default)]
pub struct IdpConfig {
    /// `IDP_PORT`: 0 lets the OS choose; a fixed port restarts an IdP on the
    /// port (and so with the issuer) of a previous one.
    pub port: u16,
    /// `IDP_KEYS_FILE`: private JWKs, the first one signs.
    pub keys_file: Option<PathBuf>,
    /// `IDP_JWKS_CACHE_CONTROL` (default `max-age=60`).
    pub jwks_cache_control: Option<String>,
    /// `IDP_JWKS_DELAY_MS`: every JWKS response is delayed this long.
    pub jwks_delay_ms: Option<u64>,
    /// `IDP_ISSUER` (`{port}` is replaced by the bound port).
    pub issuer: Option<String>,
    /// `IDP_INTROSPECTOR_PUBLIC_KEY` and `IDP_INTROSPECTOR_KEY_ID`: the
    /// key [`INTROSPECTOR_JWT`] authenticates with (`private_key_jwt`);
    /// without it that client does not exist.
    pub introspector_key: Option<ClientKey>,
    /// Any further environment variables.
    pub env: Vec<(String, String)>,
}

/// A running test IdP.
pub struct Idp {
    child: Option<Child>,
    port: u16,
    config: IdpConfig,
    /// Holds `stderr.log`.
    dir: tempfile::TempDir,
    client: reqwest::Client,
}

/// Why a start attempt failed without panicking: the process exited.
struct Exited {
    stderr: String,
}

impl Idp {
    /// An IdP on an OS-chosen port with an ephemeral RS256 key.
    pub async fn start() -> Self {
        Self::start_with(IdpConfig::default()).await
    }

    /// Starts `node tests/idp/server.mjs` and waits for `IDP_LISTENING <port>`.
    /// On a fixed port a few attempts are made, since the previous process's
    /// port may not be free again at once.
    pub async fn start_with(config: IdpConfig) -> Self {
        require_node();
        let attempts = if config.port == 0 { 1 } else { 10 };
        let mut last = String::new();
        for _ in 0..attempts {
            match Self::try_start(&config).await {
                Ok(idp) => return idp,
                Err(Exited { stderr }) if config.port != 0 && stderr.contains("EADDRINUSE") => {
                    last = stderr;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(Exited { stderr }) => {
                    panic!("the test IdP exited during startup ({config:?}); stderr:\n{stderr}")
                }
            }
        }
        panic!(
            "the test IdP could not listen on port {} after {attempts} attempts; stderr:\n{last}",
            config.port
        )
    }

    async fn try_start(config: &IdpConfig) -> Result<Self, Exited> {
        let dir = tempfile::tempdir().expect("tempdir for the IdP");
        let stderr = File::create(dir.path().join("stderr.log")).expect("IdP stderr file");
        let mut command = Command::new("node");
        command
            .arg(server_script())
            .current_dir(idp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        // Only what this config says: nothing inherited from the caller's shell.
        for name in [
            "IDP_PORT",
            "IDP_ISSUER",
            "IDP_KEYS_FILE",
            "IDP_RESOURCE",
            "IDP_EXTRA_RESOURCES",
            "IDP_ACCESS_TOKEN_TTL",
            "IDP_JWKS_CACHE_CONTROL",
            "IDP_JWKS_DELAY_MS",
            "IDP_OPAQUE_RESOURCE",
            "IDP_DPOP_NONCES",
            "IDP_INTROSPECTOR_PUBLIC_KEY",
            "IDP_INTROSPECTOR_KEY_ID",
            "IDP_INTROSPECTION_DELAY_MS",
        ] {
            command.env_remove(name);
        }
        command.env("IDP_PORT", config.port.to_string());
        if let Some(file) = &config.keys_file {
            command.env("IDP_KEYS_FILE", file);
        }
        if let Some(value) = &config.jwks_cache_control {
            command.env("IDP_JWKS_CACHE_CONTROL", value);
        }
        if let Some(ms) = config.jwks_delay_ms {
            command.env("IDP_JWKS_DELAY_MS", ms.to_string());
        }
        if let Some(issuer) = &config.issuer {
            command.env("IDP_ISSUER", issuer);
        }
        if let Some(key) = &config.introspector_key {
            command.env("IDP_INTROSPECTOR_PUBLIC_KEY", &key.public_pem);
            if let Some(kid) = &key.kid {
                command.env("IDP_INTROSPECTOR_KEY_ID", kid);
            }
        }
        for (name, value) in &config.env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start `node {}`: {e}\n{SETUP_HINT}",
                server_script().display()
            )
        });
        let stdout = child.stdout.take().expect("piped stdout");
        // Owned from here on: a panic below still kills the process.
        let mut idp = Self {
            child: Some(child),
            port: 0,
            config: config.clone(),
            dir,
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("http client"),
        };

        let (lines, received) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("idp-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if lines.send(line).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn the IdP stdout reader");

        let deadline = Instant::now() + STARTUP_LIMIT;
        loop {
            match received.try_recv() {
                Ok(line) => {
                    if let Some(port) = line.strip_prefix(LISTENING) {
                        idp.port = port.trim().parse().unwrap_or_else(|e| {
                            panic!("bad IdP port in {line:?} ({e}); stderr:\n{}", idp.stderr())
                        });
                        return Ok(idp);
                    }
                    continue;
                }
                Err(mpsc::TryRecvError::Empty) | Err(mpsc::TryRecvError::Disconnected) => {}
            }
            let exited = idp
                .child
                .as_mut()
                .expect("running")
                .try_wait()
                .expect("try_wait on the IdP");
            if let Some(status) = exited {
                // Lines already written are still in the channel.
                if let Ok(line) = received.recv_timeout(Duration::from_millis(200))
                    && line.starts_with(LISTENING)
                {
                    panic!("the test IdP exited right after starting ({status})");
                }
                idp.child = None;
                return Err(Exited {
                    stderr: format!("exit status: {status}\n{}", idp.stderr()),
                });
            }
            if Instant::now() > deadline {
                panic!(
                    "the test IdP printed no `{}<port>` within {STARTUP_LIMIT:?} ({config:?}); stderr:\n{}",
                    LISTENING.trim_end(),
                    idp.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `iss` of its tokens, also the discovery base.
    pub fn issuer(&self) -> String {
        match &self.config.issuer {
            Some(issuer) => issuer.replace("{port}", &self.port.to_string()),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// The root URL, where `/test/stats` lives whatever the issuer path.
    fn root(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// A client-credentials access token (a JWT, `aud` = [`RESOURCE`]).
    /// An empty `scope` requests none (the token then has no `scope` claim).
    pub async fn token(&self, scope: &str) -> String {
        access_token(&self.issue(&TokenRequest::new(CLIENT_ID, scope)).await)
    }

    /// `(discovery, jwks, token)` requests received since start or the last
    /// [`Idp::reset_stats`].
    pub async fn stats(&self) -> (u64, u64, u64) {
        let body = self.stats_body().await;
        let count = |name: &str| {
            body[name]
                .as_u64()
                .unwrap_or_else(|| panic!("no {name:?} in {body}"))
        };
        (count("discovery"), count("jwks"), count("token"))
    }

    /// Requests received at `path` (relative to the issuer) since start or
    /// the last [`Idp::reset_stats`], whatever their method and outcome.
    pub async fn requests_to(&self, path: &str) -> u64 {
        let body = self.stats_body().await;
        let by_path = body["by_path"]
            .as_object()
            .unwrap_or_else(|| panic!("no by_path in {body}"));
        by_path.get(path).map_or(0, |count| {
            count
                .as_u64()
                .unwrap_or_else(|| panic!("by_path[{path:?}] is not a count: {body}"))
        })
    }

    /// `/test/stats`, parsed.
    async fn stats_body(&self) -> Value {
        let url = format!("{}/test/stats", self.root());
        self.client
            .get(&url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
    }

    pub async fn reset_stats(&self) {
        let url = format!("{}/test/stats/reset", self.root());
        let response = self
            .client
            .post(&url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        assert_eq!(response.status(), 204, "POST {url}");
    }

    /// SIGTERM (the IdP closes its connections and exits 0), then waits;
    /// kills it if it does not exit within a few seconds.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            let signalled = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            let deadline = Instant::now() + Duration::from_secs(5);
            while signalled && Instant::now() < deadline {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The gateway's issuer `idp` for the IdP at `issuer`, as YAML list items:
/// found by discovery, fetched as `fetch` (a flow mapping) says, the
/// algorithms the IdP signs with and tokens for `audience`; `settings` (a
/// `key: value` each) are added to it.
pub fn issuer_yaml(issuer: &str, fetch: &str, audience: &str, settings: &[&str]) -> String {
    let mut yaml = format!(
        "  - name: idp\n    issuer: \"{issuer}\"\n    discovery: true\n    fetch: {fetch}\n    algorithms: [RS256, ES256, PS256]\n    audiences: [\"{audience}\"]\n"
    );
    for setting in settings {
        yaml.push_str(&format!("    {setting}\n"));
    }
    yaml
}

/// A route `/api` to the recording upstream for tokens with `scope`,
/// forwarding `claims` (a flow mapping of claim to header).
pub fn api_route(scope: &str, claims: &str) -> String {
    format!(
        "  - name: api\n    match: {{ path_prefix: /api }}\n    upstream: {{ addrs: [\"{{UPSTREAM}}\"] }}\n    auth: {{ scopes: {{ all_of: [\"{scope}\"] }} }}\n    forward: {{ claims: {claims} }}\n"
    )
}

/// A private JWK from `node server.mjs genkey <alg> <kid>` (RS256, PS256 or
/// ES256).
pub fn genkey(alg: &str, kid: &str) -> Value {
    require_node();
    let output = Command::new("node")
        .arg(server_script())
        .args(["genkey", alg, kid])
        .current_dir(idp_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run node genkey: {e}\n{SETUP_HINT}"));
    assert!(
        output.status.success(),
        "genkey {alg} {kid} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let key: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "genkey printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    assert_eq!(key["kid"], kid, "genkey kid");
    key
}

/// Writes `{"keys": [...]}` to a new file in `dir` (for `IDP_KEYS_FILE`).
pub fn write_keys(dir: &Path, keys: &[Value]) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = dir.join(format!(
        "idp-keys-{}.json",
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let document = serde_json::json!({ "keys": keys });
    std::fs::write(&path, document.to_string())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// `application/x-www-form-urlencoded`, without pulling in a form encoder.
fn form_urlencoded(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Every byte but RFC 3986's unreserved characters as `%XX`.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
