//! Property tests of the canonical request target: whatever path a client
//! sends, when the router places it on a public route, no lenient backend
//! reading of the path jwtgate forwards (percent-decoding once or twice, `\`
//! as `/`, dropping `;` parameters, resolving dot segments, merging slashes,
//! in any order) names a resource under the protected prefix. And the
//! canonical form is a fixed point: canonicalizing it again changes nothing.

use std::borrow::Cow;

use http::Method;
use jwtgate::pipeline::canonical::{
    Handling, PathRules, RequestTarget, TargetError, canonical_path,
};
use jwtgate::pipeline::router::{Lookup, Router};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Pieces attackers put together: the protected name in several spellings,
/// dots, slashes and parameters raw, encoded and double-encoded.
const PIECES: &[&str] = &[
    "admin",
    "ADMIN",
    "adm",
    "in",
    "%61dmin",
    "%2561dmin",
    "%61",
    "%2561",
    "public",
    "x",
    "a",
    "/",
    "/",
    "/",
    "//",
    ".",
    "..",
    "%2e",
    "%2E",
    ".%2e",
    "%2e%2e",
    "%252e",
    "%252e%252e",
    "%2f",
    "%2F",
    "%252f",
    "%252F",
    "\\",
    "%5c",
    "%5C",
    "%255c",
    ";",
    ";x=1",
    ";jsessionid=1",
    "%3b",
    "%3B",
    "%253b",
    "%25",
    "%2525",
    "%",
    "%2",
    "%zz",
    "%00",
    "%0a",
    "%7f",
    "%C3%A9",
    "%c3%28",
    "%FF",
    "?",
    "#",
    "~",
    "-",
    "_",
    "%7e",
    "%20",
    " ",
    "\u{e9}",
    "*",
    "@",
    ":",
    "+",
    "%41",
];

fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => proptest::sample::select(PIECES).prop_map(str::to_owned),
        1 => "[a-z%./;\\\\0-9A-F]{1,4}",
    ]
}

/// A request path: rooted, made of attack pieces.
fn attack_path() -> impl Strategy<Value = String> {
    proptest::collection::vec(piece(), 0..10).prop_map(|pieces| format!("/{}", pieces.concat()))
}

#[derive(Debug, Clone, Copy)]
enum Reading {
    PercentDecode,
    BackslashIsSlash,
    DropParameters,
    ResolveDotSegments,
    MergeSlashes,
}

fn reading() -> impl Strategy<Value = Vec<Reading>> {
    proptest::collection::vec(
        proptest::sample::select(vec![
            Reading::PercentDecode,
            Reading::BackslashIsSlash,
            Reading::DropParameters,
            Reading::ResolveDotSegments,
            Reading::MergeSlashes,
        ]),
        0..8,
    )
}

/// Decodes every well-formed `%XX` and leaves the rest, as lenient servers do.
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|&b| hex(b)),
                bytes.get(i + 2).and_then(|&b| hex(b)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn drop_parameters(path: &str) -> String {
    path.split('/')
        .map(|segment| segment.split(';').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("/")
}

/// RFC 3986 §5.2.4, keeping empty segments (merging is another reading).
fn resolve_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            other => out.push(other),
        }
    }
    format!("/{}", out.join("/"))
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

fn read(path: &str, reading: &[Reading]) -> String {
    let mut path = path.to_string();
    for step in reading {
        path = match step {
            Reading::PercentDecode => percent_decode(&path),
            Reading::BackslashIsSlash => path.replace('\\', "/"),
            Reading::DropParameters => drop_parameters(&path),
            Reading::ResolveDotSegments => resolve_dot_segments(&path),
            Reading::MergeSlashes => merge_slashes(&path),
        };
    }
    path
}

/// The readings every backend family is known for, checked on every case
/// besides the generated one.
fn common_readings() -> Vec<Vec<Reading>> {
    use Reading::*;
    vec![
        vec![PercentDecode, ResolveDotSegments, MergeSlashes],
        vec![PercentDecode, PercentDecode, ResolveDotSegments],
        vec![
            PercentDecode,
            BackslashIsSlash,
            ResolveDotSegments,
            MergeSlashes,
        ],
        vec![DropParameters, PercentDecode, ResolveDotSegments],
        vec![
            PercentDecode,
            DropParameters,
            ResolveDotSegments,
            MergeSlashes,
        ],
        vec![
            PercentDecode,
            PercentDecode,
            BackslashIsSlash,
            DropParameters,
            MergeSlashes,
            ResolveDotSegments,
        ],
    ]
}

