//! `routes`: each route's policy, token sources, forwarding plan, CORS
//! and rate limits, the route table, and where each route's requests go.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::Context;
use super::sender;
use crate::auth::IssuerVerifier;
use crate::auth::extract::TokenSources;
use crate::auth::policy::{ClaimRequirement, RoutePolicy};
use crate::config::ConfigError;
use crate::config::schema::{
    AuthConfig, AuthMode, GatewayConfig, HttpsOnly, IdentityTokenConfig, LongLivedConfig,
    RouteConfig, UpstreamConfig,
};
use crate::identity::{IdentityTokenPlan, RESERVED_CLAIMS};
use crate::pipeline::canonical;
use crate::pipeline::cors::CorsPolicy;
use crate::pipeline::router::Router;
use crate::pipeline::{ClaimHeader, CompiledRoute, ForwardPlan, LongLived};
use crate::state::rate_limit::RouteRateLimits;
use crate::telemetry::metrics::RouteSeries;
use crate::upstream::discovery::Dns;
use crate::upstream::tls as upstream_tls;
use crate::upstream::{RouteUpstream, UpstreamPool};

/// The routes of a snapshot, and the proxy's side of each.
pub(super) struct Routes {
    pub routes: Vec<Arc<CompiledRoute>>,
    pub router: Router<Arc<CompiledRoute>>,
    pub upstreams: Vec<Option<RouteUpstream>>,
    pub identity_headers: Vec<http::HeaderName>,
}

/// How many routes are compiled between two hand-backs of the memory their
/// parsed forms freed: the allocator would keep the pages freed meanwhile
/// for a while, and a reload of 10 000 routes would hold them on top of the
/// running config and the new one. Each hand-back takes well under a
/// millisecond.
const RELEASE_EVERY: usize = 1024;

/// What compiling one route needs from the rest of the config.
struct Shared<'a> {
    issuers: &'a [Arc<IssuerVerifier>],
    issuer_index: HashMap<&'a str, usize>,
    dns: Dns,
    https: bool,
    authz: bool,
    /// `identity_tokens` is set: routes may send identity tokens.
    signs: bool,
}

type RouteError<'a> = (Option<&'a Spanned<String>>, String);

/// Compiles `route_configs` (taken out of `config`), each parsed route
/// dropped as soon as it is compiled: a reload then holds the parsed routes,
/// the running config and the new one together only briefly, and the
/// memory of the parsed ones goes to the compiled ones.
#[expect(
    clippy::vec_box,
    reason = "each parsed route is freed as it is compiled, not with one buffer at the end"
)]
pub(super) fn compile(
    route_configs: Vec<Box<RouteConfig>>,
    config: &GatewayConfig,
    issuers: &[Arc<IssuerVerifier>],
    https: bool,
    cx: &mut Context<'_>,
) -> Result<Routes, ConfigError> {
    if route_configs.is_empty() {
        return Err(cx.error(None, "no routes are defined"));
    }
    let shared = Shared {
        issuers,
        issuer_index: issuers
            .iter()
            .enumerate()
            .map(|(i, issuer)| (issuer.name.as_str(), i))
            .collect(),
        dns: Dns::compile(&config.dns).map_err(|e| cx.error(None, e.to_string()))?,
        https,
        authz: config.listen.authz.is_some(),
        signs: config.identity_tokens.is_some(),
    };
    let identity_headers =
        identity_headers(&route_configs).map_err(|(index, claim, message)| {
            cx.error_in(
                &format!("routes[{index}]"),
                &route_configs[index].name,
                &format!("forward.claims.{claim}"),
                message,
            )
        })?;
    let count = route_configs.len();
    let mut routes = Routes {
        routes: Vec::with_capacity(count),
        router: Router::default(),
        upstreams: Vec::with_capacity(count),
        identity_headers,
    };
    let mut names = HashSet::with_capacity(count);
    for (index, route) in route_configs.into_iter().enumerate() {
        if index % RELEASE_EVERY == RELEASE_EVERY - 1 {
            crate::memory::release_freed();
        }
        let route = &route;
        let name = route.name.value.as_str();
        if !names.insert(name.to_string()) {
            return Err(cx.error(
                Some(&route.name),
                format!("route {name:?} is defined twice"),
            ));
        }
        reachable(route, &shared).map_err(|message| cx.error(Some(&route.name), message))?;
        let within = format!("routes[{index}]");
        let (compiled, upstream) =
            compile_route(route, routes.routes.len(), &shared, cx).map_err(|(span, message)| {
                let full = format!("route {name:?}: {message}");
                match span {
                    Some(span) => cx.error(Some(span), full),
                    None => cx.error_in(&within, &route.name, &message, full),
                }
            })?;
        let compiled = Arc::new(compiled);
        let methods = methods(route).map_err(|(i, method)| {
            cx.error_in(
                &within,
                &route.name,
                &format!("match.methods[{i}]"),
                format!("route {name:?}: match.methods: {method:?} is not an HTTP method"),
            )
        })?;
        routes.router.add(
            route.matcher.host.as_deref(),
            &route.matcher.path_prefix,
            methods,
            compiled.clone(),
        );
        routes.routes.push(compiled);
        routes.upstreams.push(upstream);
    }
    Ok(routes)
}

