//! What a resource server needs of the test IdP's introspection endpoint
//! beside client secrets: a key pair for `private_key_jwt` (made with
//! openssl at test time), the RFC 7523 client assertion it signs, RFC 9701
//! JWT responses, and how many introspection calls arrived.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::{ClientAuth, Idp};

/// The IdP's client that authenticates with `private_key_jwt`, by the key
/// in [`super::IdpConfig::introspector_key`].
pub const INTROSPECTOR_JWT: &str = "introspector-jwt";
/// RFC 9701's media type: ask for it and get the response as a JWS.
pub const INTROSPECTION_JWT: &str = "application/token-introspection+jwt";
/// Where oidc-provider answers introspection, relative to the issuer.
pub const INTROSPECTION_PATH: &str = "/token/introspection";

/// The key types a `private_key_jwt` client key may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    pub const ALL: [KeyKind; 4] = [Self::Rsa, Self::P256, Self::P384, Self::Ed25519];

    /// `openssl genpkey` arguments for a key of this kind.
    fn genpkey(self) -> &'static [&'static str] {
        match self {
            Self::Rsa => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            Self::P256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            Self::P384 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            Self::Ed25519 => &["-algorithm", "ED25519"],
        }
    }

    /// The algorithm a client assertion signed by this key uses.
    pub fn algorithm(self) -> Algorithm {
        match self {
            Self::Rsa => Algorithm::RS256,
            Self::P256 => Algorithm::ES256,
            Self::P384 => Algorithm::ES384,
            Self::Ed25519 => Algorithm::EdDSA,
        }
    }
}

/// A client key pair as PEM files: the private key PKCS#8 (jwtgate's
/// `private_key_file`), the public key SPKI (the IdP's
/// `IDP_INTROSPECTOR_PUBLIC_KEY`). Removed with its directory when dropped.
#[derive(Debug, Clone)]
pub struct ClientKey {
    pub kind: KeyKind,
    pub private_pem: PathBuf,
    pub public_pem: PathBuf,
    /// The kid the IdP registers the key under (and an assertion's header
    /// must then name): none, or jwtgate's `private_key_kid`.
    pub kid: Option<String>,
    _dir: std::sync::Arc<tempfile::TempDir>,
}

impl ClientKey {
    /// A new key pair made by openssl, which is required: without it the
    /// test fails, saying so.
    pub fn generate(kind: KeyKind, kid: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir for a client key");
        let private_pem = dir.path().join("client-key.pem");
        let public_pem = dir.path().join("client-key.pub.pem");
        let mut genpkey = vec!["genpkey"];
        genpkey.extend(kind.genpkey());
        genpkey.extend(["-out", path_str(&private_pem)]);
        openssl(&genpkey);
        openssl(&[
            "pkey",
            "-in",
            path_str(&private_pem),
            "-pubout",
            "-out",
            path_str(&public_pem),
        ]);
        let text = std::fs::read_to_string(&private_pem).expect("read the client key");
        assert!(
            text.starts_with("-----BEGIN PRIVATE KEY-----"),
            "openssl genpkey wrote no PKCS#8 key: {}",
            text.lines().next().unwrap_or_default()
        );
        Self {
            kind,
            private_pem,
            public_pem,
            kid: kid.map(str::to_string),
            _dir: std::sync::Arc::new(dir),
        }
    }

    /// The same key pair, named `kid` in the assertions it signs.
    pub fn with_kid(&self, kid: Option<&str>) -> Self {
        Self {
            kid: kid.map(str::to_string),
            ..self.clone()
        }
    }

