//! The read-only JSON tree that a token's header and claims are parsed into.
//!
//! `serde_json::Value` costs an allocation per string and B-tree nodes per
//! object; on the request path that was over half of what jwtgate adds to an
//! RSA signature check. Here every string of a document (member names and
//! values, unescaped) is copied into one buffer and referred to by its span,
//! and an object is a vector of members sorted by name (length first, then
//! bytes): a typical token costs a handful of allocations. Sorting is also
//! how duplicate member names are refused (RFC 7515 §5.2, RFC 8725 §3.4), at
//! every depth, in O(n log n) even for a token made of nothing but members.
//!
//! Tokenizing stays serde_json's job; this module only decides what the
//! tokens are stored as.

use std::cmp::Ordering;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

/// A JSON object parsed strictly: the root of a token's header or claims.
#[derive(Clone)]
pub struct JsonObject {
    /// Every string of the document, back to back.
    text: String,
    members: Vec<Member>,
}

/// Where a string lives in [`JsonObject::text`].
#[derive(Clone, Copy)]
struct Span {
    start: u32,
    end: u32,
}

#[derive(Clone)]
enum Node {
    Null,
    Bool(bool),
    Number(Number),
    String(Span),
    Array(Vec<Node>),
    /// Sorted by [`name_order`], names unique.
    Object(Vec<Member>),
}

type Member = (Span, Node);

/// Why a document was refused; deliberately without detail, since the
/// caller only ever reports "malformed".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotStrictJson;

/// In a token, a header or claims set that isn't strict JSON is malformed.
impl From<NotStrictJson> for super::Reason {
    fn from(_: NotStrictJson) -> Self {
        Self::Malformed
    }
}

impl JsonObject {
    /// Parses `json`, which must be one object with no member name repeated
    /// at any depth. Numbers, nesting limits and UTF-8 rules are
    /// serde_json's.
    pub fn parse(json: &[u8]) -> Result<Self, NotStrictJson> {
        // Spans are u32; tokens are capped far below that long before here.
        if u32::try_from(json.len()).is_err() {
            return Err(NotStrictJson);
        }
        // Unescaped strings are never longer than their JSON encoding, so
        // this one allocation holds every string of the document.
        let mut text = String::with_capacity(json.len());
        // Validating the UTF-8 of the whole document at once is cheaper
        // than serde_json doing it string by string.
        let json = std::str::from_utf8(json).map_err(|_| NotStrictJson)?;
        let mut deserializer = serde_json::Deserializer::from_str(json);
        let root = NodeSeed {
            text: &mut text,
            root: true,
        }
        .deserialize(&mut deserializer)
        .map_err(|_| NotStrictJson)?;
        deserializer.end().map_err(|_| NotStrictJson)?;
        match root {
            Node::Object(members) => Ok(Self { text, members }),
            _ => Err(NotStrictJson),
        }
    }

    pub fn get(&self, name: &str) -> Option<JsonRef<'_>> {
        self.members().get(name)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn members(&self) -> Members<'_> {
        Members {
            text: &self.text,
            members: &self.members,
        }
    }

    /// What the document holds on the heap, for the token cache's memory
    /// bound.
    pub fn heap_bytes(&self) -> usize {
        self.text.capacity() + members_heap_bytes(&self.members)
    }

    /// The same document as a `serde_json::Value`, for display and tests;
    /// never on the request path.
    pub fn to_value(&self) -> Value {
        self.members().to_value()
    }
}

fn members_heap_bytes(members: &Vec<Member>) -> usize {
    members.capacity() * size_of::<Member>()
        + members
            .iter()
            .map(|(_, node)| node_heap_bytes(node))
            .sum::<usize>()
}

fn node_heap_bytes(node: &Node) -> usize {
    match node {
        Node::Array(items) => {
            items.capacity() * size_of::<Node>() + items.iter().map(node_heap_bytes).sum::<usize>()
        }
        Node::Object(members) => members_heap_bytes(members),
        _ => 0,
    }
}

impl fmt::Debug for JsonObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_value(), f)
    }
}