fn compile_route<'a>(
    route: &'a RouteConfig,
    index: usize,
    shared: &Shared<'_>,
    cx: &mut Context<'_>,
) -> Result<(CompiledRoute, Option<RouteUpstream>), RouteError<'a>> {
    let name = route.name.value.as_str();
    if let Some(parameter) = &route.auth.token_query {
        cx.warnings.push(format!(
            "route {name:?} accepts tokens in the query parameter {parameter:?}: URLs end up in logs, browser histories and Referer headers (RFC 6750 §5.3)"
        ));
    }
    if let Some(upstream) = &route.upstream {
        cx.warnings.extend(upstream_tls::warning(name, upstream));
    }
    check_match(route)?;
    let auth = &route.auth;
    let policy = policy(auth, shared)?;
    let series = RouteSeries::new(&policy.issuers);
    let sources = TokenSources {
        header: auth
            .token_header
            .as_ref()
            .map(|h| header_name(h).map(|n| n.as_str().to_string()))
            .transpose()
            .map_err(|e| (None, e))?,
        cookie: auth.token_cookie.clone(),
        query: auth.token_query.clone(),
    };
    let upstream = route
        .upstream
        .as_ref()
        .map(|upstream| route_upstream(name, upstream, shared, cx))
        .transpose()
        .map_err(|e| (None, e))?;
    let cors = route
        .cors
        .as_ref()
        .map(|cors| CorsPolicy::compile(cors, auth.mode, sources.header.as_deref()).map(Box::new))
        .transpose()
        .map_err(|e| (None, e.to_string()))?;
    let compiled = CompiledRoute {
        name: name.to_string(),
        index,
        mode: auth.mode,
        policy,
        sources,
        forward: forward_plan(route, shared.signs).map_err(|e| (None, e))?,
        cors,
        series,
        https_only: route.matcher.https_only,
        rate_limits: RouteRateLimits::compile(name, auth.mode, &route.rate_limits)
            .map_err(|e| (None, e.to_string()))?,
        authz_only: route.upstream.is_none(),
        long_lived: long_lived(&auth.long_lived, auth.mode).map_err(|e| (None, e))?,
        sender: sender::compile(auth, cx.base_dir, cx.sources).map_err(|e| (None, e))?,
    };
    Ok((compiled, upstream))
}

/// `auth.long_lived`: ending with the token is the default where a token
/// is required (an audit route, deciding as `required` would, only counts
/// what it would end); ending on a reload, wherever there is auth.
fn long_lived(config: &LongLivedConfig, mode: AuthMode) -> Result<LongLived, String> {
    if config.max_lifetime == Some(Duration::ZERO) {
        return Err("auth.long_lived.max_lifetime must be longer than 0s".into());
    }
    let needs_token = |setting: &str| {
        format!("auth.long_lived.{setting} needs a token: the route's auth.mode is off")
    };
    let end_with_token = match (config.end_with_token, mode) {
        (Some(true), AuthMode::Off) => return Err(needs_token("end_with_token")),
        (Some(end), _) => end,
        (None, mode) => matches!(mode, AuthMode::Required | AuthMode::Audit),
    };
    let end_on_reload = match (config.end_on_reload, mode) {
        (Some(true), AuthMode::Off) => return Err(needs_token("end_on_reload")),
        (_, AuthMode::Off) => false,
        (end, _) => end.unwrap_or(true),
    };
    Ok(LongLived {
        end_with_token,
        end_on_reload,
        enforce: mode != AuthMode::Audit,
        max_lifetime: config.max_lifetime,
    })
}

/// Whether anything can serve the route: an upstream or the authorization
/// listener, and the TLS listener when it is served over HTTPS only.
fn reachable(route: &RouteConfig, shared: &Shared<'_>) -> Result<(), String> {
    let name = &route.name.value;
    if route.upstream.is_none() && !shared.authz {
        return Err(format!(
            "route {name:?} has no upstream: only the authorization listener serves such a route, and listen.authz is not set"
        ));
    }
    if let (Some(https_only), false) = (route.matcher.https_only, shared.https) {
        return Err(format!(
            "route {name:?}: match.https_only is {} but listen.https is not set: no request could reach this route",
            https_only_name(https_only)
        ));
    }
    Ok(())
}

