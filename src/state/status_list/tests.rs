use std::io::Write;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::*;
use crate::auth::RejectionKind;
use crate::keys::KeySet;

const NOW: i64 = 1_800_000_000;
const URI: &str = "https://idp.example/statuslists/1";

fn settings(mode: StatusListMode) -> StatusListSettings {
    StatusListSettings {
        mode,
        allowed_uris: vec![
            "https://idp.example/statuslists/".into(),
            "https://lists.example".into(),
        ],
        prefetch: Vec::new(),
        max_lists: 2,
        max_age: Duration::from_secs(3600),
        min_refresh: Duration::from_secs(60),
        max_refresh: Duration::from_secs(600),
        max_decompressed_bytes: 1024,
        fetch: FetchSettings {
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            max_bytes: 4096,
            allow_http: false,
        },
    }
}

fn lists(mode: StatusListMode) -> StatusLists {
    StatusLists::new(
        "idp".into(),
        "https://idp.example".into(),
        AlgorithmSet::default(),
        Arc::new(KeyStore::fixed(KeySet { keys: Vec::new() })),
        settings(mode),
    )
}

fn claims(json: &str) -> JsonObject {
    JsonObject::parse(json.as_bytes()).unwrap()
}

fn entry(idx: u64, uri: &str) -> JsonObject {
    claims(&format!(
        r#"{{"sub":"a","status":{{"status_list":{{"idx":{idx},"uri":"{uri}"}}}}}}"#
    ))
}

/// Installs a one-bit list of `statuses` at `uri`, fetched at `fetched_at`.
fn install(lists: &StatusLists, uri: &str, statuses: &[u8], fetched_at: i64) {
    let mut bytes = vec![0u8; statuses.len().div_ceil(8)];
    for (i, status) in statuses.iter().enumerate() {
        bytes[i / 8] |= status << (i % 8);
    }
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&bytes).unwrap();
    let lst = URL_SAFE_NO_PAD.encode(encoder.finish().unwrap());
    let list = CurrentList {
        bits: StatusBits::decode(1, &lst, 1024).unwrap(),
        fetched_at,
        exp: None,
        source: None,
    };
    assert!(lists.install(uri, list));
}

fn reason(result: Result<(), Rejection>) -> Option<Reason> {
    result.err().map(|r| r.reason)
}

#[test]
fn allowed_uris_match_by_prefix_at_a_path_boundary() {
    let settings = settings(StatusListMode::Required);
    assert!(settings.allows(URI));
    assert!(settings.allows("https://lists.example"));
    assert!(settings.allows("https://lists.example/x"));
    assert!(!settings.allows("https://lists.example.evil/x"));
    assert!(!settings.allows("https://idp.example/statuslists"));
    assert!(!settings.allows("https://idp.example/other/1"));
    assert!(!settings.allows("http://idp.example/statuslists/1"));
}

#[test]
fn entries_decide_the_token() {
    let lists = lists(StatusListMode::Required);
    install(&lists, URI, &[0, 1, 0, 0], NOW);
    assert_eq!(reason(lists.check(&entry(0, URI), NOW)), None);
    assert_eq!(
        reason(lists.check(&entry(1, URI), NOW)),
        Some(Reason::TokenInvalidated)
    );
    assert_eq!(
        reason(lists.check(&entry(99, URI), NOW)),
        Some(Reason::TokenStatusUnknown),
        "past the end of the list"
    );
    assert_eq!(reason(lists.check(&claims(r#"{"sub":"a"}"#), NOW)), None);
    let other_mechanism = claims(r#"{"status":{"other":{}}}"#);
    assert_eq!(reason(lists.check(&other_mechanism, NOW)), None);
    let malformed = claims(r#"{"status":{"status_list":{"idx":-1,"uri":"x"}}}"#);
    assert_eq!(
        reason(lists.check(&malformed, NOW)),
        Some(Reason::Malformed)
    );
}

#[test]
fn an_unlisted_uri_is_refused_and_never_registered() {
    let lists = lists(StatusListMode::Optional);
    let elsewhere = entry(0, "https://evil.example/list");
    assert_eq!(
        reason(lists.check(&elsewhere, NOW)),
        Some(Reason::StatusListNotAllowed)
    );
    assert!(lists.slots().is_empty(), "nothing to fetch");
}

#[test]
fn a_missing_or_stale_list_follows_the_mode() {
    let required = lists(StatusListMode::Required);
    let refused = required.check(&entry(0, URI), NOW).unwrap_err();
    assert_eq!(refused.reason, Reason::StatusListUnavailable);
    assert_eq!(refused.kind, RejectionKind::Unavailable);
    assert_eq!(refused.status(), 503);
    assert_eq!(required.slots().len(), 1, "registered for the refresher");

    let optional = lists(StatusListMode::Optional);
    assert_eq!(reason(optional.check(&entry(0, URI), NOW)), None);

    let stale = lists(StatusListMode::Required);
    install(&stale, URI, &[0], NOW - 3600);
    assert_eq!(reason(stale.check(&entry(0, URI), NOW)), None, "at max_age");
    assert_eq!(
        reason(stale.check(&entry(0, URI), NOW + 1)),
        Some(Reason::StatusListUnavailable),
        "past max_age"
    );
}

#[test]
fn the_number_of_lists_is_bounded() {
    let lists = lists(StatusListMode::Required);
    assert!(lists.register(URI));
    assert!(lists.register("https://lists.example/2"));
    assert!(!lists.register("https://lists.example/3"));
    assert_eq!(lists.slots().len(), 2);
}
