//! Gateway configs: the YAML most tests share (listeners on the ports
//! [`Gateway::start`](super::Gateway::start) picks, an issuer trusting the
//! fixture keys) built here, so a test file writes only its routes and what
//! its scenario changes. And `jwtgate` subcommands run on a config file.

use std::process::Command;

use super::fixtures;

/// The issuer of most test configs.
pub const ISS: &str = "https://issuer.test";

/// An issuer named `down` whose keys never arrive: its JWKS URI is a port
/// nothing listens on, fetched with short timeouts, and `required: false`
/// lets the gateway start without it. Tokens of `https://down.test` get a
/// 503.
pub const DOWN_ISSUER: &str = r#"
  - name: down
    issuer: https://down.test
    algorithms: [RS256]
    audiences: [api]
    jwks_uri: http://127.0.0.1:9/jwks
    fetch: { allow_http: true, connect_timeout: 200ms, timeout: 500ms }
    required: false
"#;

/// One route for every path, to the recording upstream, without
/// authentication.
pub const OPEN_ROUTE: &str = r#"
  - name: open
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { mode: off }
"#;

/// A gateway config under construction. [`Config::new`] starts from two
/// worker threads, the proxy listener on `{PROXY}` and the admin listener on
/// `{ADMIN}`; [`Config::routes`] renders it with the test's routes.
#[derive(Clone)]
pub struct Config {
    server: Option<String>,
    listen: String,
    sections: String,
    issuers: String,
}

impl Config {
    pub fn new() -> Self {
        Self {
            server: Some("threads: 2".to_string()),
            listen: r#"{ http: "127.0.0.1:{PROXY}" }"#.to_string(),
            sections: String::new(),
            issuers: String::new(),
        }
    }

    /// [`Config::new`] trusting the issuer `main` at `iss`, as
    /// [`Config::issuer`] sets it up.
    pub fn main(iss: &str) -> Self {
        Self::new().issuer("main", iss)
    }

    /// `settings` (flow-mapping entries) in `server` beside `threads: 2`.
    pub fn server(mut self, settings: &str) -> Self {
        let server = self.server.get_or_insert_with(String::new);
        if !server.is_empty() {
            server.push_str(", ");
        }
        server.push_str(settings);
        self
    }

    /// No `server` block: the binary's defaults, a worker thread per core.
    pub fn default_server(mut self) -> Self {
        self.server = None;
        self
    }

    /// `listen` as given: a flow mapping, or a block of indented lines.
    pub fn listen(mut self, listen: &str) -> Self {
        self.listen = listen.trim_end().to_string();
        self
    }

    /// The clear-text listener on `{PROXY}` and a TLS one on `{HTTPS}`
    /// serving `certificates` (flow mappings), with `settings` (a
    /// `key: value` each) for the TLS listener.
    pub fn https(self, certificates: &[&str], settings: &[&str]) -> Self {
        let mut listen = String::from(
            "\n  http: \"127.0.0.1:{PROXY}\"\n  https:\n    addr: \"127.0.0.1:{HTTPS}\"\n    certificates:\n",
        );
        for certificate in certificates {
            listen.push_str(&format!("      - {certificate}\n"));
        }
        for setting in settings {
            listen.push_str(&format!("    {setting}\n"));
        }
        self.listen(&listen)
    }

    /// A top-level block such as `limits: { ... }`, before `issuers`.
    pub fn section(mut self, yaml: &str) -> Self {
        self.sections.push_str(yaml.trim_matches('\n'));
        self.sections.push('\n');
        self
    }

    /// The issuer `name` at `iss`: RS256 tokens for audience `api`, verified
    /// with the fixture JWKS.
    pub fn issuer(self, name: &str, iss: &str) -> Self {
        self.issuer_with(name, iss, &[])
    }

    /// [`Config::issuer`] with more of its settings, a `key: value` each.
    pub fn issuer_with(self, name: &str, iss: &str, settings: &[&str]) -> Self {
        let mut entry = format!(
            "  - name: {name}\n    issuer: {iss}\n    algorithms: [RS256]\n    audiences: [api]\n"
        );
        for setting in settings {
            entry.push_str(&format!("    {setting}\n"));
        }
        entry.push_str("    jwks_file: \"{FIXTURES}/jwks.json\"\n");
        self.issuers(&entry)
    }

    /// Issuers the test writes out itself, as YAML list items.
    pub fn issuers(mut self, yaml: &str) -> Self {
        self.issuers.push_str(yaml.trim_matches('\n'));
        self.issuers.push('\n');
        self
    }

    /// The config text, ending with `routes` (YAML list items).
    pub fn routes(&self, routes: &str) -> String {
        let mut yaml = String::new();
        if let Some(server) = &self.server {
            yaml.push_str(&format!("server: {{ {server} }}\n"));
        }
        let gap = if self.listen.starts_with('\n') {
            ""
        } else {
            " "
        };
        yaml.push_str(&format!("listen:{gap}{}\n", self.listen));
        yaml.push_str("admin: { addr: \"127.0.0.1:{ADMIN}\" }\n");
        yaml.push_str(&self.sections);
        if !self.issuers.is_empty() {
            yaml.push_str(&format!("issuers:\n{}", self.issuers));
        }
        yaml.push_str(&format!("routes:\n{}\n", routes.trim_matches('\n')));
        yaml
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------------------
// `jwtgate` on a config file
// ---------------------------------------------------------------------------

/// How a `jwtgate` subcommand ended and what it printed.
#[derive(Debug)]
pub struct Ran {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// Standard output and standard error, in that order.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// `jwtgate check -c <file>` on `yaml`.
pub fn check(yaml: &str) -> Ran {
    jwtgate_on(yaml, &["check"], &[], &[])
}

/// `jwtgate <command> -c <file> <args>` with `yaml` written to a file of
/// its own and `env` set. Nothing is bound or connected to, so `{PROXY}`,
/// `{ADMIN}` and `{UPSTREAM}` are filled in with fixed addresses, and
/// `{FIXTURES}` as for a gateway. `RUST_LOG` is removed: what is asserted
/// on is the command's own output.
pub fn jwtgate_on(yaml: &str, command: &[&str], args: &[&str], env: &[(&str, &str)]) -> Ran {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.yaml");
    let yaml = yaml
        .replace("{PROXY}", "18080")
        .replace("{ADMIN}", "19090")
        .replace("{UPSTREAM}", "127.0.0.1:9")
        .replace("{FIXTURES}", &fixtures().display().to_string());
    std::fs::write(&path, yaml).expect("write config");
    let output = Command::new(env!("CARGO_BIN_EXE_jwtgate"))
        .args(command)
        .arg("-c")
        .arg(&path)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|e| panic!("run jwtgate {command:?}: {e}"));
    Ran {
        success: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `benches/load/big_config.py` with `args`: a config at platform scale.
pub fn generated(args: &[&str]) -> String {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/load/big_config.py");
    let output = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs the config generator");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("the config is text")
}
