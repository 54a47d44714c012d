//! Why a TLS handshake with an upstream failed, said in the error log: the
//! access log's `error` field only says `upstream_tls_failed`, and the
//! client's 502 body says nothing at all.

use pingora::Error;
use pingora::upstreams::peer::HttpPeer;

use super::failure::ProxyFailure;
use crate::answers::request_id::request_id_text;
use crate::pipeline::CompiledRoute;

/// Logs a failed handshake with `peer` (one line per address tried, since
/// each has its own certificate). Other connection failures are left to
/// the access log.
pub fn log_failed_handshake(
    route: &CompiledRoute,
    peer: &HttpPeer,
    request_id: &http::HeaderValue,
    error: &Error,
) {
    if ProxyFailure::of(error) != ProxyFailure::UpstreamTlsFailed {
        return;
    }
    tracing::warn!(
        route = %route.name,
        upstream = %peer._address,
        server_name = %peer.sni,
        request_id = %request_id_text(request_id),
        reason = %Reason {
            chain: &error.to_string(),
            client_certificate: peer.client_cert_key.is_some(),
        },
        "TLS handshake with the upstream failed"
    );
}

/// [`reason`], and when the upstream refused a gateway that presented no
/// client certificate, the likely cause.
struct Reason<'a> {
    chain: &'a str,
    client_certificate: bool,
}

impl std::fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reason = reason(self.chain);
        f.write_str(&reason)?;
        if reason.starts_with(REFUSED) && !self.client_certificate {
            f.write_str("; no client certificate was presented (upstream.tls.client_cert)")?;
        }
        Ok(())
    }
}

const REFUSED: &str = "the upstream refused the handshake";

/// The innermost cause in Pingora's error chain, which is rustls's own
/// message (`invalid peer certificate: UnknownIssuer`), in plain words
/// (`certificate verify failed: unknown issuer`). rustls names certificate
/// problems and alerts by their enum variant; those are spelled out.
/// Neither Pingora nor rustls puts key material in these messages.
fn reason(chain: &str) -> String {
    // Pingora appends the SNI to the handshake's message, then further
    // causes (the local address) after it.
    let handshake = chain.split_once(", SNI: ").map_or(chain, |(head, _)| head);
    let innermost = handshake
        .rsplit(" cause: ")
        .next()
        .unwrap_or(handshake)
        .trim();
    if let Some(problem) = innermost.strip_prefix("invalid peer certificate: ") {
        return format!("certificate verify failed: {}", variant_words(problem));
    }
    if let Some(alert) = innermost.strip_prefix("received fatal alert: ") {
        return format!("{REFUSED}: {} alert", variant_words(alert));
    }
    innermost.to_string()
}

/// `UnknownIssuer` → `unknown issuer`; a message that is not one bare
/// variant name (rustls's own sentences, with names and times) is kept.
fn variant_words(text: &str) -> String {
    if !text.chars().all(|c| c.is_ascii_alphanumeric()) {
        return text.to_string();
    }
    let mut words = String::with_capacity(text.len() + 4);
    for (i, c) in text.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
    }
    words
}

#[cfg(test)]
mod tests {
    use super::reason;

    #[test]
    fn rustls_reasons_read_as_words() {
        assert_eq!(
            reason(
                "Upstream TLSHandshakeFailure context: TLS connect() failed:  TLSHandshakeFailure context: tls connect error cause: invalid peer certificate: UnknownIssuer, SNI: localhost cause: local address 127.0.0.1:43982"
            ),
            "certificate verify failed: unknown issuer"
        );
        assert_eq!(
            reason("x cause: received fatal alert: HandshakeFailure, SNI: 10.0.0.1"),
            "the upstream refused the handshake: handshake failure alert"
        );
        assert_eq!(
            reason(
                "x cause: invalid peer certificate: certificate not valid for name \"a.test\"; certificate is only valid for b.test"
            ),
            "certificate verify failed: certificate not valid for name \"a.test\"; certificate is only valid for b.test"
        );
        assert_eq!(reason("connection reset"), "connection reset");
    }
}