    /// An RFC 7523 client assertion of `client_id` for `aud`, signed by
    /// this key (header `kid` as the IdP registered it), valid a minute,
    /// with a fresh `jti` (oidc-provider refuses a replayed one).
    pub fn assertion(&self, client_id: &str, aud: Value) -> String {
        let pem = std::fs::read(&self.private_pem).expect("read the client key");
        let key = match self.kind {
            KeyKind::Rsa => EncodingKey::from_rsa_pem(&pem),
            KeyKind::P256 | KeyKind::P384 => EncodingKey::from_ec_pem(&pem),
            KeyKind::Ed25519 => EncodingKey::from_ed_pem(&pem),
        }
        .unwrap_or_else(|e| panic!("{:?} client key: {e}", self.kind));
        let mut header = Header::new(self.kind.algorithm());
        header.kid = self.kid.clone();
        let now = unix_now();
        let claims = json!({
            "iss": client_id,
            "sub": client_id,
            "aud": aud,
            "jti": random_id(),
            "iat": now,
            "exp": now + 60,
        });
        jsonwebtoken::encode(&header, &claims, &key).expect("sign the client assertion")
    }
}

/// An RFC 9701 introspection response: the JWS and its parts, decoded
/// (not verified: [`SignedIntrospection::verify`] does that).
#[derive(Debug, Clone)]
pub struct SignedIntrospection {
    pub jws: String,
    pub header: Value,
    pub claims: Value,
}

impl SignedIntrospection {
    fn parse(jws: &str) -> Self {
        let part = |index: usize| -> Value {
            let segment = jws
                .split('.')
                .nth(index)
                .unwrap_or_else(|| panic!("not a compact JWS: {jws}"));
            let bytes = URL_SAFE_NO_PAD
                .decode(segment)
                .unwrap_or_else(|e| panic!("segment {index} is not base64url ({e}): {jws}"));
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("segment {index} is not JSON ({e}): {jws}"))
        };
        assert_eq!(jws.split('.').count(), 3, "a compact JWS: {jws}");
        Self {
            jws: jws.to_string(),
            header: part(0),
            claims: part(1),
        }
    }

    /// Whether the signature verifies with the key of the IdP's JWKS its
    /// header names (no claim checks: the caller asserts on the claims).
    pub async fn verify(&self, idp: &Idp) -> bool {
        let jwks: jsonwebtoken::jwk::JwkSet = idp
            .client
            .get(idp.endpoint("/jwks"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("GET the IdP's JWKS")
            .json()
            .await
            .expect("the IdP's JWKS");
        let kid = self.header["kid"].as_str().expect("a kid in the header");
        let jwk = jwks
            .find(kid)
            .unwrap_or_else(|| panic!("no key {kid} in the IdP's JWKS"));
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("a usable JWK");
        let alg: Algorithm = serde_json::from_value(self.header["alg"].clone()).expect("alg");
        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        jsonwebtoken::decode::<Value>(&self.jws, &key, &validation).is_ok()
    }
}

impl Idp {
    /// Introspection calls received since start or the last
    /// [`Idp::reset_stats`], answered or refused.
    pub async fn introspections(&self) -> u64 {
        self.requests_to(INTROSPECTION_PATH).await
    }

    /// Introspection calls whose client authenticated by `method`
    /// (`client_secret_basic`, `client_secret_post`, `private_key_jwt` or
    /// `none`), refused ones included.
    pub async fn introspections_by(&self, method: &str) -> u64 {
        let body = self.stats_body().await;
        body["introspection_auth"][method].as_u64().unwrap_or(0)
    }

    /// Introspection of `token` by the client `(id, secret, how)`, asking
    /// for a JWT response: the content type and the response.
    pub async fn introspect_signed(
        &self,
        token: &str,
        client: (&str, &str, ClientAuth),
    ) -> (String, SignedIntrospection) {
        let url = self.introspection_url();
        let accept = [("accept".to_string(), INTROSPECTION_JWT.to_string())];
        let response = self
            .send_form(&url, &[("token", token)], client, &accept)
            .await;
        assert_eq!(response.status(), 200, "signed introspection");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = response.text().await.expect("introspection body");
        (content_type, SignedIntrospection::parse(body.trim()))
    }
}

fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}); scripts/test installs it (Debian package openssl)")
        });
    assert!(
        output.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn path_str(path: &std::path::Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// 128 random bits, base64url.
fn random_id() -> String {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("random bytes");
    URL_SAFE_NO_PAD.encode(bytes)
}
