//! Reading claims: dotted paths into nested objects, scope lists in the
//! shapes identity providers actually emit, and rendering claims as header
//! values.

use std::fmt::Write;

use serde_json::Value;

use super::json::{Items, JsonObject, JsonRef};

/// Looks up `path` in the claims. A top-level claim whose name contains dots
/// (Auth0's namespaced `https://example.com/roles`) wins over a nested walk.
pub fn lookup<'a>(claims: &'a JsonObject, path: &str) -> Option<JsonRef<'a>> {
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

/// The token's scopes: a space-delimited string or an array of strings,
/// read in place.
pub fn scopes<'a>(claims: &'a JsonObject, claim: Option<&str>) -> Scopes<'a> {
    let value = match claim {
        Some(path) => lookup(claims, path),
        None => DEFAULT_SCOPE_CLAIMS
            .iter()
            .find_map(|name| claims.get(name)),
    };
    match value {
        Some(JsonRef::String(s)) => Scopes::Delimited(s),
        Some(JsonRef::Array(items)) => Scopes::Listed(items),
        _ => Scopes::None,
    }
}

/// A token's scopes as it states them; array elements that aren't strings
/// grant nothing.
#[derive(Clone, Copy)]
pub enum Scopes<'a> {
    None,
    Delimited(&'a str),
    Listed(Items<'a>),
}

impl<'a> Scopes<'a> {
    pub fn iter(self) -> impl Iterator<Item = &'a str> {
        let (delimited, listed) = match self {
            Self::None => (None, None),
            Self::Delimited(s) => (Some(s), None),
            Self::Listed(items) => (None, Some(items)),
        };
        let delimited = delimited.into_iter().flat_map(str::split_ascii_whitespace);
        let listed = listed
            .into_iter()
            .flat_map(|items| items.iter().filter_map(JsonRef::as_str));
        delimited.chain(listed)
    }

    pub fn contains(self, scope: &str) -> bool {
        self.iter().any(|granted| granted == scope)
    }
}

/// A claim as a header value: strings verbatim, arrays joined with a space,
/// objects as JSON. `None` when the result could not be a valid header value
/// (control characters), so a hostile claim cannot inject headers.
pub fn header_value(value: JsonRef<'_>) -> Option<String> {
    let mut rendered = String::new();
    match value {
        JsonRef::Null => return None,
        JsonRef::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    rendered.push(' ');
                }
                render(&mut rendered, item);
            }
        }
        other => render(&mut rendered, other),
    }
    // C0, DEL and C1 (U+0080-U+009F, e.g. NEL): some backends and log
    // viewers split lines on them.
    let valid = rendered.chars().all(|c| c == '\t' || !c.is_control());
    valid.then_some(rendered)
}

/// Strings verbatim, anything else as JSON.
fn render(out: &mut String, value: JsonRef<'_>) {
    match value {
        JsonRef::String(s) => out.push_str(s),
        // Writing to a String can't fail.
        JsonRef::Number(n) => _ = write!(out, "{n}"),
        JsonRef::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        other => _ = write!(out, "{}", other.to_value()),
    }
}

/// Does the claim hold `expected`? An array claim holds each of its elements.
pub fn holds(value: JsonRef<'_>, expected: &Value) -> bool {
    match value {
        JsonRef::Array(items) => items.iter().any(|item| item.equals(expected)),
        scalar => scalar.equals(expected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> JsonObject {
        JsonObject::parse(v.to_string().as_bytes()).unwrap()
    }

    /// One claim of its own, for the value-level functions.
    fn value(v: Value) -> JsonObject {
        claims(json!({ "v": v }))
    }

    fn header_value_of(v: Value) -> Option<String> {
        header_value(value(v).get("v").unwrap())
    }

    fn holds_of(v: Value, expected: Value) -> bool {
        holds(value(v).get("v").unwrap(), &expected)
    }

    #[test]
    fn dotted_paths_walk_objects_and_dotted_names_win() {
        let c = claims(json!({
            "realm_access": {"roles": ["admin", "ops"]},
            "https://example.com/roles": ["x"],
        }));
        let found = |path| lookup(&c, path).map(JsonRef::to_value);
        assert_eq!(found("realm_access.roles"), Some(json!(["admin", "ops"])));
        assert_eq!(found("https://example.com/roles"), Some(json!(["x"])));
        assert_eq!(found("realm_access.missing"), None);
        assert_eq!(found("realm_access.roles.deeper"), None);
    }

    #[test]
    fn scopes_from_every_shape() {
        fn granted(v: Value, claim: Option<&str>) -> Vec<String> {
            let claims = claims(v);
            let scopes = scopes(&claims, claim);
            scopes.iter().map(str::to_owned).collect()
        }
        assert_eq!(granted(json!({"scope": "a  b c"}), None), ["a", "b", "c"]);
        assert_eq!(granted(json!({"scp": ["a", 1, "b"]}), None), ["a", "b"]);
        assert_eq!(granted(json!({"scopes": "a"}), None), ["a"]);
        assert_eq!(
            granted(json!({"perm": {"s": "x y"}}), Some("perm.s")),
            ["x", "y"]
        );
        assert!(granted(json!({"scope": 5}), None).is_empty());
        let c = claims(json!({"scope": "read write"}));
        assert!(scopes(&c, None).contains("write"));
        assert!(!scopes(&c, None).contains("rea"));
    }

    #[test]
    fn header_values_render_and_refuse_control_characters() {
        assert_eq!(header_value_of(json!("alice")).as_deref(), Some("alice"));
        assert_eq!(
            header_value_of(json!(["a", "b", 3])).as_deref(),
            Some("a b 3")
        );
        assert_eq!(
            header_value_of(json!({"k": 1})).as_deref(),
            Some(r#"{"k":1}"#)
        );
        assert_eq!(header_value_of(json!(true)).as_deref(), Some("true"));
        assert_eq!(header_value_of(json!("a\r\nX-Admin: 1")), None);
        assert_eq!(header_value_of(json!("a\u{85}X-Admin: 1")), None);
        assert_eq!(header_value_of(Value::Null), None);
    }

    #[test]
    fn holds_checks_membership_or_equality() {
        assert!(holds_of(json!(["a", "b"]), json!("b")));
        assert!(holds_of(json!("a"), json!("a")));
        assert!(holds_of(json!(true), json!(true)));
        assert!(!holds_of(json!(["a"]), json!("b")));
    }
}
