//! Integration tests for the `jwtgate` command line: `check`, `token mint`,
//! `token inspect`, `token verify` and `--help`. Every test runs the real
//! binary and asserts on its exit status and output; nothing here listens on
//! or connects to a socket.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwtgate::clock::{Clock, SystemClock};
use serde_json::{Map, Value, json};

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");
const REPO_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.yaml");
const ISS: &str = "https://issuer.cli-test.example";
const AUD: &str = "cli-api";

/// Variables `gateway.yaml` reads; removed so the developer's environment
/// cannot change what the tests see.
const GATEWAY_VARS: [&str; 3] = ["JWTGATE_LISTEN", "JWTGATE_ADMIN", "JWTGATE_ECHO"];

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl From<std::process::Output> for Output {
    fn from(out: std::process::Output) -> Self {
        Self {
            code: out.status.code(),
            stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
        }
    }
}

impl Output {
    fn describe(&self) -> String {
        format!(
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    #[track_caller]
    fn assert_success(&self) {
        assert_eq!(self.code, Some(0), "expected success\n{}", self.describe());
    }

    /// Exit 1 (the CLI's failure code), never a panic (101) or a signal.
    #[track_caller]
    fn assert_failure(&self) {
        assert_eq!(self.code, Some(1), "expected exit 1\n{}", self.describe());
        self.assert_no_panic();
    }

    #[track_caller]
    fn assert_no_panic(&self) {
        for text in [&self.stdout, &self.stderr] {
            assert!(
                !text.contains("panicked") && !text.contains("RUST_BACKTRACE"),
                "the binary panicked\n{}",
                self.describe()
            );
        }
    }

    #[track_caller]
    fn assert_stdout_contains(&self, needle: &str) {
        assert!(
            self.stdout.contains(needle),
            "expected stdout to contain {needle:?}\n{}",
            self.describe()
        );
    }

    #[track_caller]
    fn assert_stdout_lacks(&self, needle: &str) {
        assert!(
            !self.stdout.contains(needle),
            "expected stdout not to contain {needle:?}\n{}",
            self.describe()
        );
    }

    /// Trimmed, non-empty stdout lines.
    fn lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect()
    }
}

fn jwtgate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_jwtgate"));
    command.env_remove("RUST_LOG").env_remove("RUST_BACKTRACE");
    command
}

/// `jwtgate` without the variables `gateway.yaml` reads, for commands on
/// the repository config.
fn repo_jwtgate() -> Command {
    let mut command = jwtgate();
    for var in GATEWAY_VARS {
        command.env_remove(var);
    }
    command
}

fn output(command: &mut Command) -> Output {
    command.output().expect("failed to run jwtgate").into()
}

fn run(args: &[&str]) -> Output {
    output(jwtgate().args(args))
}

fn run_with_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = jwtgate()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to run jwtgate");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes())
        .expect("writing stdin");
    child
        .wait_with_output()
        .expect("waiting for jwtgate")
        .into()
}

fn key(name: &str) -> String {
    format!("{KEYS}/{name}")
}

/// A config file in its own temporary directory (removed on drop).
struct TempConfig {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl TempConfig {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, text).expect("writing the config");
        Self { _dir: dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("temp path is UTF-8")
    }

    /// The `file:line:column:` prefix of an error at that position.
    fn at(&self, line: u32, column: u32) -> String {
        format!("{}:{line}:{column}:", self.path.display())
    }

    fn dir(&self) -> &Path {
        self.path.parent().expect("config has a parent dir")
    }
}

/// Runs `check` on a config expected to be refused: exit 1, nothing on
/// stdout claiming the config is fine.
#[track_caller]
fn check_fails(config: &TempConfig) -> Output {
    check_fails_with(jwtgate().args(["check", "-c", config.path()]))
}

#[track_caller]
fn check_fails_with(command: &mut Command) -> Output {
    let out = output(command);
    out.assert_failure();
    assert!(
        !out.stdout.contains("OK"),
        "a refused config must not be reported OK\n{}",
        out.describe()
    );
    out
}

#[track_caller]
fn assert_contains(out: &Output, needle: &str) {
    assert!(
        out.stdout.contains(needle) || out.stderr.contains(needle),
        "expected output to contain {needle:?}\n{}",
        out.describe()
    );
}

/// One issuer whose keys are the fixture JWKS, plus two routes: `read`
/// (any of items:read, items:admin) and `admin` (all of items:admin).
fn verify_config() -> TempConfig {
    TempConfig::new(&format!(
        r#"issuers:
  - name: main
    issuer: {ISS}
    algorithms: [RS256, ES256, EdDSA]
    audiences: [{AUD}]
    jwks_file: {jwks}
routes:
  - name: read
    match: {{ path_prefix: /read }}
    upstream: {{ addrs: ["127.0.0.1:9"] }}
    auth:
      issuers: [main]
      scopes: {{ any_of: ["items:read", "items:admin"] }}
  - name: admin
    match: {{ path_prefix: /admin }}
    upstream: {{ addrs: ["127.0.0.1:9"] }}
    auth:
      issuers: [main]
      scopes: {{ all_of: ["items:admin"] }}
"#,
        jwks = key("jwks.json"),
    ))
}

fn decode_segment(segment: &str) -> Value {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .unwrap_or_else(|e| panic!("segment {segment:?} is not base64url: {e}"));
    serde_json::from_slice(&bytes).expect("segment is JSON")
}

/// (header, claims) of a compact JWS.
fn decode(token: &str) -> (Value, Value) {
    let segments: Vec<&str> = token.split('.').collect();
    assert_eq!(segments.len(), 3, "not a compact JWS: {token:?}");
    (decode_segment(segments[0]), decode_segment(segments[1]))
}

/// Mints one token with the CLI and returns it.
#[track_caller]
fn mint(args: &[&str]) -> String {
    let mut full = vec!["token", "mint"];
    full.extend_from_slice(args);
    let out = run(&full);
    out.assert_success();
    let lines = out.lines();
    assert_eq!(lines.len(), 1, "expected one token\n{}", out.describe());
    lines[0].to_string()
}

/// An RS256 token for the fixture issuer, signed with rsa.pem (kid rsa-1).
fn mint_rsa(scope: &str) -> String {
    mint(&[
        "--key",
        &key("rsa.pem"),
        "--alg",
        "RS256",
        "--kid",
        "rsa-1",
        "--iss",
        ISS,
        "--aud",
        AUD,
        "--sub",
        "alice",
        "--scope",
        scope,
    ])
}

fn verify(config: &TempConfig, route: &str, token: &str) -> Output {
    run(&[
        "token",
        "verify",
        "-c",
        config.path(),
        "--route",
        route,
        token,
    ])
}

/// Whether stdout has a `PASS <check> ...` (or FAIL) line for exactly that check.
fn has_check_line(out: &Output, verdict: &str, check: &str) -> bool {
    out.lines().iter().any(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some(verdict) && words.next() == Some(check)
    })
}

#[track_caller]
fn assert_check_line(out: &Output, verdict: &str, check: &str) {
    assert!(
        has_check_line(out, verdict, check),
        "expected a `{verdict} {check}` line\n{}",
        out.describe()
    );
}

// ---------------------------------------------------------------- check ---

#[test]
fn check_accepts_the_repository_gateway_yaml() {
    let out = output(repo_jwtgate().args(["check", "-c", REPO_CONFIG]));
    out.assert_success();
    let first = out.lines()[0];
    assert_eq!(first, format!("{REPO_CONFIG}: OK"), "{}", out.describe());
    for needle in [
        "demo",
        "https://issuer.jwtgate.example",
        "demo-hmac",
        "https://hmac.jwtgate.example",
        "echo-admin",
        "echo",
        "maybe",
        "public",
        "issuers (2)",
        "routes (4)",
    ] {
        out.assert_stdout_contains(needle);
    }
    // Each route gets a summary line starting with its name.
    for route in ["echo-admin", "echo", "maybe", "public"] {
        assert!(
            out.lines()
                .iter()
                .any(|l| l.split_whitespace().next() == Some(route)),
            "no summary line for route {route:?}\n{}",
            out.describe()
        );
    }
}

