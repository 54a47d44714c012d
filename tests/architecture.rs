//! The rules docs/ARCHITECTURE.md draws, read off `src/` itself: which
//! module may import which (dependencies point one way: down), which may
//! use Pingora, and how large a file or a function may grow. A change that
//! breaks one fails here with the file and line.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Each top-level module's layer, lowest first. A module imports only
/// modules of its own layer or below; `config` beyond its schema (the
/// loader) is an adapter-level module, so nothing below the adapters
/// reads config files.
const LAYERS: &[(&str, u8)] = &[
    ("config::schema", 0),
    ("clock", 0),
    ("digest", 0),
    ("memory", 0),
    ("tls_provider", 0),
    ("jose", 1),
    ("telemetry", 1),
    ("certificates", 1),
    ("client_certs", 1),
    ("keys", 2),
    ("auth", 3),
    ("mint", 3),
    ("state", 4),
    ("ssf", 4),
    ("introspection", 4),
    ("identity", 4),
    ("pipeline", 5),
    ("answers", 6),
    ("config", 7),
    ("proxy", 7),
    ("authz", 7),
    ("admin", 7),
    ("upstream", 7),
    ("echo", 7),
    ("shutdown", 7),
    ("assemble", 8),
];

/// Modules that import nothing else of jwtgate, so anything may import
/// them and nothing can be imported back.
const LEAVES: &[&str] = &["config::schema", "telemetry"];

/// Where Pingora may be used: the adapters and the assembler.
const PINGORA: &[&str] = &[
    "proxy", "authz", "admin", "upstream", "echo", "shutdown", "assemble",
];

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 100;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
}

/// The library's files (`main.rs` and `cli/` are the binary, above it).
fn library_files() -> Vec<(String, String, String)> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let relative = path
                .strip_prefix(src())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if relative == "main.rs" || relative.starts_with("cli/") || is_test_file(&relative) {
                return None;
            }
            let text = fs::read_to_string(&path).unwrap();
            Some((relative.clone(), module_of(&relative), without_tests(&text)))
        })
        .collect()
}

fn is_test_file(relative: &str) -> bool {
    relative.ends_with("/tests.rs") || relative.ends_with("_tests.rs")
}

/// `a/b/mod.rs` and `a/b.rs` are `a::b`.
fn module_of(relative: &str) -> String {
    let without = relative.trim_end_matches(".rs").trim_end_matches("/mod");
    without.replace('/', "::")
}

/// The module an import names, as [`LAYERS`] lists it: the schema apart
/// from the rest of `config`.
fn layer_key(path: &str) -> String {
    let mut segments = path.split("::");
    let top = segments.next().unwrap_or_default();
    match (top, segments.next()) {
        ("config", Some("schema")) => "config::schema".into(),
        _ => top.into(),
    }
}

fn layer(key: &str) -> Option<u8> {
    LAYERS
        .iter()
        .find(|(name, _)| *name == key)
        .map(|(_, l)| *l)
}

/// The file's code without its unit tests: a `#[cfg(test)]` at the start
/// of a line drops the item after it (a `mod …;` line or a braced block).
/// Test code may build fixtures with anything; the shipped graph may not.
fn without_tests(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line != "#[cfg(test)]" {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let mut depth = 0i32;
        for skipped in lines.by_ref() {
            depth += braces(skipped);
            if depth <= 0 && (skipped.ends_with(';') || skipped.ends_with('}')) {
                break;
            }
        }
        out.push('\n');
    }
    out
}

fn braces(line: &str) -> i32 {
    let code = code_of(line);
    code.matches('{').count() as i32 - code.matches('}').count() as i32
}

/// A line without its comment and the contents of its string literals, so
/// neither a URL nor a `{` in a message counts as code.
fn code_of(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        match (in_string, c) {
            (true, '\\') => {
                chars.next();
            }
            (true, '"') => in_string = false,
            (true, _) => {}
            (false, '"') => in_string = true,
            (false, '/') if chars.peek() == Some(&'/') => break,
            (false, '\'') => {
                // A char literal such as '{' (a lifetime has no closing quote).
                let rest: String = chars.clone().take(3).collect();
                if let Some(end) = rest.find('\'')
                    && end > 0
                {
                    for _ in 0..=end {
                        chars.next();
                    }
                } else {
                    out.push(c);
                }
            }
            (false, _) => out.push(c),
        }
    }
    out
}

/// Every `crate::…` path the code names, with its line: in `use` trees
/// (`use crate::{a::b, c};` spanning lines) and inline.
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let mut paths = Vec::new();
    let lines: Vec<String> = code.lines().map(code_of).collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        if line.starts_with("use crate::") || line.starts_with("pub use crate::") {
            let start = i;
            let mut statement = String::new();
            while i < lines.len() {
                statement.push_str(&lines[i]);
                if lines[i].contains(';') {
                    break;
                }
                i += 1;
            }
            let tree = statement.split("crate::").nth(1).unwrap_or_default();
            for path in use_tree(tree.trim_end_matches(';')) {
                paths.push((start + 1, path));
            }
        } else {
            for (at, _) in lines[i].match_indices("crate::") {
                let path: String = lines[i][at + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                paths.push((i + 1, path));
            }
        }
        i += 1;
    }
    paths
}

