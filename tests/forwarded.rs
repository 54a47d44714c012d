//! Forwarding headers through the real binary: a peer's `X-Forwarded-*`,
//! `Forwarded` and `X-Real-IP` are believed only when the peer is in
//! `server.trusted_proxies`, and the client address in the access log follows
//! the same rule. Spoofed values are sent byte for byte with raw requests.

mod common;

use std::net::IpAddr;

use common::*;

/// One public route in front of the recording upstream, trusting the
/// `server.trusted_proxies` list `trusted`.
fn config(trusted: &str) -> String {
    Config::new()
        .server(&format!("trusted_proxies: {trusted}"))
        .routes(OPEN_ROUTE)
}

async fn start_trusting(trusted: &str) -> (Upstream, Gateway) {
    start(&config(trusted)).await
}

/// Every spoofable forwarding header, some in odd case and in the `_`
/// spelling CGI-style backends fold into `-`.
const SPOOFED: &str = "X-Forwarded-For: 198.51.100.66
x-forwarded-for: 198.51.100.67, 10.9.9.9
Forwarded: for=198.51.100.66;proto=https;host=admin.example
X-Forwarded-Host: admin.example
X-FORWARDED-PROTO: https
X-Forwarded-Port: 443
X-Real-IP: 198.51.100.66
X_Forwarded_For: 198.51.100.68
X_Real_IP: 198.51.100.68";

#[track_caller]
fn assert_only(seen: &Recorded, name: &str, expected: &str) {
    assert_eq!(
        seen.header_all(name),
        [expected],
        "{name} as the upstream saw it: {:?}",
        seen.headers
    );
}

#[track_caller]
fn assert_absent(seen: &Recorded, names: &[&str]) {
    for name in names {
        assert!(
            !seen.has_header(name),
            "{name} reached the upstream: {:?}",
            seen.headers
        );
    }
}

/// The upstream was told of the peer (127.0.0.1, plain HTTP) and nothing
/// else: none of `absent` reached it. The access log names the peer as the
/// client of `request_id`.
async fn assert_the_peer_is_the_client(
    upstream: &Upstream,
    gateway: &Gateway,
    request_id: &str,
    absent: &[&str],
) {
    let seen = upstream.last();
    assert_only(&seen, "x-forwarded-for", "127.0.0.1");
    assert_only(&seen, "x-forwarded-proto", "http");
    assert_absent(&seen, absent);
    gateway
        .expect_access_line(request_id, &["client=\"127.0.0.1\" "])
        .await;
}

