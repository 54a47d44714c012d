//! Identity tokens: a short-lived JWT jwtgate signs for a route's backend,
//! naming the caller its verified token proved (`sub`, scopes, client,
//! the original issuer, chosen claims), so a backend verifies one signature
//! against jwtgate's JWK Set instead of trusting plain headers.
//!
//! One is signed per verified token and route, then reused while more than
//! half its lifetime is left: a request whose token the verified-token
//! cache knows finds its identity token in a table keyed by that cached
//! token's address (checked against a weak reference, so a freed token's
//! address can't match another's), without hashing anything.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use moka::sync::Cache;
use serde_json::{Map, Value, json};

use crate::auth::json::JsonRef;
use crate::auth::{IssuerVerifier, VerifiedToken, claims};
use crate::mint::Signer;

/// The path of the JWK Set and of the discovery document, on the admin
/// listener.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// Verifiers may keep the keys a while: a rotation lists the next key
/// ahead and keeps the last one, so five minutes is safe.
pub const DOCUMENT_CACHE_CONTROL: &str = "public, max-age=300";

/// Claims every identity token may carry, which `claims` can't name.
pub const RESERVED_CLAIMS: [&str; 11] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "nbf",
    "jti",
    "scope",
    "client_id",
    "original_iss",
    "cnf",
];

/// How many identity tokens are kept for reuse.
const MAX_CACHED: u64 = 100_000;

/// A route's `forward.identity_token`, compiled.
#[derive(Debug, Clone)]
pub struct IdentityTokenPlan {
    pub header: HeaderName,
    pub audience: String,
    pub ttl_secs: i64,
    pub claims: Vec<String>,
}

/// The signing key, the published keys and the tokens signed lately:
/// compiled with each config, so a reload that rotates keys starts afresh.
pub struct IdentityTokens {
    issuer: String,
    signer: Signer,
    kid: String,
    jwks: Bytes,
    discovery: Bytes,
    /// The proxy's listeners serve the keys too.
    on_proxy: bool,
    /// Every published key's `kid`, the signing one first.
    kids: Vec<String>,
    signed: Cache<(usize, usize), Signed>,
}

#[derive(Clone)]
struct Signed {
    token: Weak<VerifiedToken>,
    value: HeaderValue,
    /// Unix seconds: signed anew from here on.
    renew_at: i64,
}