#[test]
fn config_before_the_command_is_refused_not_ignored() {
    // `-c` before `check` used to be parsed as the default run's option and
    // dropped: `check` then validated ./gateway.yaml instead of the file given.
    let config = TempConfig::new("not: [valid");
    let out = check_fails_with(jwtgate().args(["-c", config.path(), "check"]));
    assert_contains(&out, "-c/--config goes after the command");
    let out = check_fails_with(jwtgate().args(["-c", config.path(), "token", "inspect", "x"]));
    assert_contains(&out, "-c/--config goes after the command");
    // Global options before the command still work.
    output(repo_jwtgate().args(["--log-format", "json", "check", "-c", REPO_CONFIG]))
        .assert_success();
}

#[test]
fn check_reports_unknown_field_with_file_line_and_column() {
    let config = TempConfig::new(
        "routes:\n  - name: r\n    upstream: { addrs: [\"127.0.0.1:9\"] }\n    colour: blue\n    auth: { mode: off }\n",
    );
    let out = check_fails(&config);
    assert_contains(&out, &config.at(4, 5));
    assert_contains(&out, "routes[0]: unknown field `colour`");
}

/// `check` refuses `text` with exactly `message`, at `line:column`.
#[track_caller]
fn assert_refused_at(text: &str, (line, column): (u32, u32), message: &str) {
    let config = TempConfig::new(text);
    let out = check_fails(&config);
    let expected = format!("{} {message}", config.at(line, column));
    assert_eq!(out.stderr.trim(), expected, "{}", out.describe());
}

/// A value of the wrong type names the field's path, the type wanted in
/// words and the value found; a key written twice says where the first
/// one is. Neither speaks of the parser's internals.
#[test]
fn check_reports_type_errors_and_duplicate_keys_in_words() {
    assert_refused_at(
        "routes:\n  - name: r\n    upstream: { addrs: [\"127.0.0.1:9\"] }\n    auth: { mode: off }\n  - name: s\n    match: { methods: GET }\n",
        (6, 23),
        "routes[1].match.methods: expected a list, got \"GET\"",
    );
    assert_refused_at(
        "issuers: []\nroutes:\n  - name: r\n    auth: { mode: off }\n    upstream: { addrs: [\"127.0.0.1:9\"] }\nissuers: []\n",
        (6, 1),
        "duplicate key \"issuers\" (first at line 1)",
    );
}

#[test]
fn check_reports_unknown_issuer_at_the_reference() {
    let config = TempConfig::new(&format!(
        r#"issuers:
  - name: main
    issuer: {ISS}
    algorithms: [RS256]
    audiences: [{AUD}]
    jwks_file: {jwks}
routes:
  - name: r
    upstream: {{ addrs: ["127.0.0.1:9"] }}
    auth:
      issuers: [main, nope]
"#,
        jwks = key("jwks.json"),
    ));
    let out = check_fails(&config);
    // `      issuers: [main, nope]`: "nope" starts at column 23 of line 11.
    assert_contains(&out, &config.at(11, 23));
    assert_contains(&out, "issuer \"nope\" is not defined");
}

#[test]
fn check_reports_unsupported_algorithm() {
    let config = TempConfig::new(&format!(
        r#"issuers:
  - name: main
    issuer: {ISS}
    algorithms: [RS256, none]
    audiences: [{AUD}]
    jwks_file: {jwks}
routes:
  - name: r
    upstream: {{ addrs: ["127.0.0.1:9"] }}
"#,
        jwks = key("jwks.json"),
    ));
    let out = check_fails(&config);
    // `    algorithms: [RS256, none]`: "none" starts at column 25 of line 4.
    assert_contains(&out, &config.at(4, 25));
    assert_contains(&out, "unsupported algorithm \"none\"");
}

/// An issuer block starting on line 2 (`  - name: <name>`, the name at
/// column 11), which is where issuer errors point.
fn issuer_config(name: &str, body: &str) -> TempConfig {
    TempConfig::new(&format!(
        "issuers:\n  - name: {name}\n    issuer: {ISS}\n{body}routes:\n  - name: r\n    upstream: {{ addrs: [\"127.0.0.1:9\"] }}\n"
    ))
}

/// Runs `check` on `issuer_config(name, body)`, expecting it refused with
/// the error pointing at the issuer's name (line 2, column 11).
#[track_caller]
fn refused_issuer(name: &str, body: &str) -> Output {
    let config = issuer_config(name, body);
    let out = check_fails(&config);
    assert_contains(&out, &config.at(2, 11));
    out
}

#[test]
fn check_refuses_hmac_algorithm_with_a_jwks() {
    let out = refused_issuer(
        "mixed",
        &format!(
            "    algorithms: [RS256, HS256]\n    audiences: [{AUD}]\n    jwks_file: {}\n",
            key("jwks.json")
        ),
    );
    assert_contains(&out, "issuer \"mixed\"");
    assert_contains(&out, "HS256 needs an HMAC secret");
}

#[test]
fn check_refuses_rsa_algorithm_with_an_hmac_secret() {
    let out = refused_issuer(
        "confused",
        &format!(
            "    algorithms: [HS256, RS256]\n    audiences: [{AUD}]\n    hmac_secret_file: {}\n",
            key("hs256.secret")
        ),
    );
    assert_contains(&out, "issuer \"confused\"");
    assert_contains(&out, "RS256 cannot be verified with an HMAC secret");
}

#[test]
fn check_refuses_a_short_hmac_secret() {
    let config = issuer_config(
        "shorty",
        &format!(
            "    algorithms: [HS256]\n    audiences: [{AUD}]\n    hmac_secret_env: JWTGATE_CLI_TEST_SHORT_SECRET\n"
        ),
    );
    let out = check_fails_with(
        jwtgate()
            .env("JWTGATE_CLI_TEST_SHORT_SECRET", "too-short-secret")
            .args(["check", "-c", config.path()]),
    );
    assert_contains(&out, &config.at(2, 11));
    assert_contains(&out, "HMAC secret is 16 bytes");
    assert_contains(&out, "at least 32 bytes");

    // The same config with a long enough secret passes.
    let out = output(
        jwtgate()
            .env(
                "JWTGATE_CLI_TEST_SHORT_SECRET",
                "0123456789abcdef0123456789abcdef",
            )
            .args(["check", "-c", config.path()]),
    );
    out.assert_success();
    out.assert_stdout_contains("OK");
}

#[test]
fn check_refuses_a_jwks_with_a_weak_rsa_key() {
    let out = refused_issuer(
        "weak",
        &format!(
            "    algorithms: [RS256]\n    audiences: [{AUD}]\n    jwks_file: {}\n",
            key("jwks-weak-rsa.json")
        ),
    );
    assert_contains(&out, "issuer \"weak\"");
    assert_contains(&out, "weak-1024 refused: RSA modulus is 1024 bits");
}

#[test]
fn check_refuses_empty_audiences_without_opt_out() {
    let body = format!(
        "    algorithms: [RS256]\n    jwks_file: {}\n",
        key("jwks.json")
    );
    let out = refused_issuer("anyaud", &body);
    assert_contains(&out, "audiences is empty");
    assert_contains(&out, "skip_audience_check");

    // The explicit opt-out makes the same issuer acceptable.
    let config = issuer_config("anyaud", &format!("{body}    skip_audience_check: true\n"));
    let out = run(&["check", "-c", config.path()]);
    out.assert_success();
    out.assert_stdout_contains("any (check skipped)");
}

#[test]
fn check_reports_an_unset_environment_variable_with_its_line() {
    let config = TempConfig::new(
        "listen:\n  http: \"127.0.0.1:8080\"\nadmin:\n  addr: \"${JWTGATE_CLI_TEST_UNSET_ADMIN}\"\nroutes:\n  - name: r\n    upstream: { addrs: [\"127.0.0.1:9\"] }\n    auth: { mode: off }\n",
    );
    let out = check_fails_with(jwtgate().env_remove("JWTGATE_CLI_TEST_UNSET_ADMIN").args([
        "check",
        "-c",
        config.path(),
    ]));
    // `  addr: "${...}"`: the reference starts at column 10 of line 4.
    assert_contains(&out, &config.at(4, 10));
    assert_contains(
        &out,
        "environment variable JWTGATE_CLI_TEST_UNSET_ADMIN is not set",
    );
}

