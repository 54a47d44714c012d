//! Reading claims: dotted paths into nested objects, scope lists in the
//! shapes identity providers actually emit, and rendering claims as header
//! values.

use serde_json::{Map, Value};

/// Looks up `path` in the claims. A top-level claim whose name contains dots
/// (Auth0's namespaced `https://example.com/roles`) wins over a nested walk.
pub fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut segments = path.split('.');
    let mut current = claims.get(segments.next()?)?;
    for segment in segments {
        current = current.as_object()?.get(segment)?;
    }
    Some(current)
}

/// Where scopes are read from when an issuer does not say: OAuth's `scope`
/// (RFC 8693 §4.2, space-delimited), then Entra/Okta's `scp`, then `scopes`.
pub const DEFAULT_SCOPE_CLAIMS: [&str; 3] = ["scope", "scp", "scopes"];

/// The token's scopes: a space-delimited string or an array of strings.
pub fn scopes<'a>(claims: &'a Map<String, Value>, claim: Option<&str>) -> Vec<&'a str> {
    let value = match claim {
        Some(path) => lookup(claims, path),
        None => DEFAULT_SCOPE_CLAIMS
            .iter()
            .find_map(|name| claims.get(*name)),
    };
    match value {
        Some(Value::String(s)) => s.split_ascii_whitespace().collect(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// A claim as a header value: strings verbatim, arrays joined with a space,
/// objects as JSON. `None` when the result could not be a valid header value
/// (control characters), so a hostile claim cannot inject headers.
pub fn header_value(value: &Value) -> Option<String> {
    let rendered = match value {
        Value::Null => return None,
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let parts: Vec<String> = items
                .iter()
                .map(|item| match item {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            parts.join(" ")
        }
        other => other.to_string(),
    };
    // C0, DEL and C1 (U+0080-U+009F, e.g. NEL): some backends and log
    // viewers split lines on them.
    let valid = rendered.chars().all(|c| c == '\t' || !c.is_control());
    valid.then_some(rendered)
}

/// Does the claim hold `expected`? An array claim holds each of its elements.
pub fn holds(value: &Value, expected: &Value) -> bool {
    match value {
        Value::Array(items) => items.iter().any(|item| item == expected),
        scalar => scalar == expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn dotted_paths_walk_objects_and_dotted_names_win() {
        let c = claims(json!({
            "realm_access": {"roles": ["admin", "ops"]},
            "https://example.com/roles": ["x"],
        }));
        assert_eq!(
            lookup(&c, "realm_access.roles"),
            Some(&json!(["admin", "ops"]))
        );
        assert_eq!(lookup(&c, "https://example.com/roles"), Some(&json!(["x"])));
        assert_eq!(lookup(&c, "realm_access.missing"), None);
        assert_eq!(lookup(&c, "realm_access.roles.deeper"), None);
    }

    #[test]
    fn scopes_from_every_shape() {
        assert_eq!(
            scopes(&claims(json!({"scope": "a  b c"})), None),
            ["a", "b", "c"]
        );
        assert_eq!(
            scopes(&claims(json!({"scp": ["a", "b"]})), None),
            ["a", "b"]
        );
        assert_eq!(scopes(&claims(json!({"scopes": "a"})), None), ["a"]);
        assert_eq!(
            scopes(&claims(json!({"perm": {"s": "x y"}})), Some("perm.s")),
            ["x", "y"]
        );
        assert!(scopes(&claims(json!({"scope": 5})), None).is_empty());
    }

    #[test]
    fn header_values_render_and_refuse_control_characters() {
        assert_eq!(header_value(&json!("alice")).as_deref(), Some("alice"));
        assert_eq!(
            header_value(&json!(["a", "b", 3])).as_deref(),
            Some("a b 3")
        );
        assert_eq!(
            header_value(&json!({"k": 1})).as_deref(),
            Some(r#"{"k":1}"#)
        );
        assert_eq!(header_value(&json!(true)).as_deref(), Some("true"));
        assert_eq!(header_value(&json!("a\r\nX-Admin: 1")), None);
        assert_eq!(header_value(&json!("a\u{85}X-Admin: 1")), None);
        assert_eq!(header_value(&Value::Null), None);
    }

    #[test]
    fn holds_checks_membership_or_equality() {
        assert!(holds(&json!(["a", "b"]), &json!("b")));
        assert!(holds(&json!("a"), &json!("a")));
        assert!(holds(&json!(true), &json!(true)));
        assert!(!holds(&json!(["a"]), &json!("b")));
    }
}