impl std::fmt::Debug for IdentityTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityTokens")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl IdentityTokens {
    /// `keys` in config order: the first signs, all are published.
    pub fn new(issuer: String, keys: Vec<(String, Signer)>) -> Result<Self, String> {
        Self::published(issuer, keys, false)
    }

    /// [`IdentityTokens::new`], the keys served by the proxy's listeners
    /// too when `on_proxy`.
    pub fn published(
        issuer: String,
        keys: Vec<(String, Signer)>,
        on_proxy: bool,
    ) -> Result<Self, String> {
        let mut published = Vec::with_capacity(keys.len());
        for (kid, signer) in &keys {
            published.push(
                signer
                    .public_jwk(kid)
                    .map_err(|e| format!("key {kid:?}: {e}"))?,
            );
        }
        let kids = keys.iter().map(|(kid, _)| kid.clone()).collect();
        let (kid, signer) = keys
            .into_iter()
            .next()
            .ok_or("keys must list at least one key")?;
        let jwks = json!({ "keys": published }).to_string();
        let discovery = json!({
            "issuer": issuer,
            "jwks_uri": format!("{}{JWKS_PATH}", issuer.trim_end_matches('/')),
            "id_token_signing_alg_values_supported": [signer.algorithm().as_str()],
        })
        .to_string();
        Ok(Self {
            issuer,
            signer,
            kid,
            jwks: Bytes::from(jwks),
            discovery: Bytes::from(discovery),
            on_proxy,
            kids,
            signed: Cache::builder()
                .max_capacity(MAX_CACHED)
                .time_to_idle(Duration::from_secs(600))
                .build(),
        })
    }

    /// What `jwtgate check` says of them: the issuer, the signing key and
    /// its algorithm, every published `kid`, where they are published.
    pub fn summary(&self) -> String {
        format!(
            "iss={} signs with kid={} ({}) · publishes [{}] on the admin listener{}",
            self.issuer,
            self.kid,
            self.signer.algorithm(),
            self.kids.join(", "),
            if self.on_proxy {
                " and the proxy's"
            } else {
                ""
            }
        )
    }

    pub fn jwks(&self) -> &Bytes {
        &self.jwks
    }

    pub fn discovery(&self) -> &Bytes {
        &self.discovery
    }

    /// The document served at `path` (the JWK Set or the discovery
    /// document) and its media type; `None` for any other path.
    pub fn document(&self, path: &str) -> Option<(&'static str, &Bytes)> {
        match path {
            JWKS_PATH => Some(("application/jwk-set+json", &self.jwks)),
            DISCOVERY_PATH => Some(("application/json", &self.discovery)),
            _ => None,
        }
    }

    /// [`IdentityTokens::document`], for the proxy's listeners: only when
    /// they publish the keys.
    pub fn proxy_document(&self, path: &str) -> Option<(&'static str, &Bytes)> {
        self.on_proxy.then(|| self.document(path)).flatten()
    }

    /// The identity token for `token` on route `route`: the one signed
    /// earlier while more than half its lifetime is left, else a new one.
    /// `None` only if signing fails (logged).
    pub fn header_value(
        &self,
        plan: &IdentityTokenPlan,
        route: usize,
        token: &Arc<VerifiedToken>,
        issuer: &IssuerVerifier,
        now: i64,
    ) -> Option<HeaderValue> {
        let key = (Arc::as_ptr(token) as usize, route);
        if let Some(signed) = self.signed.get(&key)
            && now < signed.renew_at
            && signed
                .token
                .upgrade()
                .is_some_and(|kept| Arc::ptr_eq(&kept, token))
        {
            return Some(signed.value);
        }
        let (jwt, renew_at) = match self.sign(plan, token, issuer, now) {
            Ok(signed) => signed,
            Err(error) => {
                tracing::error!(kid = %self.kid, "identity token not signed: {error}");
                return None;
            }
        };
        let value = HeaderValue::from_str(&jwt).ok()?;
        let signed = Signed {
            token: Arc::downgrade(token),
            value: value.clone(),
            renew_at,
        };
        self.signed.insert(key, signed);
        Some(value)
    }

    /// A new identity token, and when to stop reusing it.
    fn sign(
        &self,
        plan: &IdentityTokenPlan,
        token: &VerifiedToken,
        issuer: &IssuerVerifier,
        now: i64,
    ) -> Result<(String, i64), String> {
        let exp = token
            .exp
            .map_or(now + plan.ttl_secs, |exp| exp.min(now + plan.ttl_secs));
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).map_err(|_| "no randomness")?;
        let mut body = Map::new();
        body.insert("iss".into(), Value::from(self.issuer.as_str()));
        if let Some(sub) = token.subject() {
            body.insert("sub".into(), Value::from(sub));
        }
        body.insert("aud".into(), Value::from(plan.audience.as_str()));
        body.insert("iat".into(), Value::from(now));
        body.insert("exp".into(), Value::from(exp));
        body.insert("jti".into(), Value::from(crate::digest::hex(&jti)));
        let scopes: Vec<&str> = claims::scopes(&token.claims, issuer.scope_claim.as_deref())
            .iter()
            .collect();
        if !scopes.is_empty() {
            body.insert("scope".into(), Value::from(scopes.join(" ")));
        }
        let client = ["client_id", "azp"]
            .iter()
            .find_map(|name| token.claims.get(name).and_then(JsonRef::as_str));
        if let Some(client) = client {
            body.insert("client_id".into(), Value::from(client));
        }
        body.insert("original_iss".into(), Value::from(issuer.issuer.as_str()));
        for path in &plan.claims {
            if let Some(value) = claims::lookup(&token.claims, path) {
                body.insert(path.clone(), value.to_value());
            }
        }
        let jwt = self
            .signer
            .sign(&body, Some(&self.kid), Some("JWT"))
            .map_err(|e| e.to_string())?;
        // Reused while more than half of it is left.
        Ok((jwt, now + (exp - now) / 2))
    }
}

#[cfg(test)]
mod tests;
