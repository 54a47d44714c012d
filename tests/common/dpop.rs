//! DPoP (RFC 9449) client keys and proofs for the tests, made by
//! `tests/idp/dpop.mjs` with npm `jose`: a library jwtgate does not use, so
//! the gateway's proof checks and RFC 7638 thumbprints are held against an
//! independent implementation. Included through `idp.rs` (it needs Node.js
//! and the test IdP's packages, and fails loudly without them).

#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use super::{SETUP_HINT, idp_dir, require_node};

/// The proof algorithms a gateway is asked to accept (RFC 9449 §4.2 leaves
/// the list to the deployment; these are the allow-list).
pub const ALGS: [&str; 4] = ["ES256", "EdDSA", "PS256", "RS256"];

/// A client's DPoP key pair.
#[derive(Debug, Clone)]
pub struct DpopKey {
    pub alg: String,
    /// With `alg`, as `dpop.mjs proof` takes it.
    pub private_jwk: Value,
    /// Only the public members: what a proof's header `jwk` carries.
    pub public_jwk: Value,
    /// RFC 7638 SHA-256 thumbprint of `public_jwk`, base64url: what a bound
    /// token's `cnf.jkt` must be.
    pub jkt: String,
}

/// One deliberately bad proof, each a single thing a verifier must refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// The header `jwk` carries the private members too (signature valid).
    PrivateJwk,
    /// `alg: none` and an empty signature.
    AlgNone,
    /// HS256, keyed with the public key's thumbprint, header `jwk` unchanged.
    Hs256,
    /// Signed by another key than the header's `jwk`.
    OtherKey,
    /// `typ: JWT` instead of `dpop+jwt`.
    WrongTyp,
    /// No `ath`, although the proof goes with an access token.
    NoAth,
}

impl Tamper {
    pub const ALL: [Tamper; 6] = [
        Tamper::PrivateJwk,
        Tamper::AlgNone,
        Tamper::Hs256,
        Tamper::OtherKey,
        Tamper::WrongTyp,
        Tamper::NoAth,
    ];

    fn name(self) -> &'static str {
        match self {
            Tamper::PrivateJwk => "private_jwk",
            Tamper::AlgNone => "alg_none",
            Tamper::Hs256 => "hs256",
            Tamper::OtherKey => "other_key",
            Tamper::WrongTyp => "wrong_typ",
            Tamper::NoAth => "no_ath",
        }
    }
}

/// What a proof says: `htm`, `htu` and, with [`Proof::token`], `ath`. The
/// other setters make the proofs of attack tests.
#[derive(Debug, Clone, Default)]
pub struct Proof {
    htm: String,
    htu: String,
    token: Option<String>,
    nonce: Option<String>,
    iat_offset: i64,
    jti: Option<String>,
    alg: Option<String>,
    claims: Option<Value>,
    header: Option<Value>,
    tamper: Option<Tamper>,
}

impl Proof {
    /// A proof for `htm` (the method) and `htu` (the URI, without query or
    /// fragment), `iat` now and a random `jti`.
    pub fn new(htm: &str, htu: &str) -> Self {
        Self {
            htm: htm.into(),
            htu: htu.into(),
            ..Self::default()
        }
    }

    /// `ath`: the proof goes with this access token.
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn nonce(mut self, nonce: &str) -> Self {
        self.nonce = Some(nonce.into());
        self
    }

    /// `iat` this many seconds from now (negative: in the past).
    pub fn iat_offset(mut self, seconds: i64) -> Self {
        self.iat_offset = seconds;
        self
    }

    pub fn jti(mut self, jti: &str) -> Self {
        self.jti = Some(jti.into());
        self
    }

    /// The header's `alg`, whatever the key's (the signature stays the
    /// key's own algorithm's).
    pub fn alg(mut self, alg: &str) -> Self {
        self.alg = Some(alg.into());
        self
    }

    /// Merged into the claims last; `null` removes a claim.
    pub fn claims(mut self, claims: Value) -> Self {
        self.claims = Some(claims);
        self
    }

    /// Merged into the protected header last; `null` removes a member.
    pub fn header(mut self, header: Value) -> Self {
        self.header = Some(header);
        self
    }

    pub fn tamper(mut self, tamper: Tamper) -> Self {
        self.tamper = Some(tamper);
        self
    }

    fn spec(&self, key: &DpopKey) -> Value {
        let mut spec = json!({
            "key": key.private_jwk,
            "htm": self.htm,
            "htu": self.htu,
            "iat_offset": self.iat_offset,
        });
        let optional = [
            ("token", self.token.clone().map(Value::from)),
            ("nonce", self.nonce.clone().map(Value::from)),
            ("jti", self.jti.clone().map(Value::from)),
            ("alg", self.alg.clone().map(Value::from)),
            ("claims", self.claims.clone()),
            ("header", self.header.clone()),
            ("tamper", self.tamper.map(|t| Value::from(t.name()))),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                spec[name] = value;
            }
        }
        spec
    }
}