#[test]
fn check_reports_a_yaml_syntax_error_with_its_position() {
    // `auth` is indented by three spaces: neither a key of the route (four)
    // nor a new list item.
    let config = TempConfig::new(
        "routes:\n  - name: r\n    upstream: { addrs: [\"127.0.0.1:9\"] }\n   auth: { mode: off }\n",
    );
    let out = check_fails(&config);
    assert_contains(&out, &config.at(4, 4));
}

#[test]
fn check_reports_a_missing_config_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("absent.yaml");
    let out = check_fails_with(jwtgate().arg("check").arg("-c").arg(&missing));
    assert_contains(&out, &format!("{}: cannot read", missing.display()));
}

#[test]
fn check_interpolates_environment_variables_and_defaults() {
    let config = TempConfig::new(
        "# a commented-out ${JWTGATE_CLI_TEST_IN_COMMENT} is ignored\nlisten:\n  http: \"${JWTGATE_CLI_TEST_LISTEN}\"\nadmin:\n  addr: \"${JWTGATE_CLI_TEST_ADMIN:-127.0.0.1:19191}\"\nroutes:\n  - name: ${JWTGATE_CLI_TEST_ROUTE:-public-route}\n    upstream: { addrs: [\"127.0.0.1:9\"] }\n    auth: { mode: off }\n",
    );
    let out = output(
        jwtgate()
            .env("JWTGATE_CLI_TEST_LISTEN", "127.0.0.1:18181")
            .env_remove("JWTGATE_CLI_TEST_ADMIN")
            .env_remove("JWTGATE_CLI_TEST_ROUTE")
            .env_remove("JWTGATE_CLI_TEST_IN_COMMENT")
            .args(["check", "-c", config.path()]),
    );
    out.assert_success();
    out.assert_stdout_contains("listen 127.0.0.1:18181");
    out.assert_stdout_contains("admin 127.0.0.1:19191");
    out.assert_stdout_contains("public-route");

    // A set variable wins over the default.
    let out = output(
        jwtgate()
            .env("JWTGATE_CLI_TEST_LISTEN", "127.0.0.1:18181")
            .env("JWTGATE_CLI_TEST_ADMIN", "127.0.0.1:19292")
            .env_remove("JWTGATE_CLI_TEST_ROUTE")
            .args(["check", "-c", config.path()]),
    );
    out.assert_success();
    out.assert_stdout_contains("admin 127.0.0.1:19292");
}

#[test]
fn check_interpolates_the_repository_gateway_yaml() {
    let out = output(
        repo_jwtgate()
            .env("JWTGATE_LISTEN", "127.0.0.1:28080")
            .args(["check", "-c", REPO_CONFIG]),
    );
    out.assert_success();
    out.assert_stdout_contains("listen 127.0.0.1:28080 · admin 127.0.0.1:9090");
}

// ----------------------------------------------------------- token mint ---

#[test]
fn mint_prints_a_token_with_the_requested_claims() {
    let token = mint(&[
        "--key",
        &key("rsa.pem"),
        "--alg",
        "RS256",
        "--kid",
        "rsa-1",
        "--iss",
        ISS,
        "--aud",
        AUD,
        "--sub",
        "alice",
        "--scope",
        "a b",
        "--claim",
        "role=admin",
        "--claim",
        "n=5",
    ]);
    let (header, claims) = decode(&token);
    assert_eq!(header["alg"], "RS256", "{header}");
    assert_eq!(header["kid"], "rsa-1", "{header}");
    assert_eq!(header["typ"], "JWT", "{header}");

    assert_eq!(claims["iss"], ISS, "{claims}");
    assert_eq!(claims["aud"], AUD, "{claims}");
    assert_eq!(claims["sub"], "alice", "{claims}");
    assert_eq!(claims["scope"], "a b", "{claims}");
    assert_eq!(claims["role"], json!("admin"), "{claims}");
    assert_eq!(claims["n"], json!(5), "n must be the number 5: {claims}");
    let iat = claims["iat"].as_u64().expect("iat is a number");
    let exp = claims["exp"].as_u64().expect("exp is a number");
    assert_eq!(exp - iat, 3600, "default lifetime is 1h: {claims}");
    let jti = claims["jti"].as_str().expect("jti is a string");
    assert!(!jti.is_empty(), "{claims}");
}

#[test]
fn mint_count_prints_distinct_tokens() {
    let out = run(&[
        "token",
        "mint",
        "--key",
        &key("rsa.pem"),
        "--kid",
        "rsa-1",
        "--iss",
        ISS,
        "--count",
        "5",
    ]);
    out.assert_success();
    let tokens = out.lines();
    assert_eq!(tokens.len(), 5, "{}", out.describe());
    let distinct: HashSet<&str> = tokens.iter().copied().collect();
    assert_eq!(distinct.len(), 5, "tokens repeat\n{}", out.describe());
    let jtis: HashSet<String> = tokens
        .iter()
        .map(|t| {
            decode(t).1["jti"]
                .as_str()
                .expect("jti is a string")
                .to_string()
        })
        .collect();
    assert_eq!(jtis.len(), 5, "jti values repeat: {jtis:?}");
}

#[test]
fn mint_supports_ec_eddsa_and_hmac_keys() {
    for (alg, file, kid) in [
        ("ES256", "ec256.pem", Some("ec256-1")),
        ("EdDSA", "ed25519.pem", Some("ed25519-1")),
        ("HS256", "hs256.secret", None),
    ] {
        let key_path = key(file);
        let mut args = vec![
            "--key", &key_path, "--alg", alg, "--iss", ISS, "--sub", "bob",
        ];
        if let Some(kid) = kid {
            args.extend(["--kid", kid]);
        }
        let token = mint(&args);
        let (header, claims) = decode(&token);
        assert_eq!(header["alg"], alg, "{alg}: {header}");
        if let Some(kid) = kid {
            assert_eq!(header["kid"], kid, "{alg}: {header}");
        }
        assert_eq!(claims["sub"], "bob", "{alg}: {claims}");
    }
}

#[test]
fn minted_tokens_of_every_algorithm_verify_against_the_fixture_keys() {
    let config = TempConfig::new(&format!(
        r#"issuers:
  - name: main
    issuer: {ISS}
    algorithms: [RS256, ES256, EdDSA]
    audiences: [{AUD}]
    jwks_file: {jwks}
  - name: hmac
    issuer: https://hmac.cli-test.example
    algorithms: [HS256]
    audiences: [{AUD}]
    hmac_secret_file: {secret}
routes:
  - name: any
    upstream: {{ addrs: ["127.0.0.1:9"] }}
"#,
        jwks = key("jwks.json"),
        secret = key("hs256.secret"),
    ));
    for (alg, file, kid, iss) in [
        ("RS256", "rsa.pem", Some("rsa-1"), ISS),
        ("ES256", "ec256.pem", Some("ec256-1"), ISS),
        ("EdDSA", "ed25519.pem", Some("ed25519-1"), ISS),
        (
            "HS256",
            "hs256.secret",
            None,
            "https://hmac.cli-test.example",
        ),
    ] {
        let key_path = key(file);
        let mut args = vec![
            "--key", &key_path, "--alg", alg, "--iss", iss, "--aud", AUD, "--sub", "carol",
        ];
        if let Some(kid) = kid {
            args.extend(["--kid", kid]);
        }
        let token = mint(&args);
        let out = verify(&config, "any", &token);
        out.assert_success();
        assert_check_line(&out, "PASS", "signature");
        assert!(
            out.lines()
                .last()
                .is_some_and(|l| l.starts_with("ACCEPTED")),
            "{alg}\n{}",
            out.describe()
        );
    }
}

