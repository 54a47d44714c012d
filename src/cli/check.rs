//! `jwtgate check`: validate a config the way `run` would, and show what it
//! means in a few lines.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use jwtgate::assemble::Bootstrap;
use jwtgate::assemble::sources::{Rooted, Sources, System};
use jwtgate::auth::policy::RoutePolicy;
use jwtgate::certificates::EXPIRY_WARNING_SECS;
use jwtgate::client_certs::ClientCertMode;
use jwtgate::config::schema::{AuthMode, HttpsOnly, MatchConfig};
use jwtgate::keys::fetch::{Locator, discovery_url};
use jwtgate::pipeline::{CompiledRoute, HttpsState, Snapshot};
use jwtgate::upstream::RouteUpstream;
use serde_json::Value;

use super::ConfigArgs;

/// `check`'s arguments.
#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Read the absolute paths the config names (secrets, certificates,
    /// keys) under this directory, as a container would see them mounted;
    /// the config and files named relative to it are read where they are.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

pub fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let path = args.config.config.as_path();
    let sources: Box<dyn Sources> = match &args.root {
        Some(root) => Box::new(Rooted {
            root: root.clone(),
            config_dir: path.parent().unwrap_or(Path::new("")).to_path_buf(),
        }),
        None => Box::new(System),
    };
    // Loaded and compiled in two steps, as `run` does in one: the route
    // summary shows each route's match as written.
    let compiled = jwtgate::assemble::load(path, sources.as_ref()).and_then(|config| {
        let matches: Vec<String> = config.routes.iter().map(|r| matcher(&r.matcher)).collect();
        jwtgate::assemble::compile_with(path, config, &(), sources.as_ref())
            .map(|compiled| (compiled, matches))
    });
    let (
        jwtgate::assemble::Compiled {
            bootstrap,
            snapshot,
            upstreams,
        },
        matches,
    ) = match compiled {
        Ok(compiled) => compiled,
        Err(error) => {
            eprintln!("{error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    outln!("{}: OK", path.display());
    listeners(&bootstrap);
    let mut warnings = Vec::new();
    if let Some(https) = &snapshot.https {
        certificates(https);
        warnings = https
            .certificates
            .expiry_warnings(jwtgate::clock::system().now_unix(), EXPIRY_WARNING_SECS);
    }
    outln!("issuers ({}):", snapshot.issuers.len());
    for (index, issuer) in snapshot.issuers.iter().enumerate() {
        let algorithms: Vec<&str> = issuer.algorithms.iter().map(|a| a.as_str()).collect();
        let keys = match snapshot
            .remote
            .iter()
            .find(|r| std::sync::Arc::ptr_eq(&r.keys, &issuer.keys))
        {
            Some(remote) => match &remote.locator {
                Locator::Discovery { issuer } => format!("discovery {}", discovery_url(issuer)),
                Locator::JwksUri(uri) => format!("jwks_uri {uri}"),
            },
            None => issuer.keys.current().len().to_string(),
        };
        outln!(
            "  {:<12} iss={} algs=[{}] keys={} audiences={}",
            issuer.name,
            issuer.issuer,
            algorithms.join(","),
            keys,
            if issuer.check_audience {
                list(&issuer.audiences)
            } else {
                "any (check skipped)".into()
            }
        );
        if let Some(Some(introspector)) = snapshot.introspectors.get(index) {
            let settings = introspector.settings();
            outln!(
                "  {:<12} opaque tokens introspected at {} as client {} ({:?})",
                "",
                settings
                    .endpoint
                    .as_deref()
                    .unwrap_or("the discovery document's introspection_endpoint"),
                settings.client_id,
                settings.credential
            );
        }
    }
    if let Some(tokens) = &snapshot.identity_tokens {
        outln!("identity tokens: {}", tokens.summary());
    }
    outln!("routes ({}):", snapshot.routes.len());
    for ((route, matched), upstream) in snapshot.routes.iter().zip(&matches).zip(&upstreams) {
        let addrs = match upstream {
            Some(upstream) => upstream.pool.addrs().join(","),
            None => "(none: listen.authz only)".to_string(),
        };
        outln!("  {:<12} {matched} → {addrs}", route.name);
        outln!("  {:<12} {}", "", policy(&snapshot, route));
    }
    let unresolved = unresolved_upstreams(&upstreams)?;
    for warning in snapshot.warnings.iter().chain(&warnings).chain(&unresolved) {
        outln!("warning: {warning}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A warning per upstream name that resolves to nothing here, through the
/// resolver the gateway would use (`dns`). Not an error: where the gateway
/// runs, its DNS may answer what this machine's does not.
fn unresolved_upstreams(upstreams: &[Option<RouteUpstream>]) -> anyhow::Result<Vec<String>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let lookups = upstreams.iter().flatten().map(|upstream| async move {
        let route = upstream.pool.route();
        upstream
            .pool
            .unresolved_names()
            .await
            .into_iter()
            .map(move |(addr, why)| {
                format!(
                    "route {route:?}: upstream.addrs: {addr:?} does not resolve here ({why}); the gateway keeps asking, and answers 502 until it does"
                )
            })
    });
    Ok(runtime
        .block_on(futures_util::future::join_all(lookups))
        .into_iter()
        .flatten()
        .collect())
}

/// Where it listens: the proxy, admin and echo, and the authorization
/// listeners.
fn listeners(bootstrap: &Bootstrap) {
    outln!(
        "listen {}{} · admin {}{}",
        bootstrap
            .listen_http
            .as_deref()
            .unwrap_or("(clear text off)"),
        bootstrap
            .listen_https
            .as_deref()
            .map(|a| format!(" · https {a}"))
            .unwrap_or_default(),
        bootstrap.admin_addr,
        bootstrap
            .echo_addr
            .as_deref()
            .map(|a| format!(" · echo upstream {a}"))
            .unwrap_or_default()
    );
    if let Some(authz) = &bootstrap.authz {
        outln!(
            "authz {} ({}{})",
            authz.addr,
            authz.convention.as_str(),
            if authz.secret.is_some() {
                ", shared secret required"
            } else {
                ""
            }
        );
        if let Some(grpc) = authz.grpc_addr {
            outln!("authz grpc {grpc} (Envoy Authorization/Check)");
        }
    }
}

/// One line per certificate: hosts, files, notAfter. Compiling the config
/// has already checked that each key matches its certificate.
fn certificates(https: &HttpsState) {
    outln!("certificates ({}):", https.certificates.entries().len());
    for (i, entry) in https.certificates.entries().iter().enumerate() {
        let expires = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(entry.not_after.max(0) as u64),
        );
        outln!(
            "  {} {} (key {}) expires {expires}{}",
            list(&entry.hosts),
            entry.cert_path.display(),
            entry.key_path.display(),
            if i == 0 { " · default" } else { "" }
        );
    }
    if let Some(client_certs) = &https.client_certs {
        let mode = match client_certs.mode {
            ClientCertMode::Optional => "optional",
            ClientCertMode::Required => "required",
        };
        let roots = client_certs.roots;
        outln!(
            "client certificates: {mode}, chaining to {} ({roots} CA certificate{})",
            client_certs.ca_path.display(),
            if roots == 1 { "" } else { "s" }
        );
    }
}

pub fn mode_name(mode: AuthMode) -> &'static str {
    match mode {
        AuthMode::Required => "required",
        AuthMode::Optional => "optional",
        AuthMode::Off => "off",
        AuthMode::Audit => "audit",
    }
}

/// `/api/ (host api.example) · GET, POST`.
fn matcher(matcher: &MatchConfig) -> String {
    let host = matcher
        .host
        .as_deref()
        .map_or_else(|| "any host".to_string(), |host| format!("host {host}"));
    let methods = matcher.methods.as_ref().map_or_else(
        || "any method".to_string(),
        |methods| {
            let methods: Vec<String> = methods.iter().map(|m| m.to_ascii_uppercase()).collect();
            methods.join(", ")
        },
    );
    let https_only = match matcher.https_only {
        Some(HttpsOnly::Redirect) => " · HTTPS only (clear text redirected)",
        Some(HttpsOnly::Forbid) => " · HTTPS only (clear text refused)",
        None => "",
    };
    format!("{} ({host}) · {methods}{https_only}", matcher.path_prefix)
}

/// `auth required · issuers [a, b] · scopes all of [x] · claims …`.
fn policy(snapshot: &Snapshot, route: &CompiledRoute) -> String {
    let mut parts = vec![format!("auth {}", mode_name(route.mode))];
    if route.mode == AuthMode::Off {
        return parts.remove(0);
    }
    let RoutePolicy {
        issuers,
        audiences,
        scopes_all_of,
        scopes_any_of,
        claims,
        ..
    } = &route.policy;
    let issuers: Vec<&str> = issuers
        .iter()
        .map(|&i| snapshot.issuers[i].name.as_str())
        .collect();
    parts.push(format!("issuers {}", list(&issuers)));
    if !audiences.is_empty() {
        parts.push(format!("audiences {}", list(audiences)));
    }
    match (scopes_all_of.is_empty(), scopes_any_of.is_empty()) {
        (true, true) => parts.push("any scopes".into()),
        (false, true) => parts.push(format!("scopes all of {}", list(scopes_all_of))),
        (true, false) => parts.push(format!("scopes one of {}", list(scopes_any_of))),
        (false, false) => parts.push(format!(
            "scopes all of {} and one of {}",
            list(scopes_all_of),
            list(scopes_any_of)
        )),
    }
    for rule in claims {
        let mut wanted = Vec::new();
        if !rule.all_of.is_empty() {
            wanted.push(format!("all of {}", values(&rule.all_of)));
        }
        if !rule.any_of.is_empty() {
            wanted.push(format!("one of {}", values(&rule.any_of)));
        }
        if wanted.is_empty() {
            wanted.push("present".into());
        }
        parts.push(format!("claim {} {}", rule.claim, wanted.join(" and ")));
    }
    if let Some(token) = &route.forward.identity_token {
        parts.push(format!(
            "identity token for {} in {}, {}s",
            token.audience, token.header, token.ttl_secs
        ));
    }
    parts.join(" · ")
}

fn list<T: AsRef<str>>(items: &[T]) -> String {
    let items: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    format!("[{}]", items.join(", "))
}

fn values(items: &[Value]) -> String {
    let items: Vec<String> = items.iter().map(Value::to_string).collect();
    format!("[{}]", items.join(", "))
}