impl DpopKey {
    /// A new key pair for `alg` (ES256, EdDSA (Ed25519), PS256 or RS256;
    /// RSA keys are 2048 bits).
    pub fn generate(alg: &str) -> Self {
        let out = run(&["keygen", alg], None).unwrap_or_else(|e| panic!("keygen {alg}: {e}"));
        let text = |name: &str| {
            out[name]
                .as_str()
                .unwrap_or_else(|| panic!("keygen {alg}: no {name:?} in {out}"))
                .to_string()
        };
        Self {
            alg: text("alg"),
            jkt: text("jkt"),
            private_jwk: out["private_jwk"].clone(),
            public_jwk: out["public_jwk"].clone(),
        }
    }

    /// One proof signed by this key (compact JWS).
    pub fn proof(&self, proof: &Proof) -> String {
        self.proofs(std::slice::from_ref(proof)).remove(0)
    }

    /// Several proofs in one run of `node`.
    pub fn proofs(&self, proofs: &[Proof]) -> Vec<String> {
        let specs = Value::from(proofs.iter().map(|p| p.spec(self)).collect::<Vec<_>>());
        let out = run(&["proof"], Some(&specs.to_string()))
            .unwrap_or_else(|e| panic!("proof with a {} key: {e}", self.alg));
        out.as_array()
            .unwrap_or_else(|| panic!("proofs are not an array: {out}"))
            .iter()
            .map(|proof| proof.as_str().expect("a proof string").to_string())
            .collect()
    }
}

/// A proof as jose's `jwtVerify` with the embedded `jwk` sees it.
#[derive(Debug, Clone)]
pub struct Verified {
    pub header: Value,
    pub claims: Value,
    /// RFC 7638 thumbprint of the header `jwk`.
    pub jkt: String,
}

/// Verifies `proof` with jose (`typ: dpop+jwt`, [`ALGS`], the embedded
/// public `jwk`); `Err` is jose's reason. Checks the signature and form
/// only, not `htm`/`htu`/`iat`/`ath`.
pub fn verify(proof: &str) -> Result<Verified, String> {
    let out = run(&["verify", proof], None)?;
    Ok(Verified {
        header: out["header"].clone(),
        claims: out["payload"].clone(),
        jkt: out["jkt"].as_str().expect("jkt").to_string(),
    })
}

/// RFC 7638 SHA-256 thumbprint of `jwk` by jose.
pub fn thumbprint(jwk: &Value) -> String {
    let out = run(&["thumbprint", &jwk.to_string()], None).expect("thumbprint");
    out["jkt"].as_str().expect("jkt").to_string()
}

/// `ath` for `token` (base64url SHA-256) by Node.js.
pub fn ath(token: &str) -> String {
    let out = run(&["ath", token], None).expect("ath");
    out["ath"].as_str().expect("ath").to_string()
}

/// `node tests/idp/dpop.mjs <args>` with `stdin`; its JSON output, or what
/// it said on stderr when it failed.
fn run(args: &[&str], stdin: Option<&str>) -> Result<Value, String> {
    require_node();
    let mut child = Command::new("node")
        .arg(idp_dir().join("dpop.mjs"))
        .args(args)
        .current_dir(idp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node dpop.mjs: {e}\n{SETUP_HINT}"));
    let mut input = child.stdin.take().expect("piped stdin");
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .expect("write to dpop.mjs");
    drop(input);
    let output = child.wait_with_output().expect("wait for dpop.mjs");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "dpop.mjs printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// RFC 9449's examples, as test vectors: one ES256 key, its proof for the
/// token request (Figure 4) and for a resource request with an access token
/// (Figure 13), the key's thumbprint (§6.1) and the token's `ath` (§7.1).
/// Their `iat`s are in 2019: a verifier takes them with its clock set to
/// [`rfc9449::TOKEN_REQUEST_IAT`] or [`rfc9449::RESOURCE_IAT`].
pub mod rfc9449 {
    pub const TOKEN_REQUEST_PROOF: &str = concat!(
        "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0",
        "VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10",
        "NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoi",
        "UE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-",
        "GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg",
    );
    pub const TOKEN_REQUEST_HTM: &str = "POST";
    pub const TOKEN_REQUEST_HTU: &str = "https://server.example.com/token";
    pub const TOKEN_REQUEST_IAT: i64 = 1_562_262_616;

    pub const RESOURCE_PROOF: &str = concat!(
        "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0",
        "VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10",
        "NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoi",
        "R0VUIiwiaHR1IjoiaHR0cHM6Ly9yZXNvdXJjZS5leGFtcGxlLm9yZy9wcm90ZWN0ZWRyZXNvdXJjZSIsImlhdCI6",
        "MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8ycjJaM0RaNTNFc05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9.2oW9",
        "RP35yRqzhrtNP86L-Ey71EOptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA",
    );
    pub const RESOURCE_HTM: &str = "GET";
    pub const RESOURCE_HTU: &str = "https://resource.example.org/protectedresource";
    pub const RESOURCE_IAT: i64 = 1_562_262_618;
    /// The access token the resource request carries (`Authorization: DPoP …`).
    pub const ACCESS_TOKEN: &str = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";
    pub const ATH: &str = "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo";

    /// The RFC 7638 thumbprint of both proofs' key: a token bound to it has
    /// this `cnf.jkt`.
    pub const JKT: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";
}