/// A borrowed view of one value in a [`JsonObject`].
#[derive(Clone, Copy)]
pub enum JsonRef<'a> {
    Null,
    Bool(bool),
    Number(&'a Number),
    String(&'a str),
    Array(Items<'a>),
    Object(Members<'a>),
}

impl<'a> JsonRef<'a> {
    fn new(text: &'a str, node: &'a Node) -> Self {
        match node {
            Node::Null => Self::Null,
            Node::Bool(b) => Self::Bool(*b),
            Node::Number(n) => Self::Number(n),
            Node::String(span) => Self::String(span.of(text)),
            Node::Array(nodes) => Self::Array(Items { text, nodes }),
            Node::Object(members) => Self::Object(Members { text, members }),
        }
    }

    pub fn as_str(self) -> Option<&'a str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_f64(self) -> Option<f64> {
        match self {
            Self::Number(n) => n.as_f64(),
            _ => None,
        }
    }

    pub fn as_object(self) -> Option<Members<'a>> {
        match self {
            Self::Object(members) => Some(members),
            _ => None,
        }
    }

    pub fn to_value(self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(b),
            Self::Number(n) => Value::Number(n.clone()),
            Self::String(s) => Value::String(s.to_owned()),
            Self::Array(items) => Value::Array(items.iter().map(Self::to_value).collect()),
            Self::Object(members) => members.to_value(),
        }
    }

    /// Structural equality with a value from the configuration, with
    /// `serde_json::Value`'s rules (so `1` and `1.0` differ, as they do there).
    pub fn equals(self, other: &Value) -> bool {
        match (self, other) {
            (Self::Null, Value::Null) => true,
            (Self::Bool(a), Value::Bool(b)) => a == *b,
            (Self::Number(a), Value::Number(b)) => a == b,
            (Self::String(a), Value::String(b)) => a == b,
            (Self::Array(a), Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.equals(y))
            }
            (Self::Object(a), Value::Object(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .all(|(name, x)| b.get(name).is_some_and(|y| x.equals(y)))
            }
            _ => false,
        }
    }
}

impl fmt::Debug for JsonRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_value(), f)
    }
}

/// The elements of a JSON array.
#[derive(Clone, Copy)]
pub struct Items<'a> {
    text: &'a str,
    nodes: &'a [Node],
}

impl<'a> Items<'a> {
    pub fn len(self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(self) -> bool {
        self.nodes.is_empty()
    }

    pub fn iter(self) -> impl ExactSizeIterator<Item = JsonRef<'a>> + 'a {
        self.nodes
            .iter()
            .map(move |node| JsonRef::new(self.text, node))
    }
}

/// The members of a JSON object, sorted by name (see [`name_order`]).
#[derive(Clone, Copy)]
pub struct Members<'a> {
    text: &'a str,
    members: &'a [Member],
}

impl<'a> Members<'a> {
    pub fn len(self) -> usize {
        self.members.len()
    }

    pub fn is_empty(self) -> bool {
        self.members.is_empty()
    }

    pub fn get(self, name: &str) -> Option<JsonRef<'a>> {
        let index = self
            .members
            .binary_search_by(|(span, _)| name_order(span.bytes(self.text), name.as_bytes()))
            .ok()?;
        Some(JsonRef::new(self.text, &self.members[index].1))
    }

    pub fn iter(self) -> impl ExactSizeIterator<Item = (&'a str, JsonRef<'a>)> + 'a {
        self.members
            .iter()
            .map(move |(name, node)| (name.of(self.text), JsonRef::new(self.text, node)))
    }

    fn to_value(self) -> Value {
        Value::Object(
            self.iter()
                .map(|(name, value)| (name.to_owned(), value.to_value()))
                .collect(),
        )
    }
}

impl Span {
    fn of(self, text: &str) -> &str {
        &text[self.start as usize..self.end as usize]
    }

    fn bytes(self, text: &str) -> &[u8] {
        &text.as_bytes()[self.start as usize..self.end as usize]
    }
}

/// The order members are kept in: by length, then bytewise. Names differ
/// in length more often than not, and equal-length names are short (`iss`,
/// `sub`, `aud`...), so the byte loop is cheaper than a call to `memcmp`.
fn name_order(a: &[u8], b: &[u8]) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.iter().cmp(b.iter()))
}

/// Appends `s` to the document's text. The capacity reserved up front
/// always suffices, so this never reallocates and spans stay in range.
fn store(text: &mut String, s: &str) -> Span {
    let start = text.len() as u32;
    text.push_str(s);
    Span {
        start,
        end: text.len() as u32,
    }
}

/// Deserializes one value of any type into a [`Node`].
struct NodeSeed<'t> {
    text: &'t mut String,
    /// The document's root: a token's claims object, typically a dozen
    /// members, sized for that up front instead of growing three times.
    root: bool,
}

impl NodeSeed<'_> {
    fn child(&mut self) -> NodeSeed<'_> {
        NodeSeed {
            text: self.text,
            root: false,
        }
    }
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = Node;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Number::from_f64(v)
            .map(Node::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(store(self.text, v)))
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.child())? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Node, A::Error> {
        let mut members = Vec::with_capacity(if self.root { 16 } else { 0 });
        while let Some(name) = map.next_key_seed(NameSeed {
            text: &mut *self.text,
        })? {
            let value = map.next_value_seed(self.child())?;
            members.push((name, value));
        }
        let text = &*self.text;
        members.sort_unstable_by(|(a, _), (b, _)| name_order(a.bytes(text), b.bytes(text)));
        if members
            .windows(2)
            .any(|pair| name_order(pair[0].0.bytes(text), pair[1].0.bytes(text)).is_eq())
        {
            return Err(de::Error::custom("duplicate member name"));
        }
        Ok(Node::Object(members))
    }
}