#[test]
fn minted_hs256_token_verifies_with_a_crlf_terminated_secret_file() {
    // A secret file saved by a Windows editor ends in "\r\n". The gateway
    // drops the line ending when loading hmac_secret_file; a token minted
    // from the very same file must verify.
    let config_dir = tempfile::tempdir().expect("temp dir");
    let secret = config_dir.path().join("crlf.secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\r\n").expect("write secret");
    let config = TempConfig::new(&format!(
        r#"issuers:
  - name: hmac
    issuer: {ISS}
    algorithms: [HS256]
    audiences: [{AUD}]
    hmac_secret_file: {}
routes:
  - name: r
    upstream: {{ addrs: ["127.0.0.1:9"] }}
"#,
        secret.display()
    ));
    let token = mint(&[
        "--key",
        secret.to_str().expect("UTF-8 path"),
        "--alg",
        "HS256",
        "--iss",
        ISS,
        "--aud",
        AUD,
        "--sub",
        "dave",
    ]);
    let out = verify(&config, "r", &token);
    assert_check_line(&out, "PASS", "signature");
    out.assert_success();
}

#[test]
fn mint_with_the_wrong_key_type_fails_cleanly() {
    let out = run(&[
        "token",
        "mint",
        "--key",
        &key("rsa.pem"),
        "--alg",
        "ES256",
        "--iss",
        ISS,
    ]);
    out.assert_failure();
    assert!(
        out.stdout.trim().is_empty(),
        "no token expected\n{}",
        out.describe()
    );
    assert!(
        out.stderr
            .contains("rsa.pem holds an RSA key, which does not sign with ES256: use --alg RS256"),
        "{}",
        out.describe()
    );
}

/// Without --alg, the key says which algorithm: ES256 or ES384 by the EC
/// key's curve, EdDSA, RS256. A secret file has nothing to say: --alg is
/// asked for. A wrong --alg names the key's kind and the one to use.
#[test]
fn mint_picks_the_algorithm_from_the_key() {
    for (file, alg) in [
        ("ec256.pem", "ES256"),
        ("ec384.pem", "ES384"),
        ("ed25519.pem", "EdDSA"),
        ("rsa.pem", "RS256"),
    ] {
        let token = mint(&["--key", &key(file), "--iss", ISS]);
        assert_eq!(decode(&token).0["alg"], alg, "{file}");
    }
    for (file, alg, message) in [
        (
            "ec256.pem",
            Some("ES384"),
            "ec256.pem holds an EC P-256 key, which does not sign with ES384: use --alg ES256",
        ),
        (
            "ed25519.pem",
            Some("ES256"),
            "ed25519.pem holds an Ed25519 key, which does not sign with ES256: use --alg EdDSA",
        ),
        (
            "hs256.secret",
            None,
            "hs256.secret is not a PEM private key, so the algorithm can't be read from it: give --alg (HS256, HS384 or HS512 for a secret file)",
        ),
    ] {
        let path = key(file);
        let mut args = vec!["token", "mint", "--key", &path];
        args.extend(alg.iter().flat_map(|alg| ["--alg", alg]));
        let out = run(&args);
        out.assert_failure();
        assert_contains(&out, message);
        assert!(
            !out.stderr.contains("InvalidKeyFormat"),
            "{}",
            out.describe()
        );
    }
}

#[test]
fn mint_with_an_unsupported_algorithm_fails_cleanly() {
    let out = run(&["token", "mint", "--key", &key("rsa.pem"), "--alg", "none"]);
    out.assert_failure();
    assert!(out.stdout.trim().is_empty(), "{}", out.describe());
    assert!(
        out.stderr.contains("unsupported algorithm \"none\""),
        "{}",
        out.describe()
    );
}

#[test]
fn mint_with_a_missing_key_file_reports_the_cause_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("absent.pem");
    let out = output(
        jwtgate()
            .args(["token", "mint", "--alg", "RS256", "--key"])
            .arg(&missing),
    );
    out.assert_failure();
    assert!(out.stdout.trim().is_empty(), "{}", out.describe());
    assert!(
        out.stderr
            .contains(&format!("cannot read key file {}", missing.display())),
        "{}",
        out.describe()
    );
    // The OS error is part of the message; printing it again as the error's
    // cause is noise.
    let cause = std::fs::read(&missing)
        .expect_err("the key file is absent")
        .to_string();
    assert_eq!(
        out.stderr.matches(&cause).count(),
        1,
        "the cause {cause:?} should appear once\n{}",
        out.describe()
    );
}

// -------------------------------------------------------- token inspect ---

/// The pretty-printed JSON between `label:` and the next unindented line.
fn inspect_block(out: &Output, label: &str) -> Value {
    let start = out
        .stdout
        .find(&format!("{label}:\n"))
        .unwrap_or_else(|| panic!("no {label:?} block\n{}", out.describe()))
        + label.len()
        + 2;
    let rest = &out.stdout[start..];
    let end = rest
        .find("\n}")
        .unwrap_or_else(|| panic!("unterminated {label:?} block\n{}", out.describe()))
        + 2;
    serde_json::from_str(&rest[..end])
        .unwrap_or_else(|e| panic!("{label} block is not JSON ({e})\n{}", out.describe()))
}

#[test]
fn inspect_prints_header_and_claims_marked_unverified() {
    let token = mint_rsa("items:read");
    let (header, claims) = decode(&token);

    let out = run(&["token", "inspect", &token]);
    out.assert_success();
    out.assert_stdout_contains("UNVERIFIED");
    assert_eq!(inspect_block(&out, "header"), header);
    assert_eq!(inspect_block(&out, "claims"), claims);
    out.assert_stdout_contains("\"kid\": \"rsa-1\"");
    out.assert_stdout_contains("\"sub\": \"alice\"");
}

#[test]
fn inspect_reads_the_token_from_stdin() {
    let token = mint_rsa("items:read");
    let (header, claims) = decode(&token);

    let out = run_with_stdin(&["token", "inspect", "-"], &format!("{token}\n"));
    out.assert_success();
    out.assert_stdout_contains("UNVERIFIED");
    assert_eq!(inspect_block(&out, "header"), header);
    assert_eq!(inspect_block(&out, "claims"), claims);
}

#[test]
fn inspect_refuses_input_that_is_not_a_jwt() {
    for input in ["hello", "not.a.jwt", ""] {
        let out = run(&["token", "inspect", input]);
        out.assert_failure();
        assert!(
            !out.stdout.contains("UNVERIFIED"),
            "{input:?}\n{}",
            out.describe()
        );
        assert!(
            out.stderr.contains("error:")
                && ["not a compact JWS", "not unpadded base64url", "not JSON"]
                    .iter()
                    .any(|phrase| out.stderr.contains(phrase)),
            "{input:?}: expected a clear message\n{}",
            out.describe()
        );
    }
    let out = run(&["token", "inspect", "hello"]);
    assert!(
        out.stderr
            .contains("not a compact JWS: expected 3 dot-separated segments, found 1"),
        "{}",
        out.describe()
    );
}

// --------------------------------------------------------- token verify ---

#[test]
fn verify_accepts_a_valid_token_explaining_every_check() {
    let config = verify_config();
    let token = mint_rsa("items:read");
    let out = verify(&config, "read", &token);
    out.assert_success();
    for check in [
        "structure",
        "issuer",
        "algorithm",
        "key",
        "signature",
        "exp",
        "aud",
        "scopes",
    ] {
        assert_check_line(&out, "PASS", check);
    }
    out.assert_stdout_lacks("FAIL");
    let last = *out.lines().last().expect("some output");
    assert!(
        last.starts_with("ACCEPTED") && last.contains("\"main\"") && last.contains("alice"),
        "the verdict comes last\n{}",
        out.describe()
    );

    // The same, reading the token from standard input.
    let out = run_with_stdin(
        &[
            "token",
            "verify",
            "-c",
            config.path(),
            "--route",
            "read",
            "-",
        ],
        &format!("{token}\n"),
    );
    out.assert_success();
    assert!(
        out.lines()
            .last()
            .is_some_and(|l| l.starts_with("ACCEPTED")),
        "{}",
        out.describe()
    );
}

