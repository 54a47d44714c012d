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
    #[error(
        "{path} holds {} key, which does not sign with {algorithm}: use --alg {} (or leave --alg out to pick it from the key)",
        family_words(*family),
        default_algorithm(*family)
    )]
    WrongAlgorithm {
        path: String,
        family: KeyFamily,
        algorithm: Algorithm,
    },
    #[error(
        "{path} is not a PEM private key, so the algorithm can't be read from it: give --alg (HS256, HS384 or HS512 for a secret file)"
    )]
    NoAlgorithm { path: String },
    #[error("signing failed: {0}")]
    Sign(String),
}

/// The kind of private key in a PEM file: `None` when it is no PEM private
/// key jwtgate can sign with (an HMAC secret file, say).
pub fn key_family(bytes: &[u8]) -> Option<KeyFamily> {
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
        Ed25519KeyPair, RsaKeyPair,
    };
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    let der = PrivateKeyDer::from_pem_slice(bytes).ok()?;
    let der = der.secret_der();
    let ec = |alg| EcdsaKeyPair::from_private_key_der(alg, der).is_ok();
    if ec(&ECDSA_P256_SHA256_FIXED_SIGNING) {
        Some(KeyFamily::EcP256)
    } else if ec(&ECDSA_P384_SHA384_FIXED_SIGNING) {
        Some(KeyFamily::EcP384)
    } else if Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).is_ok() {
        Some(KeyFamily::Ed25519)
    } else if RsaKeyPair::from_pkcs8(der).is_ok() || RsaKeyPair::from_der(der).is_ok() {
        Some(KeyFamily::Rsa)
    } else {
        None
    }
}

/// The algorithm `token mint` signs with for a key of `family`.
pub fn default_algorithm(family: KeyFamily) -> Algorithm {
    match family {
        KeyFamily::Hmac => Algorithm::HS256,
        KeyFamily::Rsa => Algorithm::RS256,
        KeyFamily::EcP256 => Algorithm::ES256,
        KeyFamily::EcP384 => Algorithm::ES384,
        KeyFamily::Ed25519 => Algorithm::EdDSA,
    }
}

fn family_words(family: KeyFamily) -> &'static str {
    match family {
        KeyFamily::Hmac => "an HMAC secret",
        KeyFamily::Rsa => "an RSA",
        KeyFamily::EcP256 => "an EC P-256",
        KeyFamily::EcP384 => "an EC P-384",
        KeyFamily::Ed25519 => "an Ed25519",
    }
}

impl Signer {
    /// Reads a PEM private key (RSA, EC P-256/P-384, Ed25519), or for HS*
    /// a file whose bytes (less trailing line endings) are the secret. An
    /// HMAC secret must be as long as the gateway requires, and not a PEM
    /// key: a private key used as a shared secret is a mistake (or the
    /// RS256→HS256 confusion attack), never what a user meant.
    pub fn from_file(path: &Path, algorithm: Algorithm) -> Result<Self, MintError> {
        Self::from_key_file(path, Some(algorithm))
    }

    /// [`Signer::from_file`], with `algorithm` `None` meaning the one the
    /// key's kind signs with (ES256 or ES384 by curve, EdDSA, RS256). A PEM
    /// key of another kind than `algorithm` signs with is refused, naming
    /// both.
    pub fn from_key_file(path: &Path, algorithm: Option<Algorithm>) -> Result<Self, MintError> {
        let bytes = std::fs::read(path).map_err(|source| MintError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let family = key_family(&bytes);
        let algorithm = match (algorithm, family) {
            (None, Some(family)) => default_algorithm(family),
            (None, None) => {
                return Err(MintError::NoAlgorithm {
                    path: path.display().to_string(),
                });
            }
            (Some(algorithm), Some(family))
                if algorithm.family() != family && algorithm.family() != KeyFamily::Hmac =>
            {
                return Err(MintError::WrongAlgorithm {
                    path: path.display().to_string(),
                    family,
                    algorithm,
                });
            }
            (Some(algorithm), _) => algorithm,
        };
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

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The public half of the key as a JWK (`kty`, curve or modulus,
    /// `alg`), with `kid` and `use: sig`: what a verifier needs.
    pub fn public_jwk(&self, kid: &str) -> Result<Value, MintError> {
        let jwk =
            jsonwebtoken::jwk::Jwk::from_encoding_key(&self.key, to_jsonwebtoken(self.algorithm))
                .map_err(|e| MintError::Sign(e.to_string()))?;
        let mut jwk = serde_json::to_value(jwk).map_err(|e| MintError::Sign(e.to_string()))?;
        if let Some(members) = jwk.as_object_mut() {
            members.insert("kid".into(), Value::from(kid));
            members.insert("use".into(), Value::from("sig"));
        }
        Ok(jwk)
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
