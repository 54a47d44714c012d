//! Verification keys: parsed once into ready-to-verify form (so a request
//! never re-parses key material) and held per issuer behind an atomic swap,
//! the seam through which later key sources (remote JWKS) replace them
//! without locks on the request path.

pub mod disk;
pub mod fetch;
pub mod jwks;
pub mod remote;
mod store;

pub use store::{KeySource, KeyStore};

use aws_lc_rs::{hmac, signature};

use crate::jose::{Algorithm, AlgorithmSet, KeyFamily};

/// HMAC secrets shorter than the hash output weaken HS256 below its design
/// strength (RFC 7518 §3.2 requires at least the hash size: 256 bits).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// RSA moduli below 2048 bits are refused (NIST SP 800-131A, RFC 8725 §3.5).
pub const MIN_RSA_MODULUS_BITS: usize = 2048;

/// The secret in an HMAC secret file: the file's bytes less trailing line
/// endings (editors add them; no one means them as key material). Signing
/// and verifying both read files through this, so they always agree.
pub fn secret_file_bytes(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| *b != b'\n' && *b != b'\r')
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

/// One verification key, with a ready verifier for each algorithm it may be
/// used with. The algorithms are fixed at load time: the key's own `alg` if
/// it names one, otherwise every algorithm of its family that the issuer
/// allows. A token's `alg` can only select among these, never widen them.
pub struct VerifyingKey {
    pub kid: Option<String>,
    pub family: KeyFamily,
    verifiers: Vec<(Algorithm, Verifier)>,
}

enum Verifier {
    Public(signature::ParsedPublicKey),
    // aws-lc's HMAC key holds precomputed pad states (over 1 KiB); boxed so
    // a set of public keys doesn't pay for it.
    Hmac(Box<hmac::Key>),
}

impl std::fmt::Debug for VerifyingKey {
    // Never print key material, not even public keys: logs stay clean by construction.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .field("algorithms", &self.algorithms().iter().collect::<Vec<_>>())
            .finish()
    }
}

impl VerifyingKey {
    pub fn algorithms(&self) -> AlgorithmSet {
        self.verifiers.iter().map(|(alg, _)| *alg).collect()
    }

    pub fn supports(&self, alg: Algorithm) -> bool {
        self.verifiers.iter().any(|(a, _)| *a == alg)
    }

    /// Whether a token naming `kid` (or none) may be checked with this key.
    /// HMAC keys carry no `kid` and answer to any.
    fn answers_to(&self, kid: Option<&str>) -> bool {
        match (kid, &self.kid) {
            (Some(wanted), Some(have)) => wanted == have,
            (Some(_), None) => self.family == KeyFamily::Hmac,
            (None, _) => true,
        }
    }

    /// Verifies `signature` over `message` with `alg`; false when the key
    /// does not support `alg` at all.
    pub fn verify(&self, alg: Algorithm, message: &[u8], sig: &[u8]) -> bool {
        let Some((_, verifier)) = self.verifiers.iter().find(|(a, _)| *a == alg) else {
            return false;
        };
        match verifier {
            Verifier::Public(key) => key.verify_sig(message, sig).is_ok(),
            // Constant-time comparison, done by aws-lc.
            Verifier::Hmac(key) => hmac::verify(key, message, sig).is_ok(),
        }
    }

    /// An HMAC key for each HS algorithm in `allowed`.
    pub fn hmac(secret: &[u8], allowed: AlgorithmSet) -> Result<Self, KeyError> {
        if secret.len() < MIN_HMAC_SECRET_BYTES {
            return Err(KeyError(format!(
                "HMAC secret is {} bytes; at least {MIN_HMAC_SECRET_BYTES} bytes (256 bits) are required",
                secret.len()
            )));
        }
        let verifiers: Vec<_> = allowed
            .iter()
            .filter_map(|alg| {
                let hash = match alg {
                    Algorithm::HS256 => hmac::HMAC_SHA256,
                    Algorithm::HS384 => hmac::HMAC_SHA384,
                    Algorithm::HS512 => hmac::HMAC_SHA512,
                    _ => return None,
                };
                Some((alg, Verifier::Hmac(Box::new(hmac::Key::new(hash, secret)))))
            })
            .collect();
        if verifiers.is_empty() {
            return Err(KeyError(
                "an HMAC secret needs at least one of HS256, HS384, HS512 in algorithms".into(),
            ));
        }
        Ok(Self {
            kid: None,
            family: KeyFamily::Hmac,
            verifiers,
        })
    }

    /// A public key for each algorithm in `algorithms` (all of one family).
    fn public(
        kid: Option<String>,
        family: KeyFamily,
        algorithms: AlgorithmSet,
        parse: impl Fn(Algorithm) -> Result<signature::ParsedPublicKey, KeyError>,
    ) -> Result<Self, KeyError> {
        let verifiers = algorithms
            .iter()
            .map(|alg| Ok((alg, Verifier::Public(parse(alg)?))))
            .collect::<Result<Vec<_>, KeyError>>()?;
        Ok(Self {
            kid,
            family,
            verifiers,
        })
    }
}

/// Why key material was refused. Messages name the problem, never the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

#[cfg(test)]
mod tests {
    use super::secret_file_bytes;

    #[test]
    fn secret_files_lose_only_trailing_line_endings() {
        assert_eq!(secret_file_bytes(b"abc\r\n\n"), b"abc");
        assert_eq!(secret_file_bytes(b"a\nb\n"), b"a\nb");
        assert_eq!(secret_file_bytes(b" abc "), b" abc ");
        assert_eq!(secret_file_bytes(b"\n"), b"");
    }
}

/// The usable keys of one issuer.
#[derive(Debug, Default)]
pub struct KeySet {
    pub keys: Vec<VerifyingKey>,
}

/// The keys a token may be checked against, given its `kid` and `alg`.
pub enum KeyChoice<'a> {
    Candidates(Candidates<'a>),
    /// No key has this `kid`.
    UnknownKid,
    /// Keys exist for the `kid` but none may be used with this `alg`.
    AlgorithmMismatch,
}

/// The keys that fit a token's `kid` and `alg`, in file order; never
/// empty. A view rather than a list, so choosing costs no allocation.
#[derive(Clone, Copy)]
pub struct Candidates<'a> {
    keys: &'a [VerifyingKey],
    kid: Option<&'a str>,
    alg: Algorithm,
}

impl<'a> Candidates<'a> {
    pub fn iter(self) -> impl Iterator<Item = &'a VerifyingKey> {
        self.keys
            .iter()
            .filter(move |key| key.answers_to(self.kid) && key.supports(self.alg))
    }

    pub fn len(self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(self) -> bool {
        self.iter().next().is_none()
    }
}

impl KeySet {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Picks keys for a token. With a `kid`, only keys with that exact `kid`
    /// (in file order, so duplicate kids resolve deterministically); without
    /// one, every key that supports `alg`. HMAC keys carry no `kid` and match
    /// any token whose `alg` they support.
    pub fn select<'a>(&'a self, kid: Option<&'a str>, alg: Algorithm) -> KeyChoice<'a> {
        let mut named = self.keys.iter().filter(|key| key.answers_to(kid));
        let Some(first) = named.next() else {
            return KeyChoice::UnknownKid;
        };
        if first.supports(alg) || named.any(|key| key.supports(alg)) {
            KeyChoice::Candidates(Candidates {
                keys: &self.keys,
                kid,
                alg,
            })
        } else if kid.is_some() {
            KeyChoice::AlgorithmMismatch
        } else {
            KeyChoice::UnknownKid
        }
    }
}
