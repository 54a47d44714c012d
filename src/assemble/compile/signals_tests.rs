//! `shared_signals` compiled against a made-up machine ([`Fixed`]).

use std::path::Path;

use super::compile;
use crate::assemble::sources::Fixed;
use crate::config::schema::GatewayConfig;
use crate::digest::sha256;
use crate::ssf::{DeliverySettings, SignalsSettings};

const SECRET: &str = "push-secret-0123456789";
const TOKEN: &str = "poll-token-0123456789";

fn signals(yaml: &str, revocation: bool) -> Result<Option<SignalsSettings>, String> {
    let text = format!("shared_signals: {yaml}\nroutes: []\n");
    let config: GatewayConfig = serde_saphyr::from_str(&text).map_err(|e| e.to_string())?;
    let sources = Fixed::default()
        .var("PUSH", SECRET)
        .file("/etc/j/poll", format!("{TOKEN}\n"));
    compile(
        config.shared_signals.as_ref(),
        revocation,
        Path::new("/etc/j"),
        &sources,
    )
}

const PUSH: &str = "{ transmitters: [{ name: idp, issuer: 'https://idp.example', audience: 'https://gw', delivery: push, push: { bearer_secret: { env: PUSH } } }] }";

#[test]
fn secrets_are_read_and_never_shown() {
    let settings = signals(PUSH, true).unwrap().unwrap();
    let DeliverySettings::Push(push) = &settings.transmitters[0].delivery else {
        panic!("push");
    };
    assert_eq!(push.digest, sha256(SECRET.as_bytes()));
    let poll = "{ transmitters: [{ name: idp, issuer: 'https://idp.example', audience: a, delivery: poll, poll: { auth: { file: poll }, max_events: 10 } }] }";
    let settings = signals(poll, true).unwrap().unwrap();
    let DeliverySettings::Poll(poll) = &settings.transmitters[0].delivery else {
        panic!("poll");
    };
    assert_eq!(poll.token, TOKEN);
    let shown = format!("{settings:?}");
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(shown.contains("file /etc/j/poll"), "{shown}");
}

#[test]
fn mistakes_are_refused_with_the_field() {
    let no_revocation = signals(PUSH, false).unwrap_err();
    assert!(
        no_revocation.contains("no revocation block"),
        "{no_revocation}"
    );
    let cases = [
        (
            PUSH.replace("https://idp", "http://idp"),
            "must be an https:// URL",
        ),
        (
            PUSH.replace("delivery: push", "delivery: poll"),
            "delivery: poll takes a poll block",
        ),
        (PUSH.replace("name: idp", "name: 'a b'"), "name \"a b\""),
        (
            PUSH.replace("env: PUSH", "env: UNSET"),
            "push.bearer_secret",
        ),
    ];
    for (yaml, expected) in cases {
        let error = signals(&yaml, true).unwrap_err();
        assert!(error.contains(expected), "{yaml}: {error}");
        assert!(error.contains("shared_signals.transmitters[0]"), "{error}");
    }
}