fn check_match(route: &RouteConfig) -> Result<(), RouteError<'_>> {
    let prefix = &route.matcher.path_prefix;
    if !prefix.starts_with('/') {
        return Err((
            None,
            format!("match.path_prefix {prefix:?} must start with /"),
        ));
    }
    if let Some(host) = &route.matcher.host
        && !matches!(canonical::host_key(host.as_bytes()), Ok(Some(_)))
    {
        return Err((
            None,
            format!("match.host {host:?} is not a host name or address (e.g. api.example.com)"),
        ));
    }
    Ok(())
}

/// `match.methods`, upper-cased; `Err` names the one that is no method,
/// and its index.
fn methods(route: &RouteConfig) -> Result<Option<Vec<http::Method>>, (usize, &String)> {
    let Some(methods) = &route.matcher.methods else {
        return Ok(None);
    };
    methods
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.to_ascii_uppercase()
                .parse::<http::Method>()
                .map_err(|_| (i, m))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The route's issuers (every issuer when it names none), audiences,
/// scopes and claim rules.
fn policy<'a>(auth: &'a AuthConfig, shared: &Shared<'_>) -> Result<RoutePolicy, RouteError<'a>> {
    let issuer_indices: Vec<usize> = if auth.issuers.is_empty() {
        (0..shared.issuers.len()).collect()
    } else {
        auth.issuers
            .iter()
            .map(|name| {
                shared
                    .issuer_index
                    .get(name.value.as_str())
                    .copied()
                    .ok_or_else(|| {
                        (
                            Some(name),
                            format!("issuer {:?} is not defined", name.value),
                        )
                    })
            })
            .collect::<Result<_, _>>()?
    };
    if auth.mode != AuthMode::Off && issuer_indices.is_empty() {
        return Err((
            None,
            "auth is required but no issuers are configured (set auth.mode: off for a public route)"
                .into(),
        ));
    }
    let claims = auth
        .claims
        .iter()
        .map(|rule| ClaimRequirement {
            claim: rule.claim.clone(),
            any_of: rule.any_of.clone(),
            all_of: rule.all_of.clone(),
        })
        .collect();
    Ok(RoutePolicy::new(
        issuer_indices,
        auth.audiences.clone(),
        auth.scopes.all_of.clone(),
        auth.scopes.any_of.clone(),
        claims,
    ))
}

fn forward_plan(route: &RouteConfig, signs: bool) -> Result<ForwardPlan, String> {
    Ok(ForwardPlan {
        claims: route
            .forward
            .claims
            .iter()
            .map(|(claim, header)| {
                let name = header_name(header)?;
                Ok(ClaimHeader {
                    claim: claim.clone(),
                    sent_as: bytes::Bytes::copy_from_slice(name.as_str().as_bytes()),
                    name,
                })
            })
            .collect::<Result<_, String>>()?,
        strip_authorization: route.forward.strip_authorization,
        reserved_prefix: spoof_form(&route.forward.reserved_prefix),
        identity_token: route
            .forward
            .identity_token
            .as_ref()
            .map(|config| identity_token_plan(config, signs))
            .transpose()?,
    })
}

/// `forward.identity_token`, checked: there must be keys to sign with, an
/// audience, a lifetime, and no claim that would override one jwtgate sets.
fn identity_token_plan(
    config: &IdentityTokenConfig,
    signs: bool,
) -> Result<IdentityTokenPlan, String> {
    if !signs {
        return Err(
            "forward.identity_token needs the top-level identity_tokens block (issuer and keys)"
                .into(),
        );
    }
    if config.audience.is_empty() {
        return Err("forward.identity_token.audience must name the backend".into());
    }
    if config.ttl.as_secs() == 0 {
        return Err("forward.identity_token.ttl must be at least 1s".into());
    }
    if let Some(claim) = config
        .claims
        .iter()
        .find(|claim| RESERVED_CLAIMS.contains(&claim.as_str()))
    {
        return Err(format!(
            "forward.identity_token.claims: {claim:?} is set by jwtgate itself"
        ));
    }
    Ok(IdentityTokenPlan {
        header: header_name(&config.header)?,
        audience: config.audience.clone(),
        ttl_secs: config.ttl.as_secs() as i64,
        claims: config.claims.clone(),
    })
}

/// A route's upstream: the running pool when one has the same settings,
/// else a new one (IP addresses are endpoints at once; names are resolved
/// when the runtime starts it).
fn route_upstream(
    route: &str,
    config: &UpstreamConfig,
    shared: &Shared<'_>,
    cx: &Context<'_>,
) -> Result<RouteUpstream, String> {
    if config.keepalive_timeout.is_zero() {
        return Err("upstream.keepalive_timeout must be positive".into());
    }
    let sources = cx.sources;
    let tls = upstream_tls::compile(config, cx.base_dir, &|path| sources.read(path))
        .map_err(|e| e.to_string())?;
    let pool = UpstreamPool::compile(route, config, &shared.dns, tls.as_ref())
        .map_err(|e| e.to_string())?;
    let pool = cx
        .running
        .upstream_pool(pool.identity())
        .unwrap_or_else(|| Arc::new(pool));
    Ok(RouteUpstream {
        pool,
        connect_timeout: config.connect_timeout,
        read_timeout: config.read_timeout,
        write_timeout: config.write_timeout,
        keepalive_timeout: config.keepalive_timeout,
        tls,
    })
}

fn https_only_name(https_only: HttpsOnly) -> &'static str {
    match https_only {
        HttpsOnly::Redirect => "redirect",
        HttpsOnly::Forbid => "forbid",
    }
}