/// Deserializes a member name into the document's text.
struct NameSeed<'t> {
    text: &'t mut String,
}

impl<'de> DeserializeSeed<'de> for NameSeed<'_> {
    type Value = Span;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Span, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NameSeed<'_> {
    type Value = Span;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E>(self, v: &str) -> Result<Span, E> {
        Ok(store(self.text, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(s: &str) -> Result<JsonObject, NotStrictJson> {
        JsonObject::parse(s.as_bytes())
    }

    #[test]
    fn reads_what_serde_json_reads() {
        let text = r#"{"n":-1,"f":1.5,"big":18446744073709551615,"t":true,"z":null,
            "s":"a\"b\\c\u00e9\ud83d\ude00","a":[1,"x",{"k":[]}],"o":{"p":{"q":"r"}},"":0}"#;
        let object = parse(text).unwrap();
        assert_eq!(
            object.to_value(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        assert_eq!(object.get("s").unwrap().as_str(), Some("a\"b\\cé😀"));
        assert_eq!(object.get("f").unwrap().as_f64(), Some(1.5));
        assert_eq!(object.get("").unwrap().as_f64(), Some(0.0));
        let nested = object.get("o").unwrap().as_object().unwrap();
        assert_eq!(
            nested
                .get("p")
                .unwrap()
                .as_object()
                .unwrap()
                .get("q")
                .unwrap()
                .as_str(),
            Some("r")
        );
        assert!(object.get("missing").is_none());
    }

    #[test]
    fn members_are_sorted_and_found_by_name() {
        let names: Vec<String> = (0..200).rev().map(|i| format!("m{i}")).collect();
        let body: Vec<String> = names.iter().map(|n| format!("\"{n}\":\"{n}\"")).collect();
        let object = parse(&format!("{{{}}}", body.join(","))).unwrap();
        let listed: Vec<&str> = object.members().iter().map(|(name, _)| name).collect();
        let mut sorted = listed.clone();
        sorted.sort_unstable_by_key(|name| (name.len(), *name));
        assert_eq!(listed, sorted);
        for name in &names {
            assert_eq!(object.get(name).unwrap().as_str(), Some(name.as_str()));
        }
    }

    #[test]
    fn heap_bytes_count_strings_and_every_container() {
        let flat = parse(r#"{"s":"abcdefghij"}"#).unwrap();
        assert!(flat.heap_bytes() >= "s".len() + "abcdefghij".len() + size_of::<Member>());
        let nested = parse(r#"{"s":"abcdefghij","o":{"a":[1,2,3,{"b":[4]}]}}"#).unwrap();
        let containers = 2 * size_of::<Member>() + 5 * size_of::<Node>();
        assert!(nested.heap_bytes() >= flat.heap_bytes() + containers);
    }

    #[test]
    fn duplicate_names_are_refused_at_every_depth() {
        for text in [
            r#"{"a":1,"a":1}"#,
            r#"{"a":1,"b":2,"a":3}"#,
            r#"{"o":{"r":1,"r":2}}"#,
            r#"{"a":[{"r":1,"r":2}]}"#,
            r#"{"\u0061":1,"a":2}"#,
        ] {
            assert_eq!(parse(text).unwrap_err(), NotStrictJson, "{text}");
        }
        assert!(parse(r#"{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}"#).is_ok());
    }

    #[test]
    fn only_one_object_is_a_document() {
        for text in ["[1]", "\"s\"", "1", "null", "{} {}", "{", "", "{\"a\":1,}"] {
            assert_eq!(parse(text).unwrap_err(), NotStrictJson, "{text:?}");
        }
        assert!(parse(" {} ").unwrap().members().is_empty());
    }

    #[test]
    fn equality_with_configured_values_follows_serde_json() {
        let object = parse(r#"{"a":[1,"x",{"k":null}],"n":1,"f":1.0,"b":false}"#).unwrap();
        let get = |name| object.get(name).unwrap();
        assert!(get("a").equals(&json!([1, "x", {"k": null}])));
        assert!(!get("a").equals(&json!([1, "x", {"k": 0}])));
        assert!(!get("a").equals(&json!([1, "x"])));
        assert!(get("n").equals(&json!(1)));
        assert!(!get("n").equals(&json!(1.0)));
        assert!(get("f").equals(&json!(1.0)));
        assert!(get("b").equals(&json!(false)));
        assert!(!get("b").equals(&json!("false")));
    }
}
