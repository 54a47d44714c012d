//! The configuration reference, rendered from the JSON Schema so that it
//! says what the loader reads: a section per object of `gateway.yaml` (the
//! top level, then each nested object under its path, such as
//! `routes[].upstream`), each a table of its fields. Fields come in the
//! schema's order, alphabetical.

use std::fmt::Write;

use serde_json::{Map, Value};

/// What the schema can't say: how the file is read as a whole.
const HEADER: &str = "\
# Configuration reference

> Generated from the JSON Schema [`gateway.schema.json`](gateway.schema.json) by
> `jwtgate schema --markdown`; the descriptions are the doc comments in
> `src/config/schema/`. Regenerate both files with
> `JWTGATE_BLESS=1 cargo test --test schema`.

`gateway.yaml` is YAML. Unknown fields are errors, reported as
`file:line:column: message`. `${NAME}` is replaced by the environment variable
`NAME` (an error if unset), `${NAME:-default}` falls back to `default`, `$${` is a
literal `${`; comments are not interpolated. Durations are written `250ms`, `30s`,
`5m`, `1h`, `365d`. Relative paths are relative to the config file. Validate a
file with `jwtgate check -c gateway.yaml`.

A config may be large: up to 64 MiB and 5 000 000 YAML nodes, about 200 000
routes of the usual shape (10 000 routes and 100 issuers take 2.3 MiB; make one
with `benches/load/big_config.py`). What only a hostile file needs is refused,
with the limit named: nesting deeper than 64 levels, more anchors, aliases or
alias expansions than a config needs (an alias bomb), more than 64 MiB of
strings. These limits are fixed.

## Editor support

Editors that read JSON Schemas through the YAML language server (VS Code's
YAML extension, Neovim, Helix, JetBrains IDEs) complete and check a config
that starts with this line, the path relative to the config file:

```yaml
# yaml-language-server: $schema=docs/reference/gateway.schema.json
```

For a config of your own, `jwtgate schema > gateway.schema.json` writes the
schema of the jwtgate you run beside it, and the line becomes
`# yaml-language-server: $schema=gateway.schema.json`. The whole configs in
this book start with that line, so a copy keeps it.

The schema checks each field's name, type and allowed values; what depends on
other fields or on the system (a key source per issuer, addresses that
resolve, files that exist) is checked by `jwtgate check`. A value that is an
environment reference (`${NAME:-30s}`) is checked after interpolation only,
so the schema takes it for a duration or string but not for a number, a
boolean or one of a field's fixed values. And the schema wants each value in
its field's own type, text where a field is text (`realm: \"123\"`) and numbers
and booleans unquoted, where the loader also takes a number for text, or a
quoted number or boolean.
";

/// The book's guides for a section, by its path: the reference says what a
/// field is, a guide when and how to use it.
#[rustfmt::skip]
const GUIDES: &[(&str, &str, &str)] = &[
    ("", "Reloading the config", "../guides/reload.md"),
    ("issuers[]", "Connecting identity providers", "../guides/identity-providers.md"),
    ("limits", "Request limits", "../guides/request-limits.md"),
    ("listen.authz", "As the auth server of another proxy", "../guides/auth-server.md"),
    ("listen.https", "HTTPS", "../guides/https.md"),
    ("paths", "Request limits", "../guides/request-limits.md"),
    ("rate_limit", "Rate limits", "../guides/rate-limits.md"),
    ("revocation", "Revocation", "../guides/revocation.md"),
    ("routes[].auth", "Audit mode", "../guides/audit-mode.md"),
    ("routes[].cors", "CORS", "../guides/cors.md"),
    ("routes[].rate_limits[]", "Rate limits", "../guides/rate-limits.md"),
    ("routes[].upstream", "Upstreams", "../guides/upstreams.md"),
    ("server", "Behind another proxy", "../guides/behind-a-proxy.md"),
    ("server", "Operations", "../operations.md"),
];

/// The reference page for `schema`, the JSON Schema `json_schema` makes.
pub fn render(schema: &Value) -> String {
    let empty = Map::new();
    let defs = schema
        .get("definitions")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut out = String::from(HEADER);
    section(&mut out, defs, "", schema);
    out
}

