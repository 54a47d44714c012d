//! Compiling against a made-up machine: files and variables from
//! [`Fixed`], so nothing here reads the real environment or disk.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::assemble::sources::Fixed;
use crate::digest::sha256;

const ROUTES: &str =
    "routes:\n  - name: r\n    upstream: { addrs: [\"127.0.0.1:1\"] }\n    auth: { mode: off }\n";
const TOKEN: (&str, &str) = ("ADMIN", "0123456789abcdef-long-enough");

/// Compiles `text` (with one public route appended) as `/etc/jwtgate/gateway.yaml`.
fn compile_text(text: &str, sources: &Fixed) -> Result<Compiled, String> {
    let path = Path::new("/etc/jwtgate/gateway.yaml");
    let config = crate::config::parse(path, &format!("{text}{ROUTES}"), &|_| None)
        .map_err(|e| e.to_string())?;
    compile_with(path, config, &(), sources).map_err(|e| e.to_string())
}

fn bootstrap(text: &str) -> Bootstrap {
    compile_text(text, &Fixed::default()).unwrap().bootstrap
}

#[test]
fn restart_only_changes_are_each_named_with_both_values() {
    let running = bootstrap("");
    assert!(running.changes(&bootstrap("")).is_empty());
    // Settings a reload may change are no restart-only change.
    let reloadable =
        "server: { realm: other, trusted_proxies: [10.0.0.0/8] }\ntokens: { max_bytes: 4096 }\n";
    assert!(running.changes(&bootstrap(reloadable)).is_empty());

    let changed = bootstrap(
        "listen: { http: \"127.0.0.1:8000\" }\nserver: { threads: 3, grace_period: 1s, keepalive_timeout: 75s, upstream_keepalive: 32 }\nkeys_cache_dir: /var/cache/jwtgate\ntoken_cache: { ttl: 1m }\n",
    );
    assert_eq!(
        running.changes(&changed),
        [
            "listen.http: 127.0.0.1:8080 → 127.0.0.1:8000",
            "server.threads: (one per core) → 3",
            "server.grace_period: 5s → 1s",
            "server.keepalive_timeout: 1m → 75s",
            "server.upstream_keepalive: 128 → 32",
            "keys_cache_dir: (none) → /var/cache/jwtgate",
            "token_cache.ttl: 5m → 1m",
        ]
    );
    // As written, not on humantime's calendar (`11months 30days 3h 50m 24s`).
    let long = bootstrap("server: { grace_period: 365d }\n");
    assert_eq!(running.changes(&long), ["server.grace_period: 5s → 365d"]);
    let cache_off = bootstrap("token_cache: { enabled: false }\n");
    assert_eq!(
        running.changes(&cache_off),
        ["token_cache.enabled: true → false"]
    );
}

#[test]
fn a_changed_revocation_block_needs_a_restart_and_names_no_secret() {
    let sources = Fixed::default().var("PW", "hunter2-password");
    let with_redis = "redis: { url: 'redis://r:6379', password: { env: PW } }\nrevocation: { dir: /var/lib/j, redis: {} }\n";
    let shared = compile_text(with_redis, &sources).unwrap().bootstrap;
    let changes = bootstrap("").changes(&shared);
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(
        changes[0].starts_with("redis: (none) → redis redis://r:6379"),
        "{changes:?}"
    );
    assert!(
        changes[1].starts_with("revocation: (none) → dir /var/lib/j tokens [] shared"),
        "{changes:?}"
    );
    assert!(!changes.concat().contains("hunter2"), "{changes:?}");
    assert!(changes[0].contains("env PW"), "{changes:?}");
    let again = compile_text(with_redis, &sources).unwrap().bootstrap;
    assert!(shared.changes(&again).is_empty());
}

#[test]
fn files_and_variables_come_from_the_sources_given() {
    let jwks = include_str!("../../../deploy/dev-keys/jwks.json");
    let sources = Fixed::default()
        .file("/etc/jwtgate/keys/jwks.json", jwks)
        .var("SECRET", "0123456789abcdef0123456789abcdef");
    let issuers = "issuers:\n  - { name: local, issuer: https://i, jwks_file: keys/jwks.json, algorithms: [RS256], audiences: [api] }\n  - { name: hmac, issuer: https://h, hmac_secret_env: SECRET, algorithms: [HS256], audiences: [api] }\n";
    let compiled = compile_text(issuers, &sources).unwrap();
    assert_eq!(compiled.snapshot.issuers.len(), 2);
    assert!(compiled.snapshot.issuers[0].keys.is_ready());

    let missing = compile_text(issuers, &Fixed::default().var("SECRET", "x")).unwrap_err();
    assert!(
        missing.contains("cannot read jwks_file /etc/jwtgate/keys/jwks.json"),
        "{missing}"
    );
    let unset = compile_text(
        issuers,
        &Fixed::default().file("/etc/jwtgate/keys/jwks.json", jwks),
    )
    .unwrap_err();
    assert!(
        unset.contains("environment variable SECRET (hmac_secret_env) is not set"),
        "{unset}"
    );
}

