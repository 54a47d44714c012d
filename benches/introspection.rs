//! What an opaque (introspected) token costs per request once its
//! introspection answer is cached, beside a JWT whose verification is
//! cached: the target is the first within 1 µs of the second.
//!
//! `cargo bench --bench introspection` runs `Pipeline::decide` (as
//! `pipeline/decide` in benches/verify.rs does: limits, canonical target,
//! route, extraction, the token's verdict, the route's policy) for one
//! route trusting two issuers, the fixture JWT issuer and an introspecting
//! one whose endpoint this bench serves on a loopback port:
//! - `introspection/jwt_hit`: the fixture RS256 token, a verified-token
//!   cache hit;
//! - `introspection/opaque_hit`: an opaque token whose introspection answer
//!   (the same claims, `active: true`, `exp` a day ahead) is cached: the
//!   first decision asks the endpoint, every measured one is a cache hit;
//! - `introspection/interleaved`: both alternating in batches of 16 within
//!   each sample, each sample yielding the difference per request.
//!
//! Both are polled once per decision, with no runtime: a cached answer is
//! in moka's future cache, whose `get` never waits when nothing else holds
//! its locks (a decision that would wait panics instead of being measured).
//! After the run it checks the endpoint was called exactly once, and prints
//! both times, the interleaved difference (median and quartiles) and whether
//! the opaque hit is within 1 µs of the JWT hit.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::Criterion;
use jwtgate::jose::Algorithm;
use jwtgate::mint::Signer;
use jwtgate::pipeline::{Pipeline, Snapshot};
use serde_json::{Value, json};

#[path = "support/interleave.rs"]
mod interleave;
#[path = "support/pipeline.rs"]
mod pipeline;

use interleave::{Samples, alternate, estimate, quantile, record};
use pipeline::{compiled, decide, fixtures, forwarded, now, pipeline_headers, typical_claims};

const JWT_ISSUER: &str = "https://issuer.bench";
const OPAQUE_ISSUER: &str = "https://opaque.bench";
/// 32 random bytes in base64url, as authorization servers issue them.
const OPAQUE_TOKEN: &str = "k3Xq9vR2mZ7tLw4YbN8cJ5hF1sD6gA0eUoPiQxVzWyT";
/// The bound on what a cached opaque token may cost beyond a
/// cached JWT.
const WITHIN_NS: f64 = 1000.0;
const DIFFERENCE: &str = "opaque - jwt, ns per decision";

/// An introspection endpoint on a loopback port, answering
/// `{"active":true,...}` with `answer` for [`OPAQUE_TOKEN`] (inactive for
/// anything else) on a thread of its own; counts the calls.
fn endpoint(answer: Value) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/introspect", listener.local_addr().unwrap());
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let request = read_request(&mut stream);
            counted.fetch_add(1, Ordering::SeqCst);
            let body = if request.contains(&format!("token={OPAQUE_TOKEN}&")) {
                answer.to_string()
            } else {
                r#"{"active":false}"#.to_owned()
            };
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (url, calls)
}

/// A request's head and body, read up to its `content-length`.
fn read_request(stream: &mut impl Read) -> String {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = stream.read(&mut buffer).unwrap_or(0);
        bytes.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        if read == 0 {
            return text;
        }
    }
}

/// One route trusting the fixture JWT issuer and an introspecting issuer
/// whose endpoint is `url`; answers are cached for a day, so none expires
/// during the run. `dir` holds the config and the client secret.
fn fixture(url: &str, dir: &std::path::Path) -> (Pipeline, Snapshot) {
    std::fs::write(dir.join("secret"), "bench-client-secret").unwrap();
    let jwks = fixtures().join("jwks.json");
    let config = format!(
        r#"
issuers:
  - name: main
    issuer: {JWT_ISSUER}
    algorithms: [RS256]
    audiences: [api]
    jwks_file: "{jwks}"
  - name: opaque
    issuer: {OPAQUE_ISSUER}
    audiences: [api]
    fetch: {{ allow_http: true }}
    introspection: {{ endpoint: "{url}", client_id: gateway, client_secret_file: secret, active_ttl: 24h }}
routes:
  - name: api
    match: {{ path_prefix: /api }}
    upstream: {{ addrs: ["127.0.0.1:9"] }}
    auth: {{ issuers: [main, opaque], audiences: [api], scopes: {{ all_of: ["orders:read"] }} }}
"#,
        jwks = jwks.display()
    );
    compiled(&dir.join("bench.yaml"), &config)
}

