//! The JSON Schema of `gateway.yaml` (`jwtgate schema`) and the
//! configuration reference rendered from it are checked in under
//! `docs/reference/` and current.

use std::path::Path;
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
    let defs = schema["$defs"].as_object().expect("$defs");
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
