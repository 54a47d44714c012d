//! What the pipeline's unit tests share: the fixed time and issuer they
//! verify against, a config compiled from text with the fixture keys beside
//! it, and a token signed with the fixture RSA key.

use std::path::PathBuf;

use serde_json::Value;

use super::Snapshot;
use crate::jose::Algorithm;
use crate::mint::Signer;

pub const NOW: i64 = 1_800_000_000;
pub const MAIN: &str = "https://main.pipeline.test";

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys")
}

/// `yaml` compiled as a config file among the fixture keys, so its
/// `jwks_file: jwks.json` finds them.
pub fn compiled(yaml: &str) -> Snapshot {
    let path = fixtures().join("pipeline.yaml");
    let config = crate::config::parse(&path, yaml, &|_| None).expect("the config parses");
    crate::assemble::compile(&path, config).expect("the config compiles")
}

/// `claims` signed RS256 with the fixture key `rsa-1`.
pub fn rs256(claims: &Value) -> String {
    Signer::from_file(&fixtures().join("rsa.pem"), Algorithm::RS256)
        .expect("a fixture key")
        .sign(
            claims.as_object().expect("an object"),
            Some("rsa-1"),
            Some("JWT"),
        )
        .expect("signing works")
}