fn revocation(yaml: &str, sources: &Fixed) -> Result<RevocationSettings, String> {
    let redis = "redis: { url: 'redis://cache:6379' }\n";
    let text = format!("{redis}revocation: {yaml}\n");
    compile_text(&text, sources).map(|c| c.bootstrap.revocation.unwrap())
}

use crate::state::revocation::RevocationSettings;

#[test]
fn tokens_come_from_env_or_file_and_are_kept_as_digests() {
    let sources = Fixed::default().var(TOKEN.0, TOKEN.1);
    let settings = revocation(
        "{ admin_tokens: [{ name: idp-logout, env: ADMIN }], dir: state }",
        &sources,
    )
    .unwrap();
    assert_eq!(settings.admin_tokens[0].name, "idp-logout");
    assert_eq!(settings.admin_tokens[0].digest, sha256(TOKEN.1.as_bytes()));
    assert_eq!(settings.dir.unwrap(), Path::new("/etc/jwtgate/state"));
    let shown = format!("{:?} {}", settings.admin_tokens, TOKEN.1);
    assert_eq!(shown.matches(TOKEN.1).count(), 1, "never in Debug: {shown}");

    let sources = Fixed::default().file("/run/token", format!("{}\n", TOKEN.1));
    let settings = revocation(
        "{ admin_tokens: [{ name: ops, file: /run/token }] }",
        &sources,
    )
    .unwrap();
    assert_eq!(settings.admin_tokens[0].digest, sha256(TOKEN.1.as_bytes()));
}

#[test]
fn bad_revocation_settings_are_refused_with_the_field_and_value() {
    let cases: &[(&str, &str)] = &[
        (
            "{ admin_tokens: [{ name: a, env: ADMIN, file: x }] }",
            "revocation.admin_tokens[0] (\"a\"): give exactly one of env or file",
        ),
        (
            "{ admin_tokens: [{ name: a, env: NOPE }] }",
            "environment variable NOPE is not set",
        ),
        (
            "{ admin_tokens: [{ name: 'a b', env: ADMIN }] }",
            "name \"a b\" must be",
        ),
        (
            "{ admin_tokens: [{ name: a, env: ADMIN }, { name: a, env: ADMIN }] }",
            "the name \"a\" is used twice",
        ),
        (
            "{ admin_tokens: [{ name: a, env: SHORT }] }",
            "the token is 5 bytes",
        ),
        (
            "{ redis: { reconcile_interval: 10ms } }",
            "revocation.redis.reconcile_interval: 10ms must be at least 1s",
        ),
        (
            "{ redis: { key_prefix: 'a b' } }",
            "revocation.redis.key_prefix: \"a b\"",
        ),
        ("{ redis: { nope: 1 } }", "unknown field"),
    ];
    let sources = Fixed::default().var(TOKEN.0, TOKEN.1).var("SHORT", "short");
    for (yaml, expected) in cases {
        let error = revocation(yaml, &sources).unwrap_err();
        assert!(error.contains(expected), "{yaml}: {error}");
    }
}

fn redis(yaml: &str, sources: &Fixed) -> Result<crate::state::redis::RedisSettings, String> {
    let text = format!("redis: {yaml}\nrate_limit: {{ redis: {{}} }}\n");
    compile_text(&text, sources).map(|c| c.bootstrap.redis.unwrap())
}

#[test]
fn one_redis_connection_keeps_its_password_out_of_descriptions() {
    let sources = Fixed::default().var("PW", "hunter2-password");
    let settings = redis(
        "{ url: 'rediss://cache:6380/2', password: { env: PW }, timeout: 1s }",
        &sources,
    )
    .unwrap();
    assert_eq!(settings.password.as_deref(), Some("hunter2-password"));
    assert_eq!(settings.timeout, Duration::from_secs(1));
    // rediss:// without a tls block: TLS with the system's roots.
    assert!(settings.tls.as_ref().is_some_and(|tls| tls.ca.is_none()));
    let described = format!("{settings:?}");
    assert!(!described.contains("hunter2"), "{described}");
    assert!(described.contains("env PW"), "{described}");
}