/// `a::{b::c, d}` → `a::b::c`, `a::d`: the first two segments are enough
/// to know the module.
fn use_tree(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    match tree.find('{') {
        None => vec![tree],
        Some(open) => {
            let prefix = &tree[..open];
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            split_top_level(inner)
                .into_iter()
                .flat_map(|part| use_tree(&part))
                .map(|rest| format!("{prefix}{rest}"))
                .collect()
        }
    }
}

fn split_top_level(list: &str) -> Vec<String> {
    let (mut parts, mut current, mut depth) = (Vec::new(), String::new(), 0);
    for c in list.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

#[test]
fn every_module_has_a_layer() {
    for (file, module, _) in library_files() {
        let key = layer_key(&module);
        if module.is_empty() || file == "lib.rs" {
            continue;
        }
        assert!(
            layer(&key).is_some(),
            "{file}: {key} has no layer in LAYERS"
        );
    }
}

#[test]
fn dependencies_point_down() {
    let mut wrong: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (file, module, code) in library_files() {
        let from = layer_key(&module);
        let Some(from_layer) = layer(&from) else {
            continue;
        };
        for (line, path) in crate_paths(&code) {
            let to = layer_key(&path);
            if to == from || to == module.split("::").next().unwrap_or_default() {
                continue;
            }
            let allowed = match layer(&to) {
                _ if LEAVES.contains(&from.as_str()) => false,
                Some(to_layer) => to_layer <= from_layer,
                // The crate root's own items (none today) or a macro path.
                None => true,
            };
            if !allowed {
                wrong
                    .entry(format!("{from} (layer {from_layer})"))
                    .or_default()
                    .push(format!("src/{file}:{line}: crate::{path}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up (see docs/ARCHITECTURE.md):\n{wrong:#?}"
    );
}

#[test]
fn only_adapters_and_the_assembler_use_pingora() {
    let mut found = Vec::new();
    for (file, module, code) in library_files() {
        let key = layer_key(&module);
        let top = key.split("::").next().unwrap_or_default();
        if PINGORA.contains(&top) {
            continue;
        }
        for (number, line) in code.lines().enumerate() {
            if code_of(line).contains("pingora::") {
                found.push(format!("src/{file}:{}", number + 1));
            }
        }
    }
    assert!(found.is_empty(), "Pingora below the adapters: {found:?}");
}

/// Every `fn` of `text` (tests included) and how many lines it spans.
fn functions(text: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let code = code_of(lines[i]);
        let Some(at) = fn_keyword(&code) else {
            i += 1;
            continue;
        };
        let name: String = code[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let (start, mut depth, mut opened) = (i, 0i32, false);
        while i < lines.len() {
            let code = code_of(lines[i]);
            depth += braces(lines[i]);
            opened |= code.contains('{');
            if (opened && depth <= 0) || (!opened && code.trim_end().ends_with(';')) {
                break;
            }
            i += 1;
        }
        found.push((start + 1, name, i - start + 1));
        i += 1;
    }
    found
}

/// Where `fn ` starts an item on this line (not `Fn(`, not a field).
fn fn_keyword(code: &str) -> Option<usize> {
    let at = code.find("fn ")?;
    let before = code[..at].trim();
    let qualifiers = ["", "pub", "async", "const", "unsafe", "extern"];
    let is_item = before
        .split_whitespace()
        .all(|word| qualifiers.contains(&word) || word.starts_with("pub("));
    is_item.then_some(at)
}

#[test]
fn files_and_functions_stay_small() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut too_large = Vec::new();
    for path in files {
        let relative = path
            .strip_prefix(src())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = fs::read_to_string(&path).unwrap();
        let before_tests = text
            .lines()
            .position(|line| line == "#[cfg(test)]")
            .unwrap_or(text.lines().count());
        if !is_test_file(&relative) && before_tests > MAX_FILE_LINES {
            too_large.push(format!(
                "src/{relative}: {before_tests} lines before its tests (at most {MAX_FILE_LINES})"
            ));
        }
        for (line, name, length) in functions(&text) {
            if length > MAX_FN_LINES {
                too_large.push(format!(
                    "src/{relative}:{line}: fn {name} is {length} lines (at most {MAX_FN_LINES})"
                ));
            }
        }
    }
    assert!(too_large.is_empty(), "{too_large:#?}");
}

#[test]
fn the_rules_read_what_they_should() {
    assert_eq!(
        use_tree("auth::{verify::{self, Failure}, Reason}"),
        [
            "auth::verify::self",
            "auth::verify::Failure",
            "auth::Reason"
        ]
    );
    assert_eq!(layer_key("config::schema::AuthMode"), "config::schema");
    assert_eq!(layer_key("config::ConfigError"), "config");
    assert_eq!(module_of("state/revocation/mod.rs"), "state::revocation");
    let code = "use crate::proxy::x;\nfn f() { let s = \"crate::admin\"; crate::answers::y(); }\n";
    let paths: Vec<String> = crate_paths(code).into_iter().map(|(_, p)| p).collect();
    assert_eq!(paths, ["proxy::x", "answers::y"]);
    assert_eq!(
        without_tests(
            "fn a() {}\n#[cfg(test)]\nmod tests {\n    use crate::proxy;\n}\nfn b() {}\n"
        ),
        "fn a() {}\n\nfn b() {}\n"
    );
    let functions = functions("fn a() {\n    let f: &dyn Fn() = &|| {};\n}\nfn b();\n");
    assert_eq!(functions, [(1, "a".into(), 3), (4, "b".into(), 1)]);
}