#[test]
fn verify_rejects_an_expired_token() {
    let config = verify_config();
    let now = SystemClock.now_unix();
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(ISS));
    claims.insert("aud".into(), json!(AUD));
    claims.insert("sub".into(), json!("alice"));
    claims.insert("scope".into(), json!("items:read"));
    // Well past the issuer's 30 s leeway.
    claims.insert("iat".into(), json!(now - 7200));
    claims.insert("exp".into(), json!(now - 3600));
    let signer = jwtgate::mint::Signer::from_file(
        Path::new(&key("rsa.pem")),
        jwtgate::jose::Algorithm::RS256,
    )
    .expect("rsa.pem is an RSA private key");
    let token = signer
        .sign(&claims, Some("rsa-1"), Some("JWT"))
        .expect("signing");

    let out = verify(&config, "read", &token);
    out.assert_failure();
    assert_check_line(&out, "PASS", "signature");
    assert_check_line(&out, "FAIL", "exp");
    out.assert_stdout_contains("REJECTED: 401 invalid_token (reason: expired)");
    out.assert_stdout_lacks("ACCEPTED");
}

#[test]
fn verify_rejects_insufficient_scope_with_403() {
    let config = verify_config();
    let token = mint_rsa("items:read");
    let out = verify(&config, "admin", &token);
    out.assert_failure();
    assert_check_line(&out, "PASS", "signature");
    assert_check_line(&out, "FAIL", "scopes");
    out.assert_stdout_contains("REJECTED: 403 insufficient_scope");
    out.assert_stdout_lacks("ACCEPTED");
}

#[test]
fn verify_rejects_a_bad_signature() {
    let config = verify_config();
    // Two valid tokens from the same key; the first one's header and claims
    // with the second one's (well-formed, but wrong) signature.
    let first = mint_rsa("items:read");
    let second = mint_rsa("items:admin");
    let (signed, _) = first.rsplit_once('.').expect("three segments");
    let (_, signature) = second.rsplit_once('.').expect("three segments");
    let forged = format!("{signed}.{signature}");

    let out = verify(&config, "read", &forged);
    out.assert_failure();
    assert_check_line(&out, "PASS", "structure");
    assert_check_line(&out, "PASS", "key");
    assert_check_line(&out, "FAIL", "signature");
    out.assert_stdout_contains("REJECTED: 401 invalid_token (reason: bad_signature)");
    assert!(
        !has_check_line(&out, "PASS", "exp"),
        "claims must not be checked after a bad signature\n{}",
        out.describe()
    );
}

#[test]
fn verify_with_an_unknown_route_lists_the_routes() {
    let config = verify_config();
    let token = mint_rsa("items:read");
    let out = verify(&config, "nope", &token);
    out.assert_failure();
    out.assert_stdout_lacks("ACCEPTED");
    assert!(
        out.stderr.contains("no route named \"nope\"")
            && out.stderr.contains("read")
            && out.stderr.contains("admin"),
        "{}",
        out.describe()
    );
}

#[test]
fn verify_the_documented_demo_token_against_the_repository_config() {
    // The flow from gateway.yaml's header comment.
    let token = mint(&common::demo_token_args(
        concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/dev-keys/rs256.pem"),
        "echo:read",
    ));
    let verify_repo = |route: &str| {
        output(repo_jwtgate().args([
            "token",
            "verify",
            "-c",
            REPO_CONFIG,
            "--route",
            route,
            &token,
        ]))
    };
    let out = verify_repo("echo");
    out.assert_success();
    out.assert_stdout_contains("ACCEPTED");

    let out = verify_repo("echo-admin");
    out.assert_failure();
    assert_check_line(&out, "FAIL", "scopes");
    out.assert_stdout_contains("REJECTED: 403 insufficient_scope");
}

// ----------------------------------------------------------------- help ---

#[test]
fn help_lists_the_commands() {
    let out = run(&["--help"]);
    out.assert_success();
    for command in ["run", "check", "token"] {
        assert!(
            out.lines()
                .iter()
                .any(|l| l.split_whitespace().next() == Some(command)),
            "no {command:?} in --help\n{}",
            out.describe()
        );
    }

    let out = run(&["token", "--help"]);
    out.assert_success();
    for command in ["mint", "inspect", "verify"] {
        assert!(
            out.lines()
                .iter()
                .any(|l| l.split_whitespace().next() == Some(command)),
            "no {command:?} in token --help\n{}",
            out.describe()
        );
    }
}

#[test]
fn check_resolves_relative_key_paths_against_the_config_directory() {
    // Relative key paths resolve against the config's directory: a JWKS
    // copied next to a temp config is found by its bare file name.
    let config = TempConfig::new(&format!(
        "issuers:\n  - name: rel\n    issuer: {ISS}\n    algorithms: [RS256]\n    audiences: [{AUD}]\n    jwks_file: keys.json\nroutes:\n  - name: r\n    upstream: {{ addrs: [\"127.0.0.1:9\"] }}\n"
    ));
    std::fs::copy(key("jwks.json"), config.dir().join("keys.json")).expect("copy jwks");
    let out = run(&["check", "-c", config.path()]);
    out.assert_success();
    out.assert_stdout_contains("rel");
}

#[test]
fn check_warns_about_query_string_tokens() {
    let route = |auth: &str| {
        TempConfig::new(&format!(
            "issuers:\n  - name: i\n    issuer: {ISS}\n    algorithms: [RS256]\n    audiences: [{AUD}]\n    jwks_file: {}\nroutes:\n  - name: legacy\n    upstream: {{ addrs: [\"127.0.0.1:9\"] }}\n    auth: {auth}\n",
            key("jwks.json")
        ))
    };
    let enabled = route("{ token_query: access_token }");
    let out = run(&["check", "-c", enabled.path()]);
    out.assert_success();
    assert_contains(
        &out,
        "warning: route \"legacy\" accepts tokens in the query parameter \"access_token\"",
    );

    let default = route("{ mode: required }");
    let out = run(&["check", "-c", default.path()]);
    out.assert_success();
    out.assert_stdout_lacks("query parameter");
}

#[test]
fn check_refuses_inconsistent_settings() {
    let jwks = key("jwks.json");
    let cases = [
        (
            "listen: { http: \"127.0.0.1:7000\" }\nadmin: { addr: \"127.0.0.1:7000\" }\nroutes:\n  - name: r\n    upstream: { addrs: [\"127.0.0.1:9\"] }\n    auth: { mode: off }\n".to_string(),
            "used by two listeners",
        ),
        (
            "token_cache: { max_entries: 0 }\nroutes:\n  - name: r\n    upstream: { addrs: [\"127.0.0.1:9\"] }\n    auth: { mode: off }\n".to_string(),
            "token_cache: max_entries, max_bytes and ttl must be positive",
        ),
        (
            format!("issuers:\n  - name: i\n    issuer: {ISS}\n    algorithms: [RS256]\n    audiences: [{AUD}]\n    jwks_file: {jwks}\n    token_type: {{ claim: token_use }}\nroutes:\n  - name: r\n    upstream: {{ addrs: [\"127.0.0.1:9\"] }}\n"),
            "token_type.claim and token_type.values go together",
        ),
        (
            format!("issuers:\n  - name: i\n    issuer: {ISS}\n    algorithms: [RS256]\n    audiences: [{AUD}]\n    jwks_uri: http://127.0.0.1:9/jwks\nroutes:\n  - name: r\n    upstream: {{ addrs: [\"127.0.0.1:9\"] }}\n"),
            "must be an https:// URL",
        ),
    ];
    for (text, message) in cases {
        let config = TempConfig::new(&text);
        let out = check_fails(&config);
        assert_contains(&out, message);
    }
}

// ---------------------------------------------------------- closed pipe ---

/// Runs jwtgate with stdout a pipe whose reading end is already closed:
/// every write fails with EPIPE, as under `jwtgate … | head -1` once head
/// has exited.
fn run_into_closed_pipe(command: &mut Command) -> Output {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = command
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .expect("failed to run jwtgate");
    out.into()
}

