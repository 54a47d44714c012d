//! Which fixed `reason` a failed handshake or a broken connection is
//! counted under, read from the words Pingora and rustls log it with.

use super::{ConnectionReason, HandshakeReason};

/// Pingora writes the error chain ending with rustls's reason (or the I/O
/// error tokio-rustls turned a closed connection into).
pub(super) fn handshake_reason(message: &str) -> HandshakeReason {
    if closed(message) {
        return HandshakeReason::PeerClosed;
    }
    if let Some(why) = after(message, "peer is incompatible: ") {
        let cipher = ["CipherSuites", "KxGroups", "SignatureSchemes", "EcPoint"];
        if cipher.iter().any(|name| why.contains(name)) {
            return HandshakeReason::NoSharedCipher;
        }
        // Clients older than TLS 1.2 send no signature_algorithms.
        let version = [
            "Version",
            "Tls12",
            "Tls13",
            "SignatureAlgorithmsExtensionRequired",
        ];
        if version.iter().any(|name| why.contains(name)) {
            return HandshakeReason::NoSharedVersion;
        }
        return HandshakeReason::Other;
    }
    if let Some(alert) = after(message, "received fatal alert: ") {
        let certificate = ["Certificate", "UnknownCA", "AccessDenied"];
        return if certificate.iter().any(|name| alert.contains(name)) {
            HandshakeReason::BadCertificate
        } else if alert.starts_with("ProtocolVersion") {
            HandshakeReason::NoSharedVersion
        } else if alert.starts_with("HandshakeFailure") || alert.starts_with("InsufficientSecurity")
        {
            HandshakeReason::NoSharedCipher
        } else {
            HandshakeReason::Protocol
        };
    }
    // rustls' words for what the client certificate verifier refused.
    if message.contains("peer sent no certificates") {
        return HandshakeReason::ClientCertMissing;
    }
    if message.contains("invalid peer certificate: ") {
        return HandshakeReason::ClientCertRefused;
    }
    let protocol = [
        "received corrupt message",
        "received unexpected message",
        "peer misbehaved",
        "peer sent excess record size",
        "cannot decrypt peer's message",
    ];
    if protocol.iter().any(|text| message.contains(text)) {
        return HandshakeReason::Protocol;
    }
    if timed_out(message) {
        return HandshakeReason::Timeout;
    }
    HandshakeReason::Other
}

pub(super) fn connection_reason(message: &str) -> ConnectionReason {
    if timed_out(message) {
        ConnectionReason::Timeout
    } else if closed(message) {
        ConnectionReason::PeerClosed
    } else {
        ConnectionReason::Other
    }
}

/// The peer went away: an end of file where more was due, a reset, a
/// broken pipe, or TLS ended without its `close_notify`.
fn closed(message: &str) -> bool {
    [
        "ConnectionClosed",
        "handshake eof",
        "unexpected end of file",
        "close_notify",
        "os error 104",
        "os error 32",
        "Connection reset",
        "Broken pipe",
    ]
    .iter()
    .any(|text| message.contains(text))
}

fn timed_out(message: &str) -> bool {
    message.contains("Timedout") || message.contains("timed out")
}

fn after<'a>(message: &'a str, marker: &str) -> Option<&'a str> {
    message
        .rfind(marker)
        .map(|start| &message[start + marker.len()..])
}