fn jwt() -> String {
    let signer = Signer::from_file(&fixtures().join("rsa.pem"), Algorithm::RS256).unwrap();
    signer
        .sign(&typical_claims(JWT_ISSUER), Some("rsa-1"), Some("JWT"))
        .unwrap()
}

/// The introspection answer: the JWT's claims from the other issuer, and
/// an `exp` a day ahead.
fn answer() -> Value {
    let mut claims = typical_claims(OPAQUE_ISSUER);
    claims.insert("active".into(), json!(true));
    claims.insert("exp".into(), json!(now() + 86_400));
    claims.insert("token_type".into(), json!("Bearer"));
    Value::Object(claims)
}

fn bench(c: &mut Criterion, differences: &Samples) -> Arc<AtomicUsize> {
    let (url, calls) = endpoint(answer());
    let dir = tempfile::tempdir().unwrap();
    let (pipeline, snapshot) = fixture(&url, dir.path());
    let token = jwt();
    println!(
        "JWT {} bytes, opaque token {} bytes",
        token.len(),
        OPAQUE_TOKEN.len()
    );
    let jwt = pipeline_headers(&format!("Bearer {token}"));
    let opaque = pipeline_headers(&format!("Bearer {OPAQUE_TOKEN}"));

    // The first decision of each fills its cache: the JWT's needs nothing
    // to wait for, the opaque token's calls the endpoint, on a runtime.
    assert!(forwarded(&decide(&pipeline, &snapshot, &jwt)));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let first = runtime.block_on(pipeline.decide(&snapshot, &pipeline::view(&opaque)));
    assert!(forwarded(&first), "the opaque token is refused: {first:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let decide_jwt = || assert!(forwarded(&decide(&pipeline, &snapshot, &jwt)));
    let decide_opaque = || assert!(forwarded(&decide(&pipeline, &snapshot, &opaque)));
    let mut group = c.benchmark_group("introspection");
    group.bench_function("jwt_hit", |b| b.iter(decide_jwt));
    group.bench_function("opaque_hit", |b| b.iter(decide_opaque));
    group.bench_function("interleaved", |b| {
        b.iter_custom(|iters| {
            let (opaque_time, jwt_time) = alternate(iters, decide_opaque, decide_jwt);
            let difference = (opaque_time.as_secs_f64() - jwt_time.as_secs_f64()) * 1e9;
            record(differences, DIFFERENCE, difference / iters as f64);
            opaque_time + jwt_time
        })
    });
    group.finish();
    calls
}

fn print_difference(differences: &Samples) {
    let us = |id: &str| estimate(id).map(|ns| ns / 1000.0);
    if let (Some(jwt), Some(opaque)) = (us("introspection/jwt_hit"), us("introspection/opaque_hit"))
    {
        println!(
            "\npipeline decision, cached: JWT {jwt:.3} µs, opaque token {opaque:.3} µs \
             (separate means): {:+.0} ns",
            (opaque - jwt) * 1000.0
        );
    }
    let mut samples = differences.borrow_mut();
    let Some(samples) = samples.get_mut(DIFFERENCE) else {
        return;
    };
    samples.sort_by(f64::total_cmp);
    let median = quantile(samples, 0.5);
    println!(
        "opaque - JWT, interleaved samples: median {median:.0} ns   quartiles {:.0}–{:.0} ns   ({} samples)",
        quantile(samples, 0.25),
        quantile(samples, 0.75),
        samples.len()
    );
    println!(
        "a cached opaque token is {} 1 µs of a cached JWT",
        if median <= WITHIN_NS {
            "within"
        } else {
            "NOT within"
        }
    );
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let differences = Samples::default();
    let calls = bench(&mut criterion, &differences);
    criterion.final_summary();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "every measured decision was answered by the cache"
    );
    print_difference(&differences);
}
