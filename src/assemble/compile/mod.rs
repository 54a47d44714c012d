//! Config → what the gateway serves from: the restart-only [`Bootstrap`],
//! the immutable [`Snapshot`] decisions are made against (names resolved to
//! indices, keys parsed into ready-to-verify form, header plans and the
//! route table built once, so the request path only reads), and each
//! route's upstream. Files, environment variables and host names are read
//! through the [`Sources`] passed in; live things (key stores, upstream
//! pools) come from the [`Running`] gateway when it has them.

mod authz;
mod bootstrap;
mod identity;
mod introspection;
mod issuers;
mod listeners;
mod routes;
mod sender;
mod shared;
mod signals;
mod status_lists;
mod telemetry;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_saphyr::Spanned;

pub use self::bootstrap::Bootstrap;
use super::sources::{Sources, System, resolve_path};
use crate::config::ConfigError;
use crate::config::schema::GatewayConfig;
use crate::introspection::Introspector;
use crate::keys::KeyStore;
use crate::keys::remote::RemoteIdentity;
use crate::pipeline::Snapshot;
use crate::state::status_list::StatusLists;
use crate::upstream::{PoolIdentity, RouteUpstream, UpstreamPool};

/// A compiled config: what only a restart can change, and what a reload
/// swaps.
#[derive(Debug)]
pub struct Compiled {
    pub bootstrap: Bootstrap,
    pub snapshot: Snapshot,
    /// Each route's upstream, in the order of [`Snapshot::routes`]; `None`
    /// for a route only the authorization listener serves.
    pub upstreams: Vec<Option<RouteUpstream>>,
}

/// The live things a running gateway already has, that a new config keeps
/// where its settings for them are unchanged: remote issuers' key stores,
/// by issuer identity, and upstream pools, by route and settings. At
/// startup there are none (`&()`).
pub trait Running {
    fn key_store(&self, identity: &RemoteIdentity) -> Option<Arc<KeyStore>>;
    fn upstream_pool(&self, identity: &PoolIdentity) -> Option<Arc<UpstreamPool>>;
    /// The running lists that check tokens as `compiled` would, if any.
    fn status_lists(&self, _compiled: &StatusLists) -> Option<Arc<StatusLists>> {
        None
    }
    /// The running introspector that calls and caches as `compiled`
    /// would, if any.
    fn introspector(&self, _compiled: &Introspector) -> Option<Arc<Introspector>> {
        None
    }
}

impl Running for () {
    fn key_store(&self, _: &RemoteIdentity) -> Option<Arc<KeyStore>> {
        None
    }

    fn upstream_pool(&self, _: &PoolIdentity) -> Option<Arc<UpstreamPool>> {
        None
    }
}

/// The snapshot of a config, with new, empty key stores for remote
/// issuers: for what serves nothing (`token verify`, tests, benches).
pub fn compile(path: &Path, config: GatewayConfig) -> Result<Snapshot, ConfigError> {
    compile_reusing(path, config, &()).map(|compiled| compiled.snapshot)
}

/// [`compile_with`] on this machine's files and environment.
pub fn compile_reusing(
    path: &Path,
    config: GatewayConfig,
    running: &dyn Running,
) -> Result<Compiled, ConfigError> {
    compile_with(path, config, running, &System)
}

/// Compiles the config read from `path`, keeping what `running` has where
/// the settings are unchanged (that is how a reload keeps keys and pools).
/// Local keys, certificates and secrets are read afresh from `sources`, so
/// a reload also picks up a rotated file.
pub fn compile_with(
    path: &Path,
    config: GatewayConfig,
    running: &dyn Running,
    sources: &dyn Sources,
) -> Result<Compiled, ConfigError> {
    let mut cx = Context {
        path,
        base_dir: path.parent().unwrap_or(Path::new(".")),
        sources,
        running,
        warnings: Vec::new(),
    };
    let served = listeners::compile(&config, &mut cx)?;
    let (issuers, remote) = issuers::compile(&config.issuers, &mut cx)?;
    let status_lists = status_lists::compile(&config.issuers, &issuers, &mut cx)?;
    let introspectors = introspection::compile(&config.issuers, &mut cx)?;
    let identity_tokens = identity::compile(config.identity_tokens.as_ref(), &cx)?;
    let mut config = config;
    let route_configs = std::mem::take(&mut config.routes);
    let routes = routes::compile(
        route_configs,
        &config,
        &issuers,
        served.https.is_some(),
        &mut cx,
    )?;
    let bootstrap = bootstrap::compile(&config, &remote, &mut cx)?;
    let snapshot = Snapshot {
        realm: config.server.realm,
        max_token_bytes: config.tokens.max_bytes,
        startup_grace: config.admin.startup_grace,
        remote,
        issuers,
        status_lists,
        introspects: introspectors.iter().any(Option::is_some),
        identity_tokens,
        introspectors,
        routes: routes.routes,
        router: routes.router,
        paths: served.paths,
        identity_headers: routes.identity_headers,
        warnings: cx.warnings,
        trusted_proxies: served.trusted_proxies,
        client_cert_header: served.client_cert_header,
        client_body_timeout: served.client_body_timeout,
        limits: served.limits,
        https: served.https,
        redirect_clear_text: served.redirect_clear_text,
    };
    Ok(Compiled {
        bootstrap,
        snapshot,
        upstreams: routes.upstreams,
    })
}

/// What every part of compiling shares: where the config is, what it may
/// read and keep, and the warnings it collects.
struct Context<'a> {
    path: &'a Path,
    base_dir: &'a Path,
    sources: &'a dyn Sources,
    running: &'a dyn Running,
    warnings: Vec<String>,
}

impl Context<'_> {
    /// An error about the config, at `span`'s line and column when given.
    fn error(&self, span: Option<&Spanned<String>>, message: impl Into<String>) -> ConfigError {
        ConfigError::new(
            self.path,
            span.map(|s| (s.referenced.line(), s.referenced.column())),
            message,
        )
    }

    /// An error about the entry `within` (`routes[2]`) whose `detail`
    /// starts with the field it is about (`cors.max_age: …`): at that
    /// field's line and column when the file has it, else at `fallback`.
    fn error_in(
        &self,
        within: &str,
        fallback: &Spanned<String>,
        detail: &str,
        message: String,
    ) -> ConfigError {
        match self.field_position(within, detail) {
            Some(position) => ConfigError::new(self.path, Some(position), message),
            None => self.error(Some(fallback), message),
        }
    }

    /// An error whose message starts with the field it is about
    /// (`listen.https.client_certs.ca: …`), at that field's line and column
    /// when the file has it.
    fn error_at_field(&self, within: &str, message: String) -> ConfigError {
        let detail = message.strip_prefix(within).unwrap_or(&message);
        let detail = detail.strip_prefix('.').unwrap_or(detail);
        let position = self.field_position(within, detail);
        ConfigError::new(self.path, position, message)
    }

    fn field_position(&self, within: &str, detail: &str) -> Option<(u64, u64)> {
        let sources = self.sources;
        crate::config::field_position(
            self.path,
            sources.read(self.path),
            &|name| sources.var(name),
            within,
            detail,
        )
    }

    /// A path from the config: relative ones are relative to the config
    /// file.
    fn file(&self, path: &Path) -> PathBuf {
        resolve_path(self.base_dir, path)
    }
}

#[cfg(test)]
mod tests;
