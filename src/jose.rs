//! JWS algorithms jwtgate verifies (RFC 7518 §3, RFC 8037 for EdDSA), and the
//! key family each one needs, so an algorithm can never be paired with key
//! material of another type (the RS256 → HS256 confusion attack).
//!
//! The bottom of the crate: `keys` and `auth` both build on these types, so
//! neither of them has to import the other to share them. The algorithm
//! names themselves are what the config lists ([`Algorithm`] is the
//! schema's); what verifying with each takes is decided here.

pub use crate::config::schema::{Algorithm, UnsupportedAlgorithm};

/// The kind of key an algorithm verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyFamily {
    Hmac,
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl Algorithm {
    pub fn family(self) -> KeyFamily {
        match self {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => KeyFamily::Hmac,
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => KeyFamily::Rsa,
            Algorithm::ES256 => KeyFamily::EcP256,
            Algorithm::ES384 => KeyFamily::EcP384,
            Algorithm::EdDSA => KeyFamily::Ed25519,
        }
    }

    /// A small bit set index, so an allow-list is one `u16`.
    pub(crate) fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of algorithms, as a bit set: checking membership on the request path
/// costs one AND.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlgorithmSet(u16);

impl AlgorithmSet {
    pub fn contains(self, alg: Algorithm) -> bool {
        self.0 & alg.bit() != 0
    }

    pub fn insert(&mut self, alg: Algorithm) {
        self.0 |= alg.bit();
    }

    pub fn iter(self) -> impl Iterator<Item = Algorithm> {
        Algorithm::ALL
            .into_iter()
            .filter(move |a| self.contains(*a))
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<Algorithm> for AlgorithmSet {
    fn from_iter<I: IntoIterator<Item = Algorithm>>(iter: I) -> Self {
        let mut set = AlgorithmSet::default();
        for alg in iter {
            set.insert(alg);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_none_is_not_an_algorithm() {
        let spelled: Vec<String> = Algorithm::ALL.iter().map(|a| format!("{a:?}")).collect();
        let named: Vec<&str> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(spelled, named, "each variant's name is its own");
        for alg in Algorithm::ALL {
            assert_eq!(alg.as_str().parse::<Algorithm>(), Ok(alg));
        }
        for bad in ["none", "None", "NONE", "rs256", "HS256 ", "ES512", ""] {
            assert!(bad.parse::<Algorithm>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn set_membership() {
        let set: AlgorithmSet = [Algorithm::RS256, Algorithm::EdDSA].into_iter().collect();
        assert!(set.contains(Algorithm::RS256));
        assert!(set.contains(Algorithm::EdDSA));
        assert!(!set.contains(Algorithm::HS256));
        assert_eq!(set.iter().count(), 2);
    }
}