#[test]
fn a_closed_pipe_ends_output_quietly() {
    let mint = run_into_closed_pipe(jwtgate().args([
        "token",
        "mint",
        "--key",
        &key("rsa.pem"),
        "--count",
        "1000",
    ]));
    let check = run_into_closed_pipe(repo_jwtgate().args(["check", "-c", REPO_CONFIG]));
    let token = mint_rsa("items:read");
    let inspect = run_into_closed_pipe(jwtgate().args(["token", "inspect", &token]));
    let config = verify_config();
    let verify = run_into_closed_pipe(jwtgate().args([
        "token",
        "verify",
        "-c",
        config.path(),
        "--route",
        "read",
        &token,
    ]));
    for out in [mint, check, inspect, verify] {
        out.assert_success();
        assert_eq!(out.stderr, "", "nothing to say\n{}", out.describe());
    }
}

// ------------------------------------------------------- mint refusals ---

/// A refused `token mint`: failure, no token printed, `message` on stderr.
#[track_caller]
fn mint_refused(args: &[&str], exit: i32, message: &str) {
    let mut full = vec!["token", "mint"];
    full.extend_from_slice(args);
    let out = run(&full);
    out.assert_no_panic();
    assert_eq!(out.code, Some(exit), "{args:?}\n{}", out.describe());
    assert!(
        out.stdout.trim().is_empty(),
        "no token expected\n{}",
        out.describe()
    );
    assert!(
        out.stderr.contains(message),
        "expected {message:?}\n{}",
        out.describe()
    );
}

#[test]
fn mint_refuses_a_claim_that_an_option_also_sets() {
    let rsa = key("rsa.pem");
    for (option, value, claim) in [
        ("--iss", ISS, "iss=https://other.example"),
        ("--sub", "alice", "sub=bob"),
        ("--aud", AUD, "aud=other"),
        ("--scope", "a", "scope=b"),
        ("--ttl", "5m", "exp=1700000000"),
        ("--count", "2", "jti=fixed"),
    ] {
        let name = claim.split('=').next().unwrap();
        mint_refused(
            &["--key", &rsa, option, value, "--claim", claim],
            1,
            &format!("--claim \"{claim}\" contradicts {option}"),
        );
        // The claim alone is fine.
        let token = mint(&["--key", &rsa, "--claim", claim]);
        let (_, claims) = decode(&token);
        assert!(claims.get(name).is_some(), "{claims}");
    }
    mint_refused(
        &["--key", &rsa, "--claim", "role=a", "--claim", "role=b"],
        1,
        "--claim sets \"role\" twice",
    );
}

#[test]
fn mint_refuses_a_pem_key_or_a_short_secret_for_hmac() {
    mint_refused(
        &["--key", &key("rsa.pem"), "--alg", "HS256"],
        1,
        "is a PEM key, but HS256 signs with a shared secret",
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let short = dir.path().join("short.secret");
    std::fs::write(&short, "0123456789abcdef0123456789abcde\n").expect("write secret");
    mint_refused(
        &["--key", short.to_str().unwrap(), "--alg", "HS384"],
        1,
        "HMAC secret in",
    );
    mint_refused(
        &["--key", short.to_str().unwrap(), "--alg", "HS384"],
        1,
        "is 31 bytes; at least 32 are required",
    );
}

#[test]
fn mint_refuses_a_count_of_zero() {
    // A usage error, as clap reports them: exit 2.
    mint_refused(
        &["--key", &key("rsa.pem"), "--count", "0"],
        2,
        "the count must be 1 or more",
    );
}

#[test]
fn mint_makes_an_expired_token_on_request() {
    let rsa = key("rsa.pem");
    for ttl in [["--ttl=-5m"].as_slice(), ["--ttl", "-5m"].as_slice()] {
        let mut args = vec![
            "--key",
            &rsa,
            "--kid",
            "rsa-1",
            "--iss",
            ISS,
            "--aud",
            AUD,
            "--scope",
            "items:read",
        ];
        args.extend_from_slice(ttl);
        let token = mint(&args);
        let (_, claims) = decode(&token);
        let iat = claims["iat"].as_i64().expect("iat");
        let exp = claims["exp"].as_i64().expect("exp");
        assert_eq!(iat - exp, 300, "expired five minutes ago: {claims}");

        let out = verify(&verify_config(), "read", &token);
        out.assert_failure();
        assert_check_line(&out, "FAIL", "exp");
    }
}

/// `-h` of a command: every option line has a description after its name.
#[test]
fn every_option_has_help_text() {
    for command in [
        vec![],
        vec!["run"],
        vec!["check"],
        vec!["token", "mint"],
        vec!["token", "inspect"],
        vec!["token", "verify"],
    ] {
        let mut args = command.clone();
        args.push("-h");
        let out = run(&args);
        out.assert_success();
        let mut options = 0;
        for line in out.stdout.lines() {
            let trimmed = line.trim_start();
            if !trimmed.starts_with('-') {
                continue;
            }
            options += 1;
            let help = trimmed.split_once("  ").map(|(_, help)| help.trim());
            assert!(
                help.is_some_and(|h| !h.is_empty()),
                "{command:?}: option without help: {line:?}\n{}",
                out.describe()
            );
        }
        assert!(
            options >= 2,
            "{command:?}: no options found\n{}",
            out.describe()
        );
    }
}

// ------------------------------------------- verify failures, in values ---

/// The text of the `FAIL <check>` line.
#[track_caller]
fn fail_line<'a>(out: &'a Output, check: &str) -> &'a str {
    out.lines()
        .into_iter()
        .find(|line| line.starts_with(&format!("FAIL {check} ")))
        .unwrap_or_else(|| panic!("no FAIL {check} line\n{}", out.describe()))
}

/// No Rust debug names or option wrappers reach the user.
#[track_caller]
fn assert_plain_words(out: &Output) {
    for debug in [
        "Some(",
        "None",
        "InsufficientScope",
        "WrongAudience",
        "WrongIssuer",
        "Expired",
        "Required",
        "(Rsa)",
    ] {
        assert!(
            !out.stdout.contains(debug) && !out.stderr.contains(debug),
            "debug name {debug:?} in the output\n{}",
            out.describe()
        );
    }
}

fn signed(claims: Value) -> String {
    jwtgate::mint::Signer::from_file(Path::new(&key("rsa.pem")), jwtgate::jose::Algorithm::RS256)
        .expect("rsa.pem is an RSA private key")
        .sign(claims.as_object().unwrap(), Some("rsa-1"), Some("JWT"))
        .expect("signing")
}

#[test]
fn verify_explains_expiry_with_exp_and_now() {
    let config = verify_config();
    let exp = SystemClock.now_unix() - 3600;
    let token = signed(json!({
        "iss": ISS, "aud": AUD, "sub": "alice", "scope": "items:read",
        "iat": exp - 60, "exp": exp,
    }));
    let before = SystemClock.now_unix();
    let out = verify(&config, "read", &token);
    let after = SystemClock.now_unix();
    out.assert_failure();
    let line = fail_line(&out, "exp");
    assert!(line.contains(&format!("token exp {exp} (")), "{line}");
    let now: i64 = line
        .split_once(" now ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `now N` in {line}"));
    assert!((before..=after).contains(&now), "now {now} in {line}");
    assert!(
        line.contains(&format!("is {}s before now", now - exp)),
        "{line}"
    );
    assert!(line.contains("leeway 30s"), "{line}");
    assert_plain_words(&out);
}

#[test]
fn verify_explains_a_wrong_audience_with_both_sides() {
    let config = verify_config();
    let token = mint(&[
        "--key",
        &key("rsa.pem"),
        "--kid",
        "rsa-1",
        "--iss",
        ISS,
        "--aud",
        "someone-else",
        "--scope",
        "items:read",
    ]);
    let out = verify(&config, "read", &token);
    out.assert_failure();
    let line = fail_line(&out, "aud");
    assert!(
        line.contains("token aud \"someone-else\"") && line.contains(&format!("accepts [{AUD}]")),
        "{line}"
    );
    assert_plain_words(&out);
}