fn protected(path: &str) -> bool {
    path == "/admin" || path.starts_with("/admin/")
}

fn router() -> Router<&'static str> {
    let mut router = Router::default();
    router.add(None, "/", None, "public");
    router.add(None, "/admin", None, "protected");
    router
}

/// The property itself, for one rule set.
fn public_stays_public(
    path: &str,
    generated: &[Reading],
    rules: &PathRules,
) -> Result<(), TestCaseError> {
    let target = match RequestTarget::new(None, path.as_bytes(), std::iter::empty(), rules) {
        Ok(target) => target,
        Err(_) => return Ok(()),
    };
    let router = router();
    if router.lookup(None, target.route_path(), &Method::GET) != Lookup::Route(&"public") {
        return Ok(());
    }
    let forwarded = match target.upstream_target() {
        Some(bytes) => String::from_utf8(bytes).expect("forwarded targets are ASCII"),
        None => path.to_string(),
    };
    let forwarded_path = forwarded.split('?').next().unwrap_or_default();
    for reading in common_readings().iter().chain([generated.to_vec()].iter()) {
        let read = read(forwarded_path, reading);
        prop_assert!(
            !protected(&read),
            "{:?} was routed as public, forwarded as {:?}, and read by {:?} as {:?}",
            path,
            forwarded,
            reading,
            read
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(4096))]

    #[test]
    fn no_public_path_reads_as_a_protected_one(path in attack_path(), reading in reading()) {
        public_stays_public(&path, &reading, &PathRules::default())?;
    }

    /// `semicolon: keep` routes on the path without parameters, so the
    /// property holds with it too.
    #[test]
    fn kept_parameters_keep_the_property(path in attack_path(), reading in reading()) {
        let rules = PathRules { semicolon: Handling::Keep, ..PathRules::default() };
        public_stays_public(&path, &reading, &rules)?;
    }

    #[test]
    fn canonical_paths_are_fixed_points(
        path in attack_path(),
        keep in proptest::collection::vec(any::<bool>(), 4),
    ) {
        let handling = |k: bool| if k { Handling::Keep } else { Handling::Reject };
        let rules = PathRules {
            encoded_slash: handling(keep[0]),
            backslash: handling(keep[1]),
            semicolon: handling(keep[2]),
            double_encoding: handling(keep[3]),
        };
        if let Ok(once) = canonical_path(path.as_bytes(), &rules) {
            prop_assert!(once.starts_with('/'));
            prop_assert!(!once.contains("//"), "{:?} -> {:?}", path, once);
            for segment in once.split('/') {
                prop_assert!(segment != "." && segment != "..", "{:?} -> {:?}", path, once);
            }
            prop_assert!(once.is_ascii());
            let twice = canonical_path(once.as_bytes(), &rules);
            prop_assert!(
                matches!(&twice, Ok(Cow::Borrowed(p)) if *p == once),
                "{:?} -> {:?} -> {:?}", path, once, twice
            );
        }
    }

    /// The decision doesn't depend on how a client happened to spell the
    /// unreserved characters: encoding any of them changes nothing.
    #[test]
    fn encoding_unreserved_characters_changes_nothing(
        path in "/[a-zA-Z0-9._~/-]{0,24}",
        mask in proptest::collection::vec(any::<bool>(), 24),
    ) {
        let rules = PathRules::default();
        let plain = canonical_path(path.as_bytes(), &rules).map(Cow::into_owned);
        let encoded: String = path
            .chars()
            .zip(mask.iter().chain(std::iter::repeat(&false)))
            .map(|(c, &encode)| if encode && c != '/' { format!("%{:02x}", c as u32) } else { c.to_string() })
            .collect();
        let spelled = canonical_path(encoded.as_bytes(), &rules).map(Cow::into_owned);
        prop_assert_eq!(plain, spelled, "{:?} vs {:?}", path, encoded);
    }
}

/// Each refusal has its own access-log label, so a log says which rule fired.
#[test]
fn refusals_have_distinct_labels() {
    use TargetError::*;
    let all = [
        EncodedSlash,
        Backslash,
        PathParameter,
        DoubleEncoding,
        ControlCharacter,
        InvalidUtf8,
        InvalidTarget,
        DuplicateHost,
        InvalidHost,
    ];
    let mut labels: Vec<&str> = all.iter().map(|e| e.reason()).collect();
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), all.len());
}
