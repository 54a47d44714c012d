//! DPoP proofs made by a client library jwtgate doesn't use (Python's
//! PyJWT and cryptography, tests/common/dpop_client.py), with fresh keys
//! of each algorithm: each verifies, with the thumbprint that library's
//! side computed; a leaked private key and a proof signed by another key
//! than its header names are refused with their reasons.

mod common;

use std::process::Command;

use common::venv_bin;
use jwtgate::auth::dpop::{
    DEFAULT_MAX_PROOF_BYTES, DpopFailure, IatWindow, PROOF_ALGORITHMS, ProofExpectations,
    verify_proof,
};
use serde_json::Value;

const IAT: i64 = 1_700_000_000;
const HTU: &str = "https://api.example.com/v1/orders";
const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.an-access-token.c2ln";

fn proofs() -> Vec<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/dpop_client.py");
    let output = Command::new(venv_bin("python"))
        .args([script, "POST", HTU, TOKEN, &IAT.to_string()])
        .output()
        .expect("the tools virtualenv's python (scripts/setup installs PyJWT and cryptography)");
    assert!(
        output.status.success(),
        "dpop_client.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn request() -> ProofExpectations<'static> {
    ProofExpectations {
        method: "POST",
        // As the gateway builds it; the client wrote the path as is.
        htu: "https://API.example.com:443/v1/orders",
        access_token: Some(TOKEN),
        algorithms: PROOF_ALGORITHMS.into_iter().collect(),
        iat_window: IatWindow {
            past_secs: 60,
            future_secs: 5,
        },
        nonces: None,
        max_bytes: DEFAULT_MAX_PROOF_BYTES,
    }
}

#[test]
fn proofs_from_another_library_verify_and_attacks_are_refused() {
    let proofs = proofs();
    let case = |name: &str| {
        proofs
            .iter()
            .find(|p| p["case"] == name)
            .unwrap_or_else(|| panic!("no {name} proof in {proofs:?}"))
    };
    for alg in ["ES256", "EdDSA", "PS256", "RS256"] {
        let made = case(alg);
        let verified = verify_proof(made["proof"].as_str().unwrap(), &request(), IAT + 1)
            .unwrap_or_else(|failure| panic!("{alg}: {failure}"));
        assert_eq!(verified.algorithm.as_str(), alg);
        assert_eq!(verified.jkt, made["jkt"].as_str().unwrap(), "{alg}");
        assert_eq!(verified.jti, made["jti"].as_str().unwrap(), "{alg}");
        assert_eq!(
            verify_proof(
                made["proof"].as_str().unwrap(),
                &ProofExpectations {
                    method: "PUT",
                    ..request()
                },
                IAT
            ),
            Err(DpopFailure::WrongMethod),
            "{alg}"
        );
    }
    let refused = |name: &str| {
        verify_proof(case(name)["proof"].as_str().unwrap(), &request(), IAT).unwrap_err()
    };
    assert_eq!(refused("private_key"), DpopFailure::PrivateKey);
    assert_eq!(refused("other_key"), DpopFailure::BadSignature);
}