#[test]
fn verify_tells_an_unknown_issuer_from_one_not_allowed_on_the_route() {
    let other = "https://other.cli-test.example";
    let config = TempConfig::new(&format!(
        r#"issuers:
  - name: main
    issuer: {ISS}
    algorithms: [RS256]
    audiences: [{AUD}]
    jwks_file: {jwks}
  - name: other
    issuer: {other}
    algorithms: [RS256]
    audiences: [{AUD}]
    jwks_file: {jwks}
routes:
  - name: main-only
    upstream: {{ addrs: ["127.0.0.1:9"] }}
    auth: {{ issuers: [main] }}
"#,
        jwks = key("jwks.json"),
    ));
    let token_from = |iss: &str| {
        mint(&[
            "--key",
            &key("rsa.pem"),
            "--kid",
            "rsa-1",
            "--iss",
            iss,
            "--aud",
            AUD,
        ])
    };
    let out = verify(&config, "main-only", &token_from(other));
    out.assert_failure();
    let line = fail_line(&out, "issuer");
    assert!(
        line.contains(&format!("token iss \"{other}\" is issuer \"other\""))
            && line.contains("known but not allowed on this route")
            && line.contains(&format!("main ({ISS})")),
        "{line}"
    );

    let out = verify(
        &config,
        "main-only",
        &token_from("https://stranger.example"),
    );
    out.assert_failure();
    let line = fail_line(&out, "issuer");
    assert!(
        line.contains("token iss \"https://stranger.example\" is no configured issuer"),
        "{line}"
    );
    assert_plain_words(&out);
}

#[test]
fn verify_explains_missing_scopes_with_granted_and_required() {
    let config = verify_config();
    let out = verify(&config, "admin", &mint_rsa("items:read other"));
    out.assert_failure();
    let line = fail_line(&out, "scopes");
    assert!(
        line.contains("granted [items:read, other]")
            && line.contains("required all of [items:admin]")
            && line.contains("missing [items:admin]"),
        "{line}"
    );
    out.assert_stdout_contains("route \"admin\" (auth required)");
    assert_plain_words(&out);
}

// --------------------------------------------------- inspect, pasted ---

#[test]
fn inspect_accepts_a_pasted_bearer_header() {
    let token = mint_rsa("items:read");
    let (_, claims) = decode(&token);
    for pasted in [
        format!("Bearer {token}"),
        format!("Authorization: Bearer {token}"),
        format!("  authorization:bearer   {token}\n"),
    ] {
        let out = run(&["token", "inspect", &pasted]);
        out.assert_success();
        assert_eq!(inspect_block(&out, "claims"), claims, "{pasted:?}");
    }
    let out = run_with_stdin(
        &["token", "inspect", "-"],
        &format!("Authorization: Bearer {token}\n"),
    );
    out.assert_success();
    assert_eq!(inspect_block(&out, "claims"), claims);
}

#[test]
fn inspect_flags_unsigned_and_encrypted_tokens() {
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(r#"{"sub":"mallory"}"#)
    );
    let out = run(&["token", "inspect", &unsigned]);
    out.assert_success();
    out.assert_stdout_contains("WARNING: alg \"none\": the token is UNSIGNED");

    let jwe = format!(
        "{}.a2V5.aXY.Y2lwaGVy.dGFn",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#)
    );
    let out = run(&["token", "inspect", &jwe]);
    out.assert_failure();
    out.assert_stdout_contains("ENCRYPTED: five segments, a JWE");
    assert_eq!(
        inspect_block(&out, "header"),
        json!({"alg": "RSA-OAEP", "enc": "A256GCM"})
    );
    out.assert_stdout_lacks("UNVERIFIED");
}

// ------------------------------------------------- check, what run does ---

#[test]
fn check_and_run_refuse_listen_addresses_that_cannot_be_bound() {
    let route = "routes:\n  - name: r\n    upstream: { addrs: [\"127.0.0.1:9\"] }\n    auth: { mode: off }\n";
    for (field, yaml, value) in [
        ("listen.http", "listen: { http: \"8080\" }\n", "8080"),
        (
            "admin.addr",
            "admin: { addr: \"127.0.0.1:99999\" }\n",
            "127.0.0.1:99999",
        ),
        ("echo.addr", "echo: { addr: \"localhost\" }\n", "localhost"),
    ] {
        let config = TempConfig::new(&format!("{yaml}{route}"));
        let expected = format!("{field}: \"{value}\" is not a host:port address");
        let out = check_fails(&config);
        assert_contains(&out, &expected);
        let out = output(jwtgate().args(["run", "-c", config.path()]));
        out.assert_failure();
        assert_contains(&out, &expected);
    }
}

#[test]
fn check_names_the_value_in_its_errors() {
    let route = "routes:\n  - name: r\n    upstream: { addrs: [\"127.0.0.1:9\"] }\n    auth: { mode: off }\n";
    let config = TempConfig::new(&format!("tokens: {{ max_bytes: 10 }}\n{route}"));
    assert_contains(
        &check_fails(&config),
        "tokens.max_bytes is 10; it must be at least 64",
    );
    let config = TempConfig::new(
        "routes:\n  - name: r\n    match: { methods: [GET, \"PO ST\"] }\n    upstream: { addrs: [\"127.0.0.1:9\"] }\n    auth: { mode: off }\n",
    );
    assert_contains(
        &check_fails(&config),
        "route \"r\": match.methods: \"PO ST\" is not an HTTP method",
    );
    let config = TempConfig::new(&format!("token_cache: {{ max_entries: 0 }}\n{route}"));
    assert_contains(
        &check_fails(&config),
        "max_entries is 0, max_bytes 67108864, ttl 5m",
    );
    let remote = |extra: &str| {
        TempConfig::new(&format!(
            "issuers:\n  - name: i\n    issuer: {ISS}\n    algorithms: [RS256]\n    audiences: [{AUD}]\n    jwks_uri: https://127.0.0.1:9/jwks\n{extra}{route}"
        ))
    };
    for (extra, message) in [
        (
            "    refresh: { min_refresh: 2h, max_refresh: 1h }\n",
            "refresh.min_refresh (2h) must not exceed refresh.max_refresh (1h)",
        ),
        (
            "    fetch: { max_bytes: 10 }\n",
            "fetch.max_bytes is 10; it must be at least 1024",
        ),
        (
            "    token_type: { claim: token_use }\n",
            "claim is \"token_use\", values has 0",
        ),
    ] {
        assert_contains(&check_fails(&remote(extra)), message);
    }
}

#[test]
fn check_shows_each_route_match_and_policy() {
    let config = TempConfig::new(&format!(
        r#"issuers:
  - name: main
    issuer: {ISS}
    algorithms: [RS256]
    audiences: [{AUD}]
    jwks_file: {jwks}
routes:
  - name: admin
    match: {{ host: admin.example, path_prefix: /admin, methods: [get, POST] }}
    upstream: {{ addrs: ["127.0.0.1:9"] }}
    auth:
      issuers: [main]
      audiences: [admin-api]
      scopes: {{ all_of: [items:admin], any_of: [a, b] }}
      claims: [{{ claim: realm_access.roles, any_of: [admin, ops] }}]
  - name: maybe
    match: {{ path_prefix: /maybe }}
    upstream: {{ addrs: ["127.0.0.1:9"] }}
    auth: {{ mode: optional }}
  - name: open
    upstream: {{ addrs: ["127.0.0.1:9"] }}
    auth: {{ mode: off }}
"#,
        jwks = key("jwks.json"),
    ));
    let out = run(&["check", "-c", config.path()]);
    out.assert_success();
    for needle in [
        "admin        /admin (host admin.example) · GET, POST → 127.0.0.1:9",
        "auth required · issuers [main] · audiences [admin-api] · scopes all of [items:admin] and one of [a, b] · claim realm_access.roles one of [\"admin\", \"ops\"]",
        "maybe        /maybe (any host) · any method → 127.0.0.1:9",
        "auth optional · issuers [main] · any scopes",
        "open         / (any host) · any method → 127.0.0.1:9",
        "auth off",
    ] {
        out.assert_stdout_contains(needle);
    }
    assert_plain_words(&out);
}