/// One object's table, then the sections of the objects it holds.
fn section(out: &mut String, defs: &Map<String, Value>, path: &str, object: &Value) {
    let heading = if path.is_empty() {
        "Top level".to_string()
    } else {
        format!("`{path}`")
    };
    let _ = write!(out, "\n## {heading}\n\n");
    // The top level's own description is what the page's header says.
    let about = object.get("description").filter(|_| !path.is_empty());
    if let Some(about) = about.and_then(Value::as_str) {
        let _ = write!(out, "{}\n\n", without_name(&one_line(about), path));
    }
    let guides: Vec<String> = GUIDES
        .iter()
        .filter(|(section, _, _)| *section == path)
        .map(|(_, title, link)| format!("[{title}]({link})"))
        .collect();
    if !guides.is_empty() {
        let _ = write!(out, "See also: {}.\n\n", guides.join(", "));
    }
    out.push_str("| field | type | default | description |\n|---|---|---|---|\n");
    let required: Vec<&str> = object
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut nested = Vec::new();
    let properties = object.get("properties").and_then(Value::as_object);
    for (name, property) in properties.into_iter().flatten() {
        let shape = shape(defs, property);
        let default = match property.get("default") {
            Some(value) => format!("`{}`", inline(value)),
            None if required.contains(&name.as_str()) => "(required)".into(),
            None => "—".into(),
        };
        let description = description(defs, property);
        let _ = writeln!(
            out,
            "| `{name}` | {} | {default} | {} |",
            shape.label,
            cell(&description)
        );
        if let Some((child, list)) = shape.object {
            let step = if list {
                format!("{name}[]")
            } else {
                name.clone()
            };
            let child_path = if path.is_empty() {
                step
            } else {
                format!("{path}.{step}")
            };
            nested.push((child_path, child));
        }
    }
    for (child_path, child) in nested {
        section(out, defs, &child_path, child);
    }
}

/// What a field holds, in words, and the object it opens (with whether it
/// is a list of them), if any.
struct Shape<'a> {
    label: String,
    object: Option<(&'a Value, bool)>,
}

fn shape<'a>(defs: &'a Map<String, Value>, schema: &'a Value) -> Shape<'a> {
    let schema = unwrapped(schema);
    if let Some(name) = reference(schema) {
        if name == "Duration" {
            return plain("duration");
        }
        return match defs.get(name) {
            Some(target) if target.get("properties").is_some() => Shape {
                label: "object".into(),
                object: Some((target, false)),
            },
            Some(target) => shape(defs, target),
            None => plain("any"),
        };
    }
    let values = variants(defs, schema);
    if !values.is_empty() {
        let names: Vec<String> = values.iter().map(|(name, _)| format!("`{name}`")).collect();
        return plain(&format!("one of {}", names.join(", ")));
    }
    let choices = alternatives(schema);
    if !choices.is_empty() {
        let shapes: Vec<Shape> = choices.into_iter().map(|c| shape(defs, c)).collect();
        let label = shapes
            .iter()
            .map(|s| s.label.as_str())
            .collect::<Vec<_>>()
            .join(" or ");
        let object = shapes.into_iter().find_map(|s| s.object);
        return Shape { label, object };
    }
    match type_name(schema) {
        Some("array") => {
            let items = schema.get("items").map(|i| shape(defs, i));
            let items = items.unwrap_or_else(|| plain("any"));
            let noun = match items.object {
                Some(_) => "objects".to_string(),
                None => plural(&items.label),
            };
            Shape {
                label: format!("list of {noun}"),
                object: items.object.map(|(object, _)| (object, true)),
            }
        }
        Some("object") if schema.get("properties").is_some() => Shape {
            label: "object".into(),
            object: Some((schema, false)),
        },
        Some("object") => match schema.get("additionalProperties") {
            Some(values) => plain(&format!("map of {}", plural(&shape(defs, values).label))),
            None => plain("map"),
        },
        Some(name) => plain(name),
        None => plain("any"),
    }
}

