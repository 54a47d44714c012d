//! Reading `gateway.yaml`: environment interpolation, then YAML into the
//! schema, with every error pointing at a file, line and column.

use std::fmt;
use std::path::{Path, PathBuf};

use super::locate::{locate, steps};
use super::schema::GatewayConfig;

/// A configuration error a user can act on: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, when the error has a place in the file.
    pub position: Option<(u64, u64)>,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: &Path, position: Option<(u64, u64)>, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            position,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(
                f,
                "{}:{line}:{column}: {}",
                self.file.display(),
                self.message
            ),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The largest config file jwtgate reads (a config of 10 000 routes takes
/// about 2 MiB).
pub const MAX_CONFIG_BYTES: usize = 64 << 20;

/// The YAML parser's node and event limits, sized for configs of some
/// 200 000 routes of the usual shape (about 25 nodes each; the parser's own
/// default of 250 000 nodes refused 10 000). What stops a hostile file is
/// left at the parser's defaults: nesting depth, anchors and aliases and
/// what they may expand to, scalar bytes.
const MAX_NODES: usize = 5_000_000;
const MAX_EVENTS: usize = 2 * MAX_NODES;

fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = MAX_NODES;
    budget.max_events = MAX_EVENTS;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// The parser limit behind `error`, however it is wrapped (a snippet of
/// the source, an alias being expanded).
fn budget_breach(error: &serde_saphyr::Error) -> Option<&serde_saphyr::budget::BudgetBreach> {
    match error {
        serde_saphyr::Error::Budget { breach, .. } => Some(breach),
        serde_saphyr::Error::WithSnippet { error, .. }
        | serde_saphyr::Error::AliasError { error, .. } => budget_breach(error),
        _ => None,
    }
}

/// A parser limit that was reached, in jwtgate's words: which limit, and
/// that it is fixed (it keeps a hostile file from exhausting memory).
fn budget_message(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach::*;
    let limit = match breach {
        Nodes { .. } | Events { .. } => {
            format!("more than {MAX_NODES} YAML nodes (about 200 000 routes)")
        }
        Depth { .. } => "YAML nested deeper than 64 levels".into(),
        Aliases { .. }
        | Anchors { .. }
        | AliasAnchorRatio { .. }
        | RecordedAnchorEvents { .. }
        | RecordedAnchorBytes { .. } => {
            "more YAML anchors, aliases or alias expansions than a config needs (an alias bomb?)"
                .into()
        }
        ScalarBytes { .. } => "more than 64 MiB of YAML strings".into(),
        other => format!("a YAML parser limit ({other:?})"),
    };
    format!(
        "the config has {limit}; jwtgate refuses it whole (a fixed limit, so a hostile file can't exhaust memory)"
    )
}

/// Parses a config file's bytes, as read by whoever reads files; see
/// [`parse`].
pub fn load(
    path: &Path,
    read: std::io::Result<Vec<u8>>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<GatewayConfig, ConfigError> {
    let bytes = read.map_err(|e| ConfigError::new(path, None, format!("cannot read: {e}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ConfigError::new(path, None, "the file is not UTF-8 text"))?;
    parse(path, &text, env)
}

/// Parses config text; `env` resolves `${NAME}` references (injectable so
/// tests do not touch the process environment).
pub fn parse(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<GatewayConfig, ConfigError> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::new(
            path,
            None,
            format!(
                "the config is {} MiB; jwtgate reads at most {} MiB",
                text.len() >> 20,
                MAX_CONFIG_BYTES >> 20
            ),
        ));
    }
    let expanded = interpolate(path, text, env)?;
    serde_saphyr::from_str_with_options::<GatewayConfig>(&expanded, options())
        .map_err(|e| parse_error(path, &expanded, &e))
}

/// A parse error in jwtgate's words: the field it is at, what was expected
/// there and what was found, where the parser's own text would name its
/// internals (`invalid u64`, `expected sequence start`, its options).
fn parse_error(path: &Path, text: &str, error: &serde_saphyr::Error) -> ConfigError {
    let position = error
        .location()
        .map(|l| (l.line(), l.column()))
        .filter(|(line, _)| *line > 0);
    if let Some(breach) = budget_breach(error) {
        return ConfigError::new(path, position, budget_message(breach));
    }
    let field = field_path(text);
    let found = || {
        locate(text, &steps(&field)).map_or_else(|| "something else".into(), |found| found.value)
    };
    use serde_saphyr::Error::*;
    let message = match innermost(error) {
        DuplicateMappingKey { key: Some(key), .. } => {
            let first = locate(text, &steps(&format!("{field}.{key}")))
                .map(|found| format!(" (first at line {})", found.position.0))
                .unwrap_or_default();
            // The path is the mapping's: the key is named on its own.
            return ConfigError::new(
                path,
                position,
                format!("{}duplicate key {key:?}{first}", prefix(&field)),
            );
        }
        SerdeUnknownField {
            field: name,
            expected,
            ..
        } => {
            // The path ends at the unknown field; the message names it.
            let parent = field.rfind(['.', '[']).map_or("", |end| &field[..end]);
            return ConfigError::new(
                path,
                position,
                format!(
                    "{}unknown field `{name}`, expected one of {}",
                    prefix(parent),
                    expected.join(", ")
                ),
            );
        }
        DuplicateMappingKey { key: None, .. } => "a key appears twice in this mapping".into(),
        InvalidScalar { ty, .. } => {
            format!("expected {}, got {}", scalar_words(ty, &field), found())
        }
        Unexpected { expected, .. } => {
            format!("expected {}, got {}", node_words(expected), found())
        }
        SerdeInvalidType { expected, .. } => format!("expected {expected}, got {}", found()),
        NullIntoString { .. } => "expected text, got nothing".into(),
        _ => first_line(&error.to_string()),
    };
    ConfigError::new(path, position, format!("{}{message}", prefix(&field)))
}

/// `field: ` before a message, or nothing at the top level.
fn prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

/// The error a snippet or an alias wraps.
fn innermost(error: &serde_saphyr::Error) -> &serde_saphyr::Error {
    match error {
        serde_saphyr::Error::WithSnippet { error, .. }
        | serde_saphyr::Error::AliasError { error, .. } => innermost(error),
        other => other,
    }
}

/// The path of the field a parse fails at (`routes[2].match.methods`),
/// found by parsing once more with the path tracked: only a config that
/// fails pays for tracking it.
fn field_path(text: &str) -> String {
    let mut field = String::new();
    let _ = serde_saphyr::with_deserializer_from_str_with_options(text, options(), |de| {
        serde_path_to_error::deserialize::<_, GatewayConfig>(de).map_err(|error| {
            field = error.path().to_string();
            error.into_inner()
        })
    });
    trim_to_text(text, &field)
}

/// `field` without its last steps until it names a node of `text`: the
/// path tracker adds steps the file doesn't have (`?` for a key being
/// read, `value` inside a value that records its position).
fn trim_to_text(text: &str, field: &str) -> String {
    let mut field = field.trim_matches('.');
    while !field.is_empty() && locate(text, &steps(field)).is_none() {
        field = &field[..field.rfind(['.', '[']).unwrap_or(0)];
    }
    field.to_string()
}

/// Where the field a compile error's `message` starts with
/// (`upstream.addrs: …`, `cors.max_age …`) is, inside the entry `within`
/// (`routes[2]`) of the config file at `path`: at that field, or the
/// deepest part of it the file has. `None` when the file (read again:
/// only an error pays for it) has nothing more precise than the entry.
pub fn field_position(
    path: &Path,
    read: std::io::Result<Vec<u8>>,
    env: &dyn Fn(&str) -> Option<String>,
    within: &str,
    message: &str,
) -> Option<(u64, u64)> {
    let text = String::from_utf8(read.ok()?).ok()?;
    let text = interpolate(path, &text, env).ok()?;
    let end = message
        .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "_.[]".contains(c)))
        .unwrap_or(message.len());
    let field = trim_to_text(&text, &format!("{within}.{}", &message[..end]));
    if field.len() <= within.len() {
        return None;
    }
    locate(&text, &steps(&field)).map(|found| found.position)
}

/// A scalar type the parser wanted, in words.
fn scalar_words(ty: &str, field: &str) -> String {
    let words = match ty {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "i8" | "i16" | "i32" | "i64" | "i128"
        | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "bool" => "true or false",
        "char" => "a single character",
        other => other,
    };
    if field.ends_with("_bytes") {
        format!("{words} (bytes)")
    } else {
        words.to_string()
    }
}

/// A node the parser wanted, in words.
fn node_words(expected: &str) -> &str {
    match expected {
        "sequence start" => "a list",
        "mapping start" | "empty mapping start" => "a map",
        "scalar" | "string scalar" => "a single value",
        other => other,
    }
}

/// serde-saphyr renders "error: line L column C: message" and a source
/// snippet; we print our own `file:line:column` prefix, so keep the message.
fn first_line(rendered: &str) -> String {
    let line = rendered.lines().next().unwrap_or(rendered).trim();
    let line = line.strip_prefix("error: ").unwrap_or(line);
    let without_position = line
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
        .filter(|(position, _)| position.contains(" column "))
        .map(|(_, message)| message);
    without_position.unwrap_or(line).to_string()
}

/// Replaces `${NAME}` and `${NAME:-default}` with environment values, line by
/// line so errors keep their line numbers. `$${` is a literal `${`. Comments
/// are left alone, so a commented-out reference to an unset variable is fine.
fn interpolate(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let line_no = index as u64 + 1;
        let (code, comment) = split_comment(line);
        let mut rest = code;
        while let Some(start) = rest.find('$') {
            out.push_str(&rest[..start]);
            let after = &rest[start..];
            if let Some(literal) = after.strip_prefix("$${") {
                out.push_str("${");
                rest = literal;
                continue;
            }
            let Some(body) = after.strip_prefix("${") else {
                out.push('$');
                rest = &after[1..];
                continue;
            };
            let column = (code.len() - after.len()) as u64 + 1;
            let Some(end) = body.find('}') else {
                return Err(ConfigError::new(
                    path,
                    Some((line_no, column)),
                    "unterminated ${...} reference",
                ));
            };
            let reference = &body[..end];
            let (name, default) = match reference.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (reference, None),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(ConfigError::new(
                    path,
                    Some((line_no, column)),
                    format!("invalid environment variable name {name:?}"),
                ));
            }
            let value = match (env(name), default) {
                (Some(value), _) => value,
                (None, Some(default)) => default.to_string(),
                (None, None) => {
                    return Err(ConfigError::new(
                        path,
                        Some((line_no, column)),
                        format!(
                            "environment variable {name} is not set (use ${{{name}:-default}} for a fallback)"
                        ),
                    ));
                }
            };
            // A value that spans lines or carries control characters would
            // silently restructure the YAML around it.
            if value.chars().any(|c| c.is_control()) {
                return Err(ConfigError::new(
                    path,
                    Some((line_no, column)),
                    format!("environment variable {name} contains a newline or control character"),
                ));
            }
            out.push_str(&value);
            rest = &body[end + 1..];
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    Ok(out)
}

/// Splits a YAML line into code and comment: a `#` starts a comment when it
/// begins the line or follows whitespace, outside quotes.
fn split_comment(line: &str) -> (&str, &str) {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && previous.is_whitespace() => return line.split_at(i),
            None => {}
        }
        previous = c;
    }
    (line, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(text: &str) -> Result<String, ConfigError> {
        let env = |name: &str| match name {
            "PORT" => Some("8081".to_string()),
            "BAD" => Some("a\nb: c".to_string()),
            _ => None,
        };
        interpolate(Path::new("t.yaml"), text, &env)
    }

    #[test]
    fn replaces_set_variables_and_defaults() {
        assert_eq!(
            expand("addr: 127.0.0.1:${PORT}\nx: ${NOPE:-7}\n").unwrap(),
            "addr: 127.0.0.1:8081\nx: 7\n"
        );
    }

    #[test]
    fn unset_variable_is_an_error_with_position() {
        let err = expand("a: 1\nb: ${MISSING}\n").unwrap_err();
        assert_eq!(err.position, Some((2, 4)));
        assert!(err.message.contains("MISSING"), "{err}");
    }

    #[test]
    fn comments_and_escapes_are_left_alone() {
        assert_eq!(
            expand("a: $${HOME} # uses ${MISSING}\n").unwrap(),
            "a: ${HOME} # uses ${MISSING}\n"
        );
        assert_eq!(expand("a: \"x # ${PORT}\"\n").unwrap(), "a: \"x # 8081\"\n");
    }

    #[test]
    fn multi_line_values_are_refused() {
        let err = expand("a: ${BAD}\n").unwrap_err();
        assert!(err.message.contains("newline"), "{err}");
    }

    #[test]
    fn omitted_sections_take_their_documented_defaults() {
        let text = "routes:\n  - name: r\n    upstream: { addrs: [\"127.0.0.1:1\"] }\n    auth: { mode: off }\n";
        let config = parse(Path::new("g.yaml"), text, &|_| None).unwrap();
        assert_eq!(config.listen.http.addr, "127.0.0.1:8080");
        assert_eq!(
            config.listen.http.mode,
            super::super::schema::ClearTextMode::Serve
        );
        assert!(!config.listen.http.h2c);
        assert!(config.listen.https.is_none());
        assert_eq!(config.admin.addr, "127.0.0.1:9090");
        assert_eq!(config.server.realm, "jwtgate");
        assert_eq!(config.server.grace_period.as_secs(), 5);
        assert_eq!(config.tokens.max_bytes, 8192);
        let route = &config.routes[0];
        assert_eq!(route.matcher.path_prefix, "/");
        assert_eq!(route.auth.mode, super::super::schema::AuthMode::Off);
        assert_eq!(route.forward.reserved_prefix, "x-jwt-");
        assert_eq!(
            route.upstream.as_ref().unwrap().connect_timeout.as_secs(),
            2
        );
    }

    #[test]
    fn unknown_fields_are_reported_with_line_and_column() {
        let text =
            "routes:\n  - name: r\n    upstream: { addrs: [\"127.0.0.1:1\"] }\n    colour: blue\n";
        let err = parse(Path::new("g.yaml"), text, &|_| None).unwrap_err();
        assert_eq!(err.position.map(|p| p.0), Some(4), "{err}");
        assert!(
            err.message.starts_with("routes[0]: unknown field `colour`"),
            "{err}"
        );
    }

    fn refused(text: &str) -> ConfigError {
        parse(Path::new("g.yaml"), text, &|_| None).unwrap_err()
    }

    #[test]
    fn a_type_error_names_the_field_the_type_in_words_and_the_value() {
        let route =
            "routes:\n  - name: a\n    upstream: { addrs: [\"127.0.0.1:1\"] }\n  - name: b\n";
        let cases = [
            (
                "issuers:\n  - name: i\n    fetch: { max_bytes: ten }\n",
                (3, 25),
                "issuers[0].fetch.max_bytes: expected a whole number (bytes), got \"ten\"",
            ),
            (
                &format!("{route}    upstream: {{ addrs: x }}\n"),
                (5, 24),
                "routes[1].upstream.addrs: expected a list, got \"x\"",
            ),
            (
                &format!("{route}    auth: required\n"),
                (5, 11),
                "routes[1].auth: expected a map, got \"required\"",
            ),
            (
                "server: { threads: many }\n",
                (1, 20),
                "server.threads: expected a whole number, got \"many\"",
            ),
            (
                &format!("{route}    upstream: {{ addrs: [], connect_timeout: soon }}\n"),
                (5, 45),
                "routes[1].upstream.connect_timeout: expected a duration (30s, 5m, 250ms, 1h 30m), got \"soon\"",
            ),
            (
                "routes:\n  - name: ~\n",
                (2, 11),
                "routes[0].name: expected text, got nothing",
            ),
        ];
        for (text, position, message) in cases {
            let error = refused(text);
            assert_eq!(error.message, message, "{text}");
            assert_eq!(error.position, Some(position), "{error}");
        }
    }

    #[test]
    fn a_duplicate_key_says_where_the_first_one_is() {
        let error = refused("issuers: []\nroutes: []\nissuers: []\n");
        assert_eq!(error.message, "duplicate key \"issuers\" (first at line 1)");
        assert_eq!(error.position, Some((3, 1)));
        let error = refused("routes:\n  - name: a\n    auth: { mode: off }\n    name: b\n");
        assert_eq!(
            error.message,
            "routes[0]: duplicate key \"name\" (first at line 2)"
        );
        assert_eq!(error.position, Some((4, 5)));
    }

    #[test]
    fn hostile_yaml_is_refused_in_jwtgates_words() {
        // The alias bomb is tests/scale.rs's, through `jwtgate check`.
        let deep = format!(
            "issuers:\n  - name: x\n    jwks: {}{}\nroutes: []\n",
            "[".repeat(100),
            "]".repeat(100)
        );
        let error = parse(Path::new("deep.yaml"), &deep, &|_| None).unwrap_err();
        assert!(error.message.contains("nested deeper than 64"), "{error}");

        let huge = "#".repeat(MAX_CONFIG_BYTES + 1);
        let error = parse(Path::new("huge.yaml"), &huge, &|_| None).unwrap_err();
        assert!(
            error.message.contains("jwtgate reads at most 64 MiB"),
            "{error}"
        );
    }
}
