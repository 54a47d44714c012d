//! The JSON Schema of `gateway.yaml` (`jwtgate schema`) and the
//! configuration reference rendered from it are checked in under
//! `docs/reference/` and current; every config in the repository passes the
//! schema as editors and CI read it (PyPI's `check-jsonschema`, installed by
//! `scripts/test`) and the loader; what the schema refuses, the loader
//! refuses too, and the other way round; and each config file names the
//! schema on its first line, for editors.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const SCHEMA: &str = "docs/reference/gateway.schema.json";
const REFERENCE: &str = "docs/reference/configuration.md";
const BLESS: &str = "JWTGATE_BLESS";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `jwtgate schema` with `args`: what the checked-in files must hold.
fn generated(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_jwtgate"))
        .arg("schema")
        .args(args)
        .output()
        .expect("run jwtgate schema");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("the schema is text")
}

/// The checked-in `file` holds `text`, or is rewritten to when `BLESS` is set.
fn assert_current(file: &str, args: &[&str]) {
    let text = generated(args);
    let path = repo().join(file);
    if std::env::var_os(BLESS).is_some() {
        std::fs::write(&path, &text).expect("write the regenerated file");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    let command = format!("cargo run -- schema {}", args.join(" "));
    assert!(
        checked_in == text,
        "{file} is not what `jwtgate schema` generates from src/config/schema/: \
         regenerate it with `{BLESS}=1 cargo test --test schema` (or `{} > {file}`) and commit it",
        command.trim_end()
    );
}

#[test]
fn the_checked_in_schema_is_current() {
    assert_current(SCHEMA, &[]);
}

#[test]
fn the_checked_in_configuration_reference_is_current() {
    assert_current(REFERENCE, &["--markdown"]);
}

#[test]
fn the_schema_describes_every_field_and_refuses_unknown_ones() {
    let schema: Value = serde_json::from_str(&generated(&[])).expect("the schema is JSON");
    let mut objects = vec![("(top level)".to_string(), &schema)];
    let defs = schema["definitions"].as_object().expect("definitions");
    objects.extend(defs.iter().map(|(name, def)| (name.clone(), def)));
    let mut described = 0;
    for (name, object) in objects {
        let Some(properties) = object.get("properties").and_then(Value::as_object) else {
            continue;
        };
        assert_eq!(object["additionalProperties"], false, "{name}");
        for (field, property) in properties {
            let text = property.get("description").and_then(Value::as_str);
            assert!(
                text.is_some_and(|t| !t.is_empty()),
                "{name}.{field} has no description: give the field a `///` comment"
            );
            described += 1;
        }
    }
    assert!(described > 100, "only {described} fields described");
    let reference = generated(&["--markdown"]);
    assert!(reference.starts_with("# Configuration reference\n"));
    for section in [
        "## `routes[].upstream.tls`",
        "## `issuers[].refresh`",
        "## `listen.https.hsts`",
    ] {
        assert!(reference.contains(section), "no {section} in the reference");
    }
    assert!(
        reference.contains("| `max_age` | duration | `365d` |"),
        "{reference}"
    );
}

/// Every jwtgate config file in the repository, found by looking rather than
/// listed, so a new example is covered when it is added: YAML files with a
/// top-level `routes:` (the one field every config has).
fn config_files() -> Vec<PathBuf> {
    let mut found = common::repository_files(&["*.yaml", "*.yml"]);
    found.retain(|path| is_config(path));
    found
}

fn is_config(path: &Path) -> bool {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().any(|line| line.starts_with("routes:"))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// `check-jsonschema` on `files` against the checked-in schema: the files it
/// refused.
fn refused_by_schema(files: &[PathBuf]) -> Vec<PathBuf> {
    let program = common::venv_bin("check-jsonschema");
    let output = Command::new(&program)
        .args(["--output-format", "json", "--schemafile"])
        .arg(repo().join(SCHEMA))
        .args(files)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (scripts/test installs it): {e}",
                program.display()
            )
        });
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("check-jsonschema's report: {e}: {output:?}"));
    let mut refused: Vec<PathBuf> = report["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|error| error["filename"].as_str())
        .map(PathBuf::from)
        .collect();
    refused.extend(
        report["parse_errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|error| error["filename"].as_str())
            .map(PathBuf::from),
    );
    refused.sort();
    refused.dedup();
    assert_eq!(
        output.status.success(),
        refused.is_empty(),
        "check-jsonschema's status and report disagree: {output:?}"
    );
    refused
}

/// The loader on `path`, with no environment variables set, so each
/// `${NAME:-default}` takes its default, but for the one the production
/// overlay requires, which its Deployment sets (deployment-redis.yaml).
fn load(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).expect("read config");
    let environment =
        |name: &str| (name == "JWTGATE_REDIS_URL").then(|| "redis://redis:6379".to_string());
    jwtgate::config::parse(path, &text, &environment)
        .map(drop)
        .map_err(|e| e.to_string())
}