#[test]
fn redis_tls_files_are_read_when_the_config_is() {
    let sources = Fixed::default()
        .file("/etc/jwtgate/ca.pem", "CA")
        .file("/etc/jwtgate/client.pem", "CERT")
        .file("/etc/jwtgate/client.key", "KEY");
    let settings = redis(
        "{ url: 'rediss://cache:6380', tls: { ca_file: ca.pem, client_cert: client.pem, client_key: client.key } }",
        &sources,
    )
    .unwrap();
    let tls = settings.tls.unwrap();
    assert_eq!(tls.ca.as_deref(), Some(&b"CA"[..]));
    assert_eq!(tls.client, Some((b"CERT".to_vec(), b"KEY".to_vec())));
    assert!(
        !format!(
            "{:?}",
            redis(
                "{ url: 'rediss://c:1', tls: { ca_file: ca.pem } }",
                &sources
            )
            .unwrap()
        )
        .contains("CA\"")
    );
}

#[test]
fn bad_redis_settings_name_the_field() {
    let cases: &[(&str, &str)] = &[
        (
            "{ url: 'http://x:6379' }",
            "redis.url: \"http://x:6379\" must start with redis://",
        ),
        ("{ url: 'redis://:secret@x:6379' }", "holds credentials"),
        (
            "{ url: 'redis://x', password: { env: NOPE } }",
            "redis.password: environment variable NOPE is not set",
        ),
        (
            "{ url: 'redis://x', password: { env: A, file: b } }",
            "redis.password: give exactly one of env or file",
        ),
        (
            "{ url: 'redis://x', timeout: 1ms }",
            "redis.timeout: 1ms must be at least 100ms",
        ),
        (
            "{ url: 'redis://x', tls: { ca_file: ca.pem } }",
            "redis.tls is set but redis.url starts with redis://",
        ),
        (
            "{ url: 'rediss://x', tls: { client_cert: c.pem } }",
            "client_cert and redis.tls.client_key go together",
        ),
        (
            "{ url: 'rediss://x', tls: { ca_file: missing.pem } }",
            "redis.tls.ca_file: cannot read /etc/jwtgate/missing.pem",
        ),
        ("{ url: 'redis://x', nope: 1 }", "unknown field"),
    ];
    for (yaml, expected) in cases {
        let error = redis(yaml, &Fixed::default()).unwrap_err();
        assert!(error.contains(expected), "{yaml}: {error}");
    }
}

#[test]
fn the_old_per_feature_connection_says_where_it_went() {
    for (section, field) in [
        ("revocation", "url: 'redis://r:6379'"),
        ("rate_limit", "password_env: PW"),
    ] {
        let text = format!("{section}:\n  redis:\n    {field}\n");
        let error = compile_text(&text, &Fixed::default()).unwrap_err();
        assert!(error.contains("gateway.yaml:3:"), "{error}");
        assert!(
            error.contains("is now the top-level `redis:` block"),
            "{error}"
        );
    }
    let error = compile_text("rate_limit: { redis: {} }\n", &Fixed::default()).unwrap_err();
    assert!(
        error.contains(
            "rate_limit.redis shares through Redis, but there is no top-level redis block"
        ),
        "{error}"
    );
}

#[test]
fn rate_limit_settings_are_checked_naming_the_field() {
    let text = "redis: { url: 'redis://cache:6379' }\nrate_limit: { redis: {} }\n";
    let settings = compile_text(text, &Fixed::default())
        .unwrap()
        .bootstrap
        .rate_limit;
    let shared = settings.redis.as_ref().unwrap();
    assert_eq!(shared.sync_interval, Duration::from_millis(200));
    assert_eq!(shared.key_prefix, "jwtgate:ratelimit");
    assert_eq!(settings.max_keys, 1 << 20);
    let cases = [
        ("max_keys: 3", "rate_limit.max_keys: 3 must be at least 64"),
        (
            "redis: { sync_interval: 1ms }",
            "rate_limit.redis.sync_interval: 1ms must be at least 10ms",
        ),
        ("redis: { nope: 1 }", "unknown field"),
    ];
    for (yaml, expected) in cases {
        let text = format!("redis: {{ url: 'redis://x' }}\nrate_limit: {{ {yaml} }}\n");
        let error = compile_text(&text, &Fixed::default()).unwrap_err();
        assert!(error.contains(expected), "{yaml}: {error}");
    }
}