#[test]
fn verify_explains_a_claim_rule_with_the_claim_and_the_rule() {
    let config = TempConfig::new(&format!(
        r#"issuers:
  - name: main
    issuer: {ISS}
    algorithms: [RS256]
    audiences: [{AUD}]
    jwks_file: {jwks}
routes:
  - name: admins
    upstream: {{ addrs: ["127.0.0.1:9"] }}
    auth: {{ claims: [{{ claim: realm_access.roles, any_of: [admin] }}, {{ claim: tenant, all_of: [acme] }}] }}
"#,
        jwks = key("jwks.json"),
    ));
    let token = |extra: &[&str]| {
        let rsa = key("rsa.pem");
        let mut args = vec!["--key", &rsa, "--kid", "rsa-1", "--iss", ISS, "--aud", AUD];
        args.extend_from_slice(extra);
        mint(&args)
    };
    let out = verify(
        &config,
        "admins",
        &token(&["--claim", r#"realm_access={"roles":["user"]}"#]),
    );
    out.assert_failure();
    assert!(
        fail_line(&out, "claim").contains(
            r#"claim "realm_access.roles" is ["user"]; the route requires it to hold one of ["admin"]"#
        ),
        "{}",
        out.describe()
    );
    let out = verify(
        &config,
        "admins",
        &token(&["--claim", r#"realm_access={"roles":["admin"]}"#]),
    );
    out.assert_failure();
    assert!(
        fail_line(&out, "claim").contains(
            r#"the token has no claim "tenant"; the route requires it to hold all of ["acme"]"#
        ),
        "{}",
        out.describe()
    );
    assert_plain_words(&out);
}

/// A duration comes back in the unit it was written in (`180d`), not split
/// on humantime's calendar (`5months 27days 15h 34m 48s`).
#[test]
fn check_prints_durations_as_written() {
    let pki = common::Pki::new();
    pki.self_signed(&common::Cert {
        key: "a.key",
        cert: "a.crt",
        cn: "a.test",
        days: 30,
        extensions: &["subjectAltName=DNS:a.test"],
    });
    let config = TempConfig::new(&format!(
        "listen:\n  https:\n    addr: 127.0.0.1:18443\n    certificates: [{{ hosts: [a.test], cert: {:?}, key: {:?} }}]\n    hsts: {{ preload: true, max_age: 180d }}\nroutes:\n  - name: r\n    upstream: {{ addrs: [\"127.0.0.1:1\"] }}\n    auth: {{ mode: off }}\n",
        pki.path("a.crt"),
        pki.path("a.key")
    ));
    let out = check_fails(&config);
    assert_contains(
        &out,
        "a max_age of at least 365d; include_subdomains is false, max_age 180d",
    );
}

/// An error found while compiling a route or an issuer points at the field
/// it is about, however deep, not at the entry's `name`.
#[test]
fn check_points_at_the_bad_field_deep_in_an_entry() {
    assert_refused_at(
        "routes:\n  - name: a\n    match:\n      path_prefix: /a\n      methods: [GET, \"PO ST\"]\n    upstream: { addrs: [\"127.0.0.1:1\"] }\n    auth: { mode: off }\n",
        (5, 22),
        "route \"a\": match.methods: \"PO ST\" is not an HTTP method",
    );
    assert_refused_at(
        "routes:\n  - name: a\n    upstream: { addrs: [\"127.0.0.1:1\"] }\n    auth: { mode: off }\n  - name: b\n    upstream:\n      addrs: [\"127.0.0.1:1\"]\n      health_check:\n        path: /h\n        interval: 10ms\n    auth: { mode: off }\n",
        (10, 9),
        "route \"b\": upstream.health_check.interval is 10ms; it must be at least 100ms",
    );
    assert_refused_at(
        "issuers:\n  - name: main\n    issuer: https://i.test\n    algorithms: [RS256]\n    audiences: [api]\n    jwks_uri: https://i.test/jwks\n    fetch: { max_bytes: 10 }\nroutes:\n  - name: a\n    upstream: { addrs: [\"127.0.0.1:1\"] }\n",
        (7, 14),
        "issuer \"main\": fetch.max_bytes is 10; it must be at least 1024",
    );
}

/// A token that is no JWT: what a JWT looks like, and the first part of
/// this one that is wrong, rather than a count of its segments.
#[test]
fn verify_says_what_is_wrong_with_a_token_that_is_not_a_jwt() {
    let config = verify_config();
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#);
    let array = URL_SAFE_NO_PAD.encode("[1]");
    let cases = [
        (
            "not.a.token".to_string(),
            "the first (the header) is not base64url JSON",
        ),
        ("garbage".to_string(), "this has no dot"),
        (
            format!("{header}.bm90IGpzb24.c2ln"),
            "the second (the claims) is base64url, but not JSON",
        ),
        (
            format!("{header}.{array}.c2ln"),
            "the second (the claims) is base64url JSON, but not an object",
        ),
    ];
    for (token, what) in cases {
        let out = verify(&config, "read", &token);
        out.assert_failure();
        let line = fail_line(&out, "structure");
        assert!(
            line.ends_with(&format!(
                "not a well-formed JWT: a JWT has three base64url segments separated by dots; {what}"
            )),
            "{token}: {line}"
        );
    }
}

/// `jwtgate revoke` reads the admin token from the variable the docs give
/// `revocation.admin_tokens`, refuses an empty one before asking the
/// gateway, and still reads its earlier name with a warning.
#[test]
fn revoke_reads_the_documented_variable_and_refuses_an_empty_token() {
    // Nothing listens on port 9: a request, if one were made, fails.
    let revoke = |env: &[(&str, &str)]| {
        let mut command = jwtgate();
        command
            .args(["revoke", "--admin", "http://127.0.0.1:9", "show"])
            .env_remove("JWTGATE_REVOKE_TOKEN")
            .env_remove("JWTGATE_ADMIN_TOKEN")
            .envs(env.iter().copied());
        output(&mut command)
    };
    for env in [
        vec![("JWTGATE_REVOKE_TOKEN", "")],
        vec![("JWTGATE_REVOKE_TOKEN", " "), ("JWTGATE_ADMIN_TOKEN", "ok")],
    ] {
        let out = revoke(&env);
        out.assert_failure();
        assert_contains(
            &out,
            "the admin token from JWTGATE_REVOKE_TOKEN is empty: give one of the gateway's revocation.admin_tokens",
        );
    }
    let out = revoke(&[]);
    out.assert_failure();
    assert_contains(
        &out,
        "no admin token: set JWTGATE_REVOKE_TOKEN or pass --token-file",
    );
    let out = revoke(&[("JWTGATE_ADMIN_TOKEN", "an-old-token-0123456789")]);
    out.assert_failure();
    assert_contains(
        &out,
        "warning: JWTGATE_ADMIN_TOKEN is deprecated; set JWTGATE_REVOKE_TOKEN instead",
    );
    assert!(!out.stderr.contains("no admin token"), "{}", out.describe());
}

/// An upstream name that resolves to nothing is a warning, not an error:
/// the DNS where the gateway runs may know it. Names under `.invalid`
/// never resolve (RFC 6761); `localhost` always does.
#[test]
fn check_warns_about_an_upstream_name_that_does_not_resolve() {
    let config = TempConfig::new(
        "routes:\n  - name: a\n    upstream: { addrs: [\"backend.invalid:8080\", \"localhost:8080\", \"127.0.0.1:9\"] }\n    auth: { mode: off }\n",
    );
    let out = output(jwtgate().args(["check", "-c", config.path()]));
    out.assert_success();
    let warnings: Vec<&str> = out
        .lines()
        .into_iter()
        .filter(|line| line.starts_with("warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", out.describe());
    assert!(
        warnings[0].starts_with(
            "warning: route \"a\": upstream.addrs: \"backend.invalid:8080\" does not resolve here ("
        ) && warnings[0].ends_with("the gateway keeps asking, and answers 502 until it does"),
        "{}",
        out.describe()
    );
}
