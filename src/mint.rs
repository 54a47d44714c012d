//! Signing tokens: for `jwtgate token mint` (development, tests, load tests).
//! jwtgate itself never signs anything on the request path.

use std::path::Path;

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Map, Value};

use crate::jose::{Algorithm, KeyFamily};
use crate::keys::MIN_HMAC_SECRET_BYTES;

/// A private key (or HMAC secret) and the algorithm to sign with.
pub struct Signer {
    algorithm: Algorithm,
    key: EncodingKey,
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("cannot read key file {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a usable {family} private key in PEM form: {detail}")]
    Key {
        path: String,
        family: &'static str,
        detail: String,
    },
    #[error(
        "{path} is a PEM key, but {algorithm} signs with a shared secret: give --key a secret file, or an --alg that fits the key (RS256, ES256, EdDSA, …)"
    )]
    PemForHmac { path: String, algorithm: Algorithm },
    #[error(
        "the HMAC secret in {path} is {length} bytes; at least {MIN_HMAC_SECRET_BYTES} are required (the gateway refuses shorter secrets)"
    )]
    ShortSecret { path: String, length: usize },
    #[error("signing failed: {0}")]
    Sign(String),
}

impl Signer {
    /// Reads a PEM private key (RSA, EC P-256/P-384, Ed25519), or for HS*
    /// a file whose bytes (less trailing line endings) are the secret. An
    /// HMAC secret must be as long as the gateway requires, and not a PEM
    /// key: a private key used as a shared secret is a mistake (or the
    /// RS256→HS256 confusion attack), never what a user meant.
    pub fn from_file(path: &Path, algorithm: Algorithm) -> Result<Self, MintError> {
        let bytes = std::fs::read(path).map_err(|source| MintError::Read {
            path: path.display().to_string(),
            source,
        })?;
        if algorithm.family() == KeyFamily::Hmac {
            let secret = crate::keys::secret_file_bytes(&bytes);
            if secret.trim_ascii_start().starts_with(b"-----BEGIN ") {
                return Err(MintError::PemForHmac {
                    path: path.display().to_string(),
                    algorithm,
                });
            }
            if secret.len() < MIN_HMAC_SECRET_BYTES {
                return Err(MintError::ShortSecret {
                    path: path.display().to_string(),
                    length: secret.len(),
                });
            }
        }
        Self::from_bytes(&bytes, algorithm).map_err(|(family, detail)| MintError::Key {
            path: path.display().to_string(),
            family,
            detail,
        })
    }

    /// No checks beyond parsing: tests build hostile tokens with this (a
    /// public key as an HMAC secret, say).
    pub fn from_bytes(bytes: &[u8], algorithm: Algorithm) -> Result<Self, (&'static str, String)> {
        let (family, key) = match algorithm.family() {
            KeyFamily::Hmac => {
                let secret = crate::keys::secret_file_bytes(bytes);
                ("HMAC", Ok(EncodingKey::from_secret(secret)))
            }
            KeyFamily::Rsa => ("RSA", EncodingKey::from_rsa_pem(bytes)),
            KeyFamily::EcP256 | KeyFamily::EcP384 => ("EC", EncodingKey::from_ec_pem(bytes)),
            KeyFamily::Ed25519 => ("Ed25519", EncodingKey::from_ed_pem(bytes)),
        };
        let key = key.map_err(|e| (family, e.to_string()))?;
        Ok(Self { algorithm, key })
    }

    /// Signs `claims` into a compact JWS with `kid` and `typ` in the header.
    pub fn sign(
        &self,
        claims: &Map<String, Value>,
        kid: Option<&str>,
        typ: Option<&str>,
    ) -> Result<String, MintError> {
        let mut header = Header::new(to_jsonwebtoken(self.algorithm));
        header.kid = kid.map(str::to_owned);
        header.typ = typ.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| MintError::Sign(e.to_string()))
    }
}

fn to_jsonwebtoken(alg: Algorithm) -> jsonwebtoken::Algorithm {
    use jsonwebtoken::Algorithm as J;
    match alg {
        Algorithm::HS256 => J::HS256,
        Algorithm::HS384 => J::HS384,
        Algorithm::HS512 => J::HS512,
        Algorithm::RS256 => J::RS256,
        Algorithm::RS384 => J::RS384,
        Algorithm::RS512 => J::RS512,
        Algorithm::PS256 => J::PS256,
        Algorithm::PS384 => J::PS384,
        Algorithm::PS512 => J::PS512,
        Algorithm::ES256 => J::ES256,
        Algorithm::ES384 => J::ES384,
        Algorithm::EdDSA => J::EdDSA,
    }
}