#[test]
fn keepalive_settings_must_be_usable() {
    let default = bootstrap("");
    assert_eq!(default.keepalive_timeout, Duration::from_secs(60));
    assert_eq!(default.upstream_keepalive, 128);
    let cases = [
        (
            "server: { keepalive_timeout: 1500ms }\n",
            "server.keepalive_timeout is 1500ms; it must be whole seconds, at least 1s",
        ),
        (
            "server: { keepalive_timeout: 0s }\n",
            "server.keepalive_timeout is 0s; it must be whole seconds, at least 1s",
        ),
        (
            "server: { upstream_keepalive: 0 }\n",
            "server.upstream_keepalive must be at least 1",
        ),
    ];
    for (yaml, expected) in cases {
        let error = compile_text(yaml, &Fixed::default()).unwrap_err();
        assert!(error.contains(expected), "{yaml}: {error}");
    }
    let route = |options: &str| {
        let text = ROUTES.replace("\"127.0.0.1:1\"]", &format!("\"127.0.0.1:1\"]{options}"));
        let path = Path::new("/etc/jwtgate/gateway.yaml");
        let config = crate::config::parse(path, &text, &|_| None).map_err(|e| e.to_string())?;
        compile_with(path, config, &(), &Fixed::default()).map_err(|e| e.to_string())
    };
    let keepalive = |compiled: Compiled| {
        let upstream = compiled.upstreams[0].as_ref();
        upstream.expect("the route's upstream").keepalive_timeout
    };
    let set = route(", keepalive_timeout: 250ms").unwrap();
    assert_eq!(keepalive(set), Duration::from_millis(250));
    assert_eq!(keepalive(route("").unwrap()), Duration::from_secs(60));
    let error = route(", keepalive_timeout: 0s").unwrap_err();
    assert!(
        error.contains("upstream.keepalive_timeout must be positive"),
        "{error}"
    );
}

#[test]
fn a_client_body_timeout_of_zero_is_refused() {
    let compiled =
        compile_text("server: { client_body_timeout: 5s }\n", &Fixed::default()).unwrap();
    assert_eq!(
        compiled.snapshot.client_body_timeout,
        Duration::from_secs(5)
    );
    let default = compile_text("", &Fixed::default()).unwrap();
    assert_eq!(
        default.snapshot.client_body_timeout,
        Duration::from_secs(60)
    );
    let error =
        compile_text("server: { client_body_timeout: 0s }\n", &Fixed::default()).unwrap_err();
    assert!(
        error.contains("server.client_body_timeout must be positive"),
        "{error}"
    );
}

#[test]
fn the_authz_listener_alone_is_something_to_serve() {
    let off = "listen: { http: { mode: off }";
    let error = compile_text(&format!("{off} }}\n"), &Fixed::default()).unwrap_err();
    assert!(
        error.contains("listen.https is not set, nor listen.authz: jwtgate would serve nothing"),
        "{error}"
    );
    let authz_only = compile_text(
        &format!("{off}, authz: {{ addr: \"127.0.0.1:9191\" }} }}\n"),
        &Fixed::default(),
    )
    .unwrap();
    assert_eq!(authz_only.bootstrap.listen_http, None);
    assert!(authz_only.bootstrap.authz.is_some());
    assert!(authz_only.snapshot.https.is_none());
}

#[test]
fn a_client_cert_header_needs_a_header_name_and_trusted_proxies_to_be_read() {
    let header = "client_cert_header: { name: X-SSL-Client-Cert, format: escaped_pem }";
    let trusted = format!("server: {{ trusted_proxies: [10.0.0.0/8], {header} }}\n");
    let compiled = compile_text(&trusted, &Fixed::default()).unwrap();
    let compiled_header = compiled.snapshot.client_cert_header.as_ref().unwrap();
    assert_eq!(compiled_header.name.as_str(), "x-ssl-client-cert");
    assert!(compiled.snapshot.warnings.is_empty());

    let untrusted = compile_text(&format!("server: {{ {header} }}\n"), &Fixed::default()).unwrap();
    assert_eq!(
        untrusted.snapshot.warnings,
        [
            "server.client_cert_header is set but server.trusted_proxies is empty: x-ssl-client-cert is believed from no peer, so it is never read"
        ]
    );

    let bad = "server: { client_cert_header: { name: \"x ssl\", format: xfcc } }\n";
    let error = compile_text(bad, &Fixed::default()).unwrap_err();
    assert!(
        error.contains("server.client_cert_header.name: \"x ssl\" is not a header name"),
        "{error}"
    );
}

