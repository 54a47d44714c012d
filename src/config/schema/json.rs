//! The JSON Schema of `gateway.yaml`, derived from the very types serde
//! reads it into, so the two can't drift apart. What serde reads through a
//! function of ours (durations, `listen.http`'s two forms, the algorithm
//! names, the path rules) gets a schema written here or beside that
//! function, accepting what that function accepts.

use std::borrow::Cow;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::Value;

use super::GatewayConfig;

/// A `${NAME}` or `${NAME:-default}` reference anywhere in a value: the
/// loader replaces it before reading the YAML, so the schema can't know
/// what it becomes and leaves it to the loader.
const ENV_REFERENCE: &str = r".*\$\{[A-Za-z0-9_]+(:-[^}]*)?\}.*";

/// humantime's unit names (`humantime::parse_duration`).
const DURATION_UNITS: &str = "nanos|nsec|ns|usec|us|µs|millis|msec|ms|seconds|second|secs|sec|s|\
                              minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|\
                              weeks|week|wks|wk|w|months|month|M|years|year|yrs|yr|y";

/// A duration as [`super::duration`] reads it: one or more numbers, each
/// with a unit, optionally separated by spaces.
pub struct DurationText;

impl JsonSchema for DurationText {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let pattern =
            format!(r"^(?:\s*(?:\d+(?:\.\d+)?\s*(?:{DURATION_UNITS})\s*)+|{ENV_REFERENCE})$");
        json_schema!({
            "type": "string",
            "description": "A duration: a number and a unit (`ms`, `s`, `m`, `h`, `d`, `w`), or several (`1h 30m`).",
            "pattern": pattern,
            "examples": ["250ms", "30s", "5m", "1h 30m", "365d"],
        })
    }
}

/// The JSON Schema of `gateway.yaml`, as checked in under
/// `docs/reference/gateway.schema.json`. Draft 7: the newest the YAML
/// language server behind editors' YAML support reads (a `$ref` with
/// siblings, such as a field's description, is wrapped in `allOf` for it).
pub fn json_schema() -> Value {
    let generator = SchemaSettings::draft07().into_generator();
    let mut schema = generator.into_root_schema_for::<GatewayConfig>();
    schema.insert("title".into(), "jwtgate gateway.yaml".into());
    let mut value = schema.to_value();
    tidy(&mut value);
    value
}

/// Descriptions come from `///` comments wrapped at 80 columns: one line
/// per paragraph reads better in an editor's hover, which renders
/// `markdownDescription` (the YAML language server's keyword) as Markdown
/// and shows `description` as plain text. A default of `null` is
/// an optional field's absence, which the schema already says. A list of
/// objects that serde defaults gets no default from schemars (the objects
/// can't be written out), though it is as empty as any other.
fn tidy(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("default").is_some_and(Value::is_null) {
                map.remove("default");
            }
            if let Some(Value::String(text)) = map.get_mut("description") {
                *text = unwrap_lines(text);
                let markdown = Value::String(text.clone());
                map.insert("markdownDescription".into(), markdown);
            }
            default_empty_lists(map);
            map.values_mut().for_each(tidy);
        }
        Value::Array(items) => items.iter_mut().for_each(tidy),
        _ => {}
    }
}

/// A property that is a list (never `null`) and not required can only be
/// missing because serde defaults it, to an empty list.
fn default_empty_lists(object: &mut serde_json::Map<String, Value>) {
    let required: Vec<String> = match object.get("required") {
        Some(Value::Array(names)) => names
            .iter()
            .filter_map(|n| n.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    };
    let Some(Value::Object(properties)) = object.get_mut("properties") else {
        return;
    };
    for (name, property) in properties.iter_mut() {
        let is_list = property.get("type").and_then(Value::as_str) == Some("array");
        if is_list && property.get("default").is_none() && !required.contains(name) {
            property["default"] = Value::Array(Vec::new());
        }
    }
}

fn unwrap_lines(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| {
            paragraph
                .split('\n')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}