#[tokio::test]
async fn an_untrusted_peer_cannot_forge_forwarding_headers() {
    let (upstream, gateway) = start_trusting("[]").await;
    let response = raw_request(
        gateway.proxy_addr(),
        &format!("GET /whoami HTTP/1.1\nHost: app.example\nX-Request-Id: fwd-untrusted\n{SPOOFED}"),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let absent = [
        "x-forwarded-host",
        "x-forwarded-port",
        "forwarded",
        "x-real-ip",
        "x_forwarded_for",
        "x_real_ip",
    ];
    assert_the_peer_is_the_client(&upstream, &gateway, "fwd-untrusted", &absent).await;
}

#[tokio::test]
async fn a_trusted_proxy_is_extended_and_the_client_is_the_rightmost_untrusted_hop() {
    let (upstream, gateway) = start_trusting("[127.0.0.0/8]").await;
    let response = raw_request(
        gateway.proxy_addr(),
        "GET /whoami HTTP/1.1
Host: app.example
X-Request-Id: fwd-trusted
X-Forwarded-For: 198.51.100.7
X-Forwarded-For: 203.0.113.9, 127.0.0.5
Forwarded: for=203.0.113.9;proto=https
X-Forwarded-Host: public.example
X-Forwarded-Proto: https
X-Forwarded-Port: 443
X-Real-IP: 203.0.113.9",
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());

    let seen = upstream.last();
    // Both lines, in order, as one list, with the peer at the end.
    assert_only(
        &seen,
        "x-forwarded-for",
        "198.51.100.7, 203.0.113.9, 127.0.0.5, 127.0.0.1",
    );
    assert_only(&seen, "forwarded", "for=203.0.113.9;proto=https");
    assert_only(&seen, "x-forwarded-host", "public.example");
    assert_only(&seen, "x-forwarded-proto", "https");
    assert_only(&seen, "x-forwarded-port", "443");
    assert_only(&seen, "x-real-ip", "203.0.113.9");

    // 127.0.0.1 (the peer) and 127.0.0.5 are trusted proxies; 203.0.113.9 is
    // the first hop from the right that is not. 198.51.100.7 is only what
    // that client claimed.
    gateway
        .expect_access_line("fwd-trusted", &["client=\"203.0.113.9\" "])
        .await;
}

#[tokio::test]
async fn a_trusted_proxy_that_forwards_nothing_gets_for_and_proto_set() {
    let (upstream, gateway) = start_trusting("[127.0.0.0/8]").await;
    let response = raw_request(
        gateway.proxy_addr(),
        "GET / HTTP/1.1\nHost: app.example\nX-Request-Id: fwd-trusted-bare",
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let absent = [
        "x-forwarded-host",
        "x-forwarded-port",
        "forwarded",
        "x-real-ip",
    ];
    assert_the_peer_is_the_client(&upstream, &gateway, "fwd-trusted-bare", &absent).await;
}

/// Membership, not the mere presence of a list: the same gateway believes
/// 127.0.0.1 and not 127.0.0.2 (both loopback addresses of this machine).
#[tokio::test]
async fn a_peer_outside_the_trusted_ranges_is_not_believed() {
    let (upstream, gateway) = start_trusting(r#"["127.0.0.1/32", "::1"]"#).await;
    let from = |source: &str| {
        reqwest::Client::builder()
            .no_proxy()
            .local_address(source.parse::<IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    let send = |client: reqwest::Client, id: &'static str| {
        let url = gateway.url("/whoami");
        async move {
            let response = client
                .get(url)
                .header("host", "app.example")
                .header("x-request-id", id)
                .header("x-forwarded-for", "203.0.113.9")
                .header("x-forwarded-host", "admin.example")
                .header("forwarded", "for=203.0.113.9")
                .header("x-real-ip", "203.0.113.9")
                .send()
                .await
                .expect("request to the gateway");
            assert_eq!(response.status(), 200);
        }
    };

    send(from("127.0.0.2"), "fwd-outside").await;
    let seen = upstream.last();
    assert_only(&seen, "x-forwarded-for", "127.0.0.2");
    assert_absent(&seen, &["x-forwarded-host", "forwarded", "x-real-ip"]);
    gateway
        .expect_access_line("fwd-outside", &["client=\"127.0.0.2\" "])
        .await;

    send(from("127.0.0.1"), "fwd-inside").await;
    let seen = upstream.last();
    assert_only(&seen, "x-forwarded-for", "203.0.113.9, 127.0.0.1");
    assert_only(&seen, "x-forwarded-host", "admin.example");
    assert_only(&seen, "forwarded", "for=203.0.113.9");
    assert_only(&seen, "x-real-ip", "203.0.113.9");
    gateway
        .expect_access_line("fwd-inside", &["client=\"203.0.113.9\" "])
        .await;
}

#[test]
fn a_bad_trusted_range_is_a_config_error_naming_it() {
    for (range, message) in [
        (
            "10.0.0.1/8",
            r#"server.trusted_proxies: "10.0.0.1/8" has bits set past its prefix length; the range is 10.0.0.0/8"#,
        ),
        (
            "10.0.0.0/33",
            r#"server.trusted_proxies: "10.0.0.0/33": prefix length must be 0 to 32"#,
        ),
        (
            "proxy.internal",
            r#"server.trusted_proxies: "proxy.internal" is not an IP address or CIDR range"#,
        ),
    ] {
        let out = check(&config(&format!("[{range:?}]")));
        assert_eq!(out.code, Some(1), "{range}: {}", out.stderr);
        assert!(out.stderr.contains(message), "{range}: {}", out.stderr);
    }
}

#[test]
fn trusting_every_address_is_warned_about() {
    let checked = |trusted: &str| {
        let out = check(&config(trusted));
        assert!(out.success, "{trusted}: {out:?}");
        out.stdout
    };
    let warning = "warning: server.trusted_proxies contains a /0 range";
    for everything in ["[0.0.0.0/0]", r#"[10.0.0.0/8, "::/0"]"#] {
        assert!(checked(everything).contains(warning), "{everything}");
    }
    assert!(!checked("[10.0.0.0/8, 127.0.0.1]").contains(warning));
}