#[test]
fn every_config_in_the_repository_passes_the_schema_and_the_loader() {
    let files = config_files();
    let names: Vec<String> = files.iter().map(|f| relative(f)).collect();
    for expected in [
        "gateway.yaml",
        "deploy/kubernetes/overlays/demo/gateway.yaml",
        "deploy/kubernetes/overlays/production/gateway.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not found in {names:?}"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut checked = files.clone();
    checked.extend(bench_configs(dir.path()));
    checked.extend(documented_configs(dir.path()));
    assert_eq!(refused_by_schema(&checked), Vec::<PathBuf>::new());
    for file in &checked {
        if let Err(error) = load(file) {
            panic!(
                "the schema accepts {} but the loader refuses it: {error}",
                relative(file)
            );
        }
    }
}

/// What `benches/load/big_config.py` writes, in each of its forms.
fn bench_configs(dir: &Path) -> Vec<PathBuf> {
    let forms: [&[&str]; 2] = [
        &["--issuers", "2", "--routes", "3"],
        &[
            "--issuers",
            "1",
            "--routes",
            "2",
            "--jwks",
            "jwks.json",
            "--upstream",
            "127.0.0.1:9",
            "--listen",
            "127.0.0.1:18080",
            "--admin",
            "127.0.0.1:19090",
        ],
    ];
    forms
        .iter()
        .enumerate()
        .map(|(i, args)| {
            let path = dir.join(format!("big_config-{i}.yaml"));
            std::fs::write(&path, common::generated(args)).expect("write bench config");
            path
        })
        .collect()
}

/// Whole configs in the documentation: fenced YAML blocks with a top-level
/// `routes:`, each written to a file of its own.
/// The whole configs the README and the book show: YAML blocks with a
/// top-level `routes:`, named by their page and place.
fn documented_configs_text() -> Vec<(String, String)> {
    let mut pages = vec![repo().join("README.md")];
    let mut dirs = vec![repo().join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read docs") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                pages.push(path);
            }
        }
    }
    let mut configs = Vec::new();
    for page in pages {
        let text = std::fs::read_to_string(&page).expect("read page");
        for (i, block) in yaml_blocks(&text).into_iter().enumerate() {
            if block.lines().any(|line| line.starts_with("routes:")) {
                let name = format!("{}-{i}", relative(&page).replace('/', "_"));
                configs.push((name, block));
            }
        }
    }
    configs
}

/// [`documented_configs_text`], written to files in `dir`.
fn documented_configs(dir: &Path) -> Vec<PathBuf> {
    documented_configs_text()
        .into_iter()
        .map(|(name, block)| {
            let path = dir.join(format!("{name}.yaml"));
            std::fs::write(&path, block).expect("write documented config");
            path
        })
        .collect()
}