/// What a list or map of `label` holds.
fn plural(label: &str) -> String {
    match label {
        "string" | "integer" | "number" | "boolean" | "duration" => format!("{label}s"),
        "any" => "any values".into(),
        label => format!("values, each {label}"),
    }
}

fn plain(label: &str) -> Shape<'static> {
    Shape {
        label: label.into(),
        object: None,
    }
}

/// `#/definitions/NAME` → `NAME`, for a `$ref` on its own or wrapped in
/// `allOf` beside a field's description.
fn reference(schema: &Value) -> Option<&str> {
    unwrapped(schema)
        .get("$ref")
        .and_then(Value::as_str)
        .map(|r| r.trim_start_matches("#/definitions/"))
}

/// Draft 7 ignores what stands beside a `$ref`, so a field that describes
/// a referenced type holds it as `allOf: [{$ref}]`.
fn unwrapped(schema: &Value) -> &Value {
    match schema.get("allOf").and_then(Value::as_array) {
        Some(only) if only.len() == 1 => &only[0],
        _ => schema,
    }
}

/// The non-null schemas of an `anyOf` or `oneOf`: an optional field is its
/// type or `null`, and its absence is what the default column says.
fn alternatives(schema: &Value) -> Vec<&Value> {
    let listed = ["anyOf", "oneOf"]
        .iter()
        .find_map(|key| schema.get(*key).and_then(Value::as_array));
    listed
        .into_iter()
        .flatten()
        .filter(|alternative| type_name(alternative) != Some("null"))
        .collect()
}

/// The one type a schema names, `["string", "null"]` being a string.
fn type_name(schema: &Value) -> Option<&str> {
    match schema.get("type")? {
        Value::String(name) => Some(name),
        Value::Array(names) => names
            .iter()
            .filter_map(Value::as_str)
            .find(|name| *name != "null"),
        _ => None,
    }
}

/// The fixed values a field takes, each with its meaning when the schema
/// gives one: an `enum`, or a `oneOf` of `const`s (documented variants).
fn variants<'a>(defs: &'a Map<String, Value>, schema: &'a Value) -> Vec<(String, Option<&'a str>)> {
    let schema = match reference(schema).and_then(|name| defs.get(name)) {
        Some(target) => target,
        None => unwrapped(schema),
    };
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values.iter().map(|v| (inline(v), None)).collect();
    }
    let choices = alternatives(schema);
    if choices.len() == 1 && choices[0].get("const").is_none() {
        return variants(defs, choices[0]);
    }
    if choices.is_empty() || choices.iter().any(|c| c.get("const").is_none()) {
        return Vec::new();
    }
    choices
        .into_iter()
        .map(|c| {
            let about = c.get("description").and_then(Value::as_str);
            (inline(&c["const"]), about)
        })
        .collect()
}

/// The field's own description, else its type's, followed by what each of
/// its fixed values means.
fn description(defs: &Map<String, Value>, property: &Value) -> String {
    let own = property.get("description").and_then(Value::as_str);
    let of_type = reference(property)
        .and_then(|name| defs.get(name))
        .and_then(|target| target.get("description"))
        .and_then(Value::as_str);
    let mut text = own.or(of_type).unwrap_or_default().to_string();
    for (value, about) in variants(defs, property) {
        if let Some(about) = about {
            let _ = write!(text, " `{value}`: {about}");
        }
    }
    text.trim().to_string()
}

/// A default or fixed value as it is written in YAML.
fn inline(value: &Value) -> String {
    match value {
        Value::String(text) if text.is_empty() => "\"\"".into(),
        Value::String(text) => text.clone(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(inline).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) if map.is_empty() => "{}".into(),
        other => other.to_string(),
    }
}

/// A type's description may start by naming its place (`` `redis`: the
/// Redis server… ``), which the heading above already says.
fn without_name(about: &str, path: &str) -> String {
    let named = format!("`{path}`");
    let Some(rest) = about.strip_prefix(&named) else {
        return about.to_string();
    };
    let rest = rest.trim_start_matches([':', ',']).trim_start();
    let mut chars = rest.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => about.to_string(),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Text that stays inside its table cell.
fn cell(text: &str) -> String {
    one_line(text).replace('|', "\\|")
}
