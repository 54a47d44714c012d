//! The one crypto library behind every TLS connection: aws-lc-rs, the
//! library that verifies tokens, with the post-quantum hybrid key exchange
//! (X25519MLKEM768) preferred for a client that offers it, as current
//! browsers do.
//!
//! Pingora installs rustls's `ring` provider as the process's default when
//! it builds its first TLS listener or connector, unless one is installed
//! already; installing aws-lc-rs first makes every rustls config built from
//! the default (Pingora's listener and upstream connector, jwtgate's own)
//! use it.

/// Makes aws-lc-rs the process's rustls provider. Call it before anything
/// builds a TLS config; later calls change nothing.
pub fn install() {
    // Fails only when a provider is installed already: this one, from an
    // earlier call, as nothing else runs first.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