fn yaml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match current.as_mut() {
            None if line.trim_start() == "```yaml" => current = Some(String::new()),
            Some(_) if line.trim_start() == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// The shared part of the configs below, which vary one field each.
const ROUTE: &str = "routes:\n  - name: r\n    upstream: { addrs: [\"127.0.0.1:9\"] }\n";

/// Configs the loader refuses, each for one reason, and the schema too: so
/// the check above can't pass for a schema that accepts anything.
const REFUSED: &[(&str, &str)] = &[
    ("unknown-top-level", "routs: []\n"),
    (
        "unknown-nested",
        "routes:\n  - name: r\n    upstream: { adrs: [\"127.0.0.1:9\"] }\n",
    ),
    ("routes-missing", "issuers: []\n"),
    ("number-for-duration", "server: { grace_period: 5 }\n"),
    ("duration-without-unit", "server: { grace_period: \"5\" }\n"),
    ("duration-unknown-unit", "token_cache: { ttl: 5 parsecs }\n"),
    ("duration-garbage", "dns: { timeout: soon }\n"),
    ("string-for-number", "tokens: { max_bytes: big }\n"),
    ("string-for-bool", "token_cache: { enabled: sometimes }\n"),
    ("negative-number", "limits: { max_headers: -1 }\n"),
    (
        "unknown-mode",
        "listen: { http: { addr: \"127.0.0.1:1\", mode: maybe } }\n",
    ),
    (
        "unknown-listen-field",
        "listen: { http: { adr: \"127.0.0.1:1\" } }\n",
    ),
    ("list-for-listen", "listen: { http: [\"127.0.0.1:1\"] }\n"),
    ("path-rule", "paths: { backslash: allow }\n"),
    ("algorithm-none", ISSUER_NONE),
    ("algorithm-lower-case", ISSUER_LOWER),
    (
        "moved-redis-url",
        "revocation: { redis: { url: \"redis://127.0.0.1:1\" } }\n",
    ),
    (
        "port-out-of-range",
        "listen: { https: { addr: \"127.0.0.1:1\", certificates: [], redirect_port: 70000 } }\n",
    ),
];

const ISSUER_NONE: &str =
    "issuers:\n  - { name: i, issuer: i, algorithms: [none], jwks_file: x }\n";
const ISSUER_LOWER: &str =
    "issuers:\n  - { name: i, issuer: i, algorithms: [rs256], jwks_file: x }\n";

/// Configs the loader reads, in the forms a custom reader accepts, which
/// the schema must accept too.
const ACCEPTED: &[(&str, &str)] = &[
    (
        "durations",
        "server: { grace_period: 250ms, graceful_shutdown_timeout: 1h 30m, client_body_timeout: 1.5m }\n",
    ),
    (
        "long-units",
        "token_cache: { ttl: 2 days }\nadmin: { startup_grace: 10 seconds }\n",
    ),
    ("env-duration", "dns: { timeout: \"${DNS_TIMEOUT:-2s}\" }\n"),
    (
        "listen-string",
        "listen: { http: \"${LISTEN:-127.0.0.1:1}\" }\n",
    ),
    (
        "listen-map",
        "listen: { http: { addr: \"127.0.0.1:1\", mode: serve, h2c: true } }\n",
    ),
    (
        "path-rules",
        "paths: { encoded_slash: keep, backslash: reject, semicolon: keep, double_encoding: keep }\n",
    ),
    (
        "algorithms",
        "issuers:\n  - { name: i, issuer: i, algorithms: [EdDSA, ES384, PS512], jwks_file: x, max_lifetime: 10m }\n",
    ),
    (
        "optional-null",
        "echo: ~\nrevocation: { redis: { max_staleness: 1m } }\nredis: { url: \"redis://127.0.0.1:1\", timeout: 500ms }\n",
    ),
];

fn write_cases(dir: &Path, cases: &[(&str, &str)]) -> Vec<PathBuf> {
    cases
        .iter()
        .map(|(name, yaml)| {
            let path = dir.join(format!("{name}.yaml"));
            // Every case but the one without routes gets the shared route.
            let has_routes = yaml.contains("routes:") || *name == "routes-missing";
            let text = if has_routes {
                yaml.to_string()
            } else {
                format!("{yaml}{ROUTE}")
            };
            std::fs::write(&path, text).expect("write case");
            path
        })
        .collect()
}

#[test]
fn the_schema_refuses_what_the_loader_refuses_and_accepts_what_it_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let refused = write_cases(dir.path(), REFUSED);
    for file in &refused {
        assert!(load(file).is_err(), "the loader accepts {}", file.display());
    }
    let mut by_schema = refused_by_schema(&refused);
    by_schema.sort();
    let mut expected = refused.clone();
    expected.sort();
    assert_eq!(
        by_schema, expected,
        "the schema accepted a config the loader refuses"
    );

    let accepted = write_cases(dir.path(), ACCEPTED);
    for file in &accepted {
        if let Err(error) = load(file) {
            panic!("the loader refuses {}: {error}", file.display());
        }
    }
    assert_eq!(refused_by_schema(&accepted), Vec::<PathBuf>::new());
}

#[test]
fn every_config_file_names_the_schema_for_editors() {
    let schema = repo().join(SCHEMA).canonicalize().expect("the schema file");
    for file in config_files() {
        let text = std::fs::read_to_string(&file).expect("read config");
        let first = text.lines().next().unwrap_or_default();
        let Some(target) = first.strip_prefix("# yaml-language-server: $schema=") else {
            panic!(
                "{}: the first line must be `# yaml-language-server: $schema=<path to {SCHEMA}>`, not {first:?}",
                relative(&file)
            );
        };
        let resolved = file.parent().expect("a file's dir").join(target);
        assert_eq!(
            resolved.canonicalize().ok().as_ref(),
            Some(&schema),
            "{}: {target} is not {SCHEMA}",
            relative(&file)
        );
    }
}

/// A config copied from the docs keeps the line, naming the file
/// `jwtgate schema > gateway.schema.json` writes beside it.
#[test]
fn every_documented_config_names_the_schema_for_editors() {
    let documented = documented_configs_text();
    assert!(documented.len() >= 5, "{documented:?}");
    for (name, block) in documented {
        assert_eq!(
            block.lines().next(),
            Some("# yaml-language-server: $schema=gateway.schema.json"),
            "{name}"
        );
    }
}

#[test]
fn configs_outside_deploy_pass_jwtgate_check() {
    // gateway-https.yaml serves the certificate scripts/demo-cert makes.
    let demo_tls = tempfile::tempdir().expect("tempdir");
    let made = Command::new("scripts/demo-cert")
        .current_dir(repo())
        .env("JWTGATE_DEMO_TLS", demo_tls.path())
        .output()
        .expect("run scripts/demo-cert");
    assert!(made.status.success(), "scripts/demo-cert: {made:?}");
    // The deploy overlays name files at the pod's paths; tests/deploy.rs
    // checks them in the pod's filesystem.
    for file in config_files() {
        if relative(&file).starts_with("deploy/") {
            continue;
        }
        let mut command = Command::new(env!("CARGO_BIN_EXE_jwtgate"));
        command.args(["check", "-c"]).arg(&file).current_dir(repo());
        // The defaults the configs write, not the developer's environment.
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("JWTGATE_")) {
            command.env_remove(name);
        }
        command.env("JWTGATE_DEMO_TLS", demo_tls.path());
        let output = command.output().expect("run jwtgate check");
        assert!(output.status.success(), "{}: {output:?}", relative(&file));
    }
}