fn header_name(name: &str) -> Result<http::HeaderName, String> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))
}

/// The union of every claim header across routes, in the spelling spoofed
/// copies are matched in (see [`spoof_form`]). Hop-by-hop and framing
/// headers can't be identity headers: overwriting them would break HTTP.
fn identity_headers(
    routes: &[Box<RouteConfig>],
) -> Result<Vec<http::HeaderName>, (usize, &str, String)> {
    const FORBIDDEN: [&str; 8] = [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "te",
        "authorization",
        "cookie",
    ];
    let mut names = Vec::new();
    for (index, route) in routes.iter().enumerate() {
        let identity_token = route
            .forward
            .identity_token
            .as_ref()
            .map(|token| ("identity_token", token.header.as_str()));
        let claims = route
            .forward
            .claims
            .iter()
            .map(|(claim, header)| (claim.as_str(), header.as_str()));
        for (claim, header) in claims.chain(identity_token) {
            let name = header_name(header).map_err(|e| (index, claim, e))?;
            if FORBIDDEN.contains(&name.as_str()) {
                return Err((
                    index,
                    claim,
                    format!("{:?} cannot carry a claim", name.as_str()),
                ));
            }
            names.push(header_name(&spoof_form(name.as_str())).expect("still a header name"));
        }
    }
    names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Ok(names)
}

/// How a client's header is compared with the identity headers: lower
/// case, `_` read as `-`, since CGI/WSGI-style backends read `X_User_Id` as
/// `X-User-Id`. Both sides must be in this form, configured names included.
fn spoof_form(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(
        end_with_token: Option<bool>,
        end_on_reload: Option<bool>,
        max_lifetime: Option<Duration>,
    ) -> LongLivedConfig {
        LongLivedConfig {
            end_with_token,
            end_on_reload,
            max_lifetime,
        }
    }

    #[test]
    fn long_lived_connections_end_with_the_token_on_required_routes_by_default() {
        let hour = Some(Duration::from_secs(3600));
        let compiled = |c, mode| long_lived(&c, mode);
        let required = compiled(config(None, None, None), AuthMode::Required).unwrap();
        assert!(required.end_with_token && required.end_on_reload && required.enforce);
        let optional = compiled(config(None, None, None), AuthMode::Optional).unwrap();
        assert!(!optional.end_with_token && optional.end_on_reload);
        let off = compiled(config(None, None, None), AuthMode::Off).unwrap();
        assert!(
            !off.arms(),
            "nothing could end a connection of an off route"
        );
        assert!(
            compiled(config(Some(true), None, None), AuthMode::Optional)
                .unwrap()
                .end_with_token
        );
        // An audit route decides as required would, but ends nothing for
        // its token: it only counts; a lifetime still holds.
        let audit = compiled(config(None, None, hour), AuthMode::Audit).unwrap();
        assert!(audit.end_with_token && audit.end_on_reload && !audit.enforce);
        assert_eq!(audit.max_lifetime, hour);
        let kept = compiled(config(Some(false), Some(false), None), AuthMode::Required).unwrap();
        assert!(!kept.arms(), "nothing to end it: nothing armed");
        assert!(compiled(config(Some(true), None, None), AuthMode::Off).is_err());
        assert!(compiled(config(None, Some(true), None), AuthMode::Off).is_err());
        assert!(compiled(config(None, None, Some(Duration::ZERO)), AuthMode::Required).is_err());
    }
}
