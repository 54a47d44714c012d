//! A JWS that is not an access token but a document signed by an issuer
//! (a Status List Token, a JWT-secured introspection answer): its `typ`,
//! an algorithm on the issuer's allow-list and a signature by one of the
//! issuer's keys, before any of its claims is read.

use super::header::normalize_typ;
use super::token::{self, ParsedToken};
use crate::jose::AlgorithmSet;
use crate::keys::{KeyChoice, KeyStore};

/// Why a signed document was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedError {
    /// Not a compact JWS, or over the size cap.
    Malformed,
    /// Its `typ` is not the one its kind of document carries.
    WrongType,
    /// Its `alg` is not allowed, or no key of the issuer fits its `kid`.
    NoKey,
    BadSignature,
}

/// `text` parsed, its `typ` (compared without `application/`, any case)
/// equal to `typ`, and its signature checked against `keys`.
pub fn verify<'a>(
    text: &'a str,
    max_bytes: usize,
    typ: &str,
    algorithms: AlgorithmSet,
    keys: &KeyStore,
) -> Result<ParsedToken<'a>, SignedError> {
    let parsed = token::parse(text, max_bytes).map_err(|_| SignedError::Malformed)?;
    if parsed.header.typ().map(normalize_typ).as_deref() != Some(typ) {
        return Err(SignedError::WrongType);
    }
    let alg = parsed
        .header
        .algorithm()
        .filter(|alg| algorithms.contains(*alg))
        .ok_or(SignedError::NoKey)?;
    let keys = keys.current();
    let KeyChoice::Candidates(candidates) = keys.select(parsed.header.kid(), alg) else {
        return Err(SignedError::NoKey);
    };
    let signature = parsed.signature();
    if candidates
        .iter()
        .any(|key| key.verify(alg, parsed.signing_input, signature))
    {
        Ok(parsed)
    } else {
        Err(SignedError::BadSignature)
    }
}