#[test]
fn status_lists_need_an_allow_list_that_covers_what_they_prefetch() {
    let issuer = |status_list: &str| {
        format!(
            "issuers:\n  - name: corp\n    issuer: https://idp.example\n    algorithms: [HS256]\n    audiences: [api]\n    hmac_secret_env: SECRET\n    status_list: {status_list}\n"
        )
    };
    let sources = Fixed::default().var("SECRET", "0123456789abcdef0123456789abcdef");
    let compiled = |status_list: &str| compile_text(&issuer(status_list), &sources);
    let error = compiled("{ mode: required }").unwrap_err();
    assert!(error.contains("allowed_uris must list"), "{error}");
    let error = compiled("{ allowed_uris: [\"http://idp.example/l/\"] }").unwrap_err();
    assert!(error.contains("must be an https:// URL"), "{error}");
    let error = compiled(
        "{ allowed_uris: [\"https://idp.example/l/\"], prefetch: [\"https://other.example/l/1\"] }",
    )
    .unwrap_err();
    assert!(error.contains("not under allowed_uris"), "{error}");
    let off = compiled("{ mode: off }").unwrap();
    assert!(off.snapshot.status_lists[0].is_none(), "off: no lists");
    let on = compiled(
        "{ allowed_uris: [\"https://idp.example/l/\"], prefetch: [\"https://idp.example/l/1\"] }",
    )
    .unwrap();
    let lists = on.snapshot.status_lists[0].as_ref().expect("lists");
    assert_eq!(lists.slots().len(), 1, "the prefetched list is registered");
}

#[test]
fn introspecting_issuers_are_checked_naming_the_field() {
    let issuer = |keys: &str, introspection: &str| {
        format!(
            "issuers:\n  - name: opaque\n    issuer: https://idp.example\n    audiences: [api]\n{keys}    introspection: {introspection}\n"
        )
    };
    let key = b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n".to_vec();
    let sources = Fixed::default()
        .var("SECRET", "s3cret")
        .file("/etc/jwtgate/bad.pem", key);
    let compiled =
        |keys: &str, introspection: &str| compile_text(&issuer(keys, introspection), &sources);

    let only = compiled("", "{ client_id: gw, client_secret_env: SECRET }").unwrap();
    let introspector = only.snapshot.introspectors[0]
        .as_ref()
        .expect("introspects");
    assert_eq!(introspector.settings().endpoint, None, "found by discovery");
    assert!(only.snapshot.introspects);
    assert!(!only.snapshot.issuers[0].required, "no keys to wait for");
    let post = "{ client_id: gw, client_auth: client_secret_post, client_secret_env: SECRET, endpoint: \"https://idp.example/i\" }";
    let post = compiled("", post).unwrap();
    let settings = post.snapshot.introspectors[0].as_ref().unwrap().settings();
    assert_eq!(format!("{:?}", settings.credential), "client_secret_post");
    assert!(!format!("{settings:?}").contains("s3cret"), "{settings:?}");

    let cases = [
        (
            "",
            "{ client_id: gw }",
            "give client_secret_env or client_secret_file",
        ),
        (
            "",
            "{ client_id: gw, client_secret_env: UNSET }",
            "UNSET (client_secret_env) is not set",
        ),
        (
            "",
            "{ client_id: gw, client_auth: private_key_jwt }",
            "signs with private_key_file",
        ),
        (
            "",
            "{ client_id: gw, client_auth: private_key_jwt, private_key_file: bad.pem }",
            "not a PEM private key",
        ),
        (
            "",
            "{ client_id: gw, client_secret_env: SECRET, private_key_file: bad.pem }",
            "private_key_file is for client_auth: private_key_jwt",
        ),
        (
            "",
            "{ client_id: gw, client_secret_env: SECRET, jwt_response: true }",
            "jwt_response",
        ),
        (
            "",
            "{ client_id: gw, client_secret_env: SECRET, endpoint: \"http://idp.example/i\" }",
            "must be an https:// URL",
        ),
        (
            "",
            "{ client_id: \"\", client_secret_env: SECRET }",
            "client_id must not be empty",
        ),
        (
            "",
            "{ client_id: gw, client_secret_env: SECRET, active_ttl: 0s }",
            "more than zero",
        ),
        (
            "    algorithms: [RS256]\n",
            "{ client_id: gw, client_secret_env: SECRET }",
            "algorithms are listed, but no key source",
        ),
    ];
    for (keys, introspection, expected) in cases {
        let error = compiled(keys, introspection).unwrap_err();
        assert!(error.contains(expected), "{introspection}: {error}");
        assert!(error.contains("issuer \"opaque\""), "{error}");
    }
}

/// A config with `block` and one route whose `forward.identity_token` is
/// `forward`, with a P-256 key in `idt.pem` and in `IDT_KEY`.
fn identity_compiled(block: &str, forward: &str) -> Result<Compiled, String> {
    let key = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .output()
        .expect("openssl on PATH")
        .stdout;
    let sources = Fixed::default()
        .file("/etc/jwtgate/idt.pem", key.clone())
        .var("IDT_KEY", std::str::from_utf8(&key).unwrap())
        .file("/etc/jwtgate/junk.pem", b"not a key".to_vec());
    let path = Path::new("/etc/jwtgate/gateway.yaml");
    let text = format!(
        "{block}routes:\n  - name: backend\n    match: {{ path_prefix: /b }}\n    upstream: {{ addrs: [\"127.0.0.1:1\"] }}\n    auth: {{ mode: off }}\n    forward: {{ identity_token: {forward} }}\n"
    );
    let parsed = crate::config::parse(path, &text, &|_| None).map_err(|e| e.to_string())?;
    compile_with(path, parsed, &(), &sources).map_err(|e| e.to_string())
}

const IDENTITY_KEYS: &str = "identity_tokens:\n  issuer: https://gw.example\n  keys:\n    - { kid: a, file: idt.pem }\n    - { kid: b, env: IDT_KEY }\n";

#[test]
fn identity_tokens_publish_every_key_and_routes_plan_theirs() {
    let good = identity_compiled(IDENTITY_KEYS, "{ audience: orders }").unwrap();
    let tokens = good.snapshot.identity_tokens.as_ref().expect("signs");
    let jwks: serde_json::Value = serde_json::from_slice(tokens.jwks()).unwrap();
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(2));
    let plan = good.snapshot.routes[0]
        .forward
        .identity_token
        .as_ref()
        .unwrap();
    assert_eq!(
        (plan.header.as_str(), plan.ttl_secs),
        ("x-jwtgate-identity", 60)
    );
    assert!(
        good.snapshot
            .identity_headers
            .iter()
            .any(|name| name == "x-jwtgate-identity"),
        "a client's copy is removed on every route"
    );
}

#[test]
fn identity_token_mistakes_are_named() {
    let block = IDENTITY_KEYS;
    let cases = [
        (
            "",
            "{ audience: orders }",
            "needs the top-level identity_tokens",
        ),
        (
            block,
            "{ audience: \"\" }",
            "audience must name the backend",
        ),
        (
            block,
            "{ audience: orders, ttl: 0s }",
            "ttl must be at least 1s",
        ),
        (
            block,
            "{ audience: orders, claims: [sub] }",
            "\"sub\" is set by jwtgate itself",
        ),
        (
            "identity_tokens: { issuer: https://gw.example, keys: [] }\n",
            "{ audience: o }",
            "at least one key",
        ),
        (
            "identity_tokens: { issuer: https://gw.example, keys: [{ kid: a, file: junk.pem }] }\n",
            "{ audience: o }",
            "is not a PEM private key",
        ),
        (
            "identity_tokens: { issuer: https://gw.example, keys: [{ kid: a, env: UNSET }] }\n",
            "{ audience: o }",
            "UNSET is not set",
        ),
        (
            "identity_tokens: { issuer: https://gw.example, keys: [{ kid: a, file: idt.pem }, { kid: a, env: IDT_KEY }] }\n",
            "{ audience: o }",
            "kid \"a\" is given twice",
        ),
        (
            "identity_tokens: { issuer: https://gw.example, keys: [{ kid: a }] }\n",
            "{ audience: o }",
            "give file or env",
        ),
    ];
    for (block, forward, expected) in cases {
        let error = identity_compiled(block, forward).unwrap_err();
        assert!(error.contains(expected), "{block}{forward}: {error}");
        assert!(
            !error.contains("BEGIN"),
            "no key material in errors: {error}"
        );
    }
}
