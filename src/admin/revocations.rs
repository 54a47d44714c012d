//! `/revocations` on the admin listener: `POST` revokes (a `jti`, or a
//! `sub`/`sid` cut-off), `GET` counts or looks one entry up, `DELETE`
//! lifts a `sub`/`sid` entry. Every call needs one of the configured admin
//! tokens as a bearer token, compared in constant time; without any the
//! endpoints answer 404. Each change is logged (target
//! `jwtgate::revocation`) with the name of the token that made it.

use std::sync::Arc;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use http::{Method, Response, StatusCode};
use pingora::protocols::http::ServerSession;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::digest::sha256;
use crate::pipeline::Snapshot;
use crate::state::revocation::tokens::AdminToken;
use crate::state::revocation::{Change, Entry, Kind, Revocations};

pub const PATH: &str = "/revocations";

/// Far more than any revocation request needs.
const MAX_BODY: usize = 16 * 1024;
/// Longest `jti`, `sub` or `sid` accepted.
const MAX_VALUE: usize = 1024;
/// A cut-off this far ahead is a mistake (milliseconds for seconds?): it
/// would refuse fresh logins until then.
const MAX_CUT_OFF_AHEAD: i64 = 60;

/// A refusal of the request, as a JSON body.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn bad(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            message: message.into(),
        }
    }
}

/// Answers one request on [`PATH`].
pub async fn handle(
    revocations: &Arc<Revocations>,
    snapshot: &Snapshot,
    session: &mut ServerSession,
) -> Response<Vec<u8>> {
    match respond(revocations, snapshot, session).await {
        Ok((status, body)) => reply(status, &body),
        Err(error) => {
            let mut response = reply(
                error.status,
                &json!({ "error": error.code, "message": error.message }),
            );
            if error.status == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer realm=\"jwtgate-admin\""),
                );
            }
            if error.status == StatusCode::METHOD_NOT_ALLOWED {
                response.headers_mut().insert(
                    http::header::ALLOW,
                    http::HeaderValue::from_static("GET, POST, DELETE"),
                );
            }
            response
        }
    }
}

async fn respond(
    revocations: &Arc<Revocations>,
    snapshot: &Snapshot,
    session: &mut ServerSession,
) -> Result<(StatusCode, Value), ApiError> {
    let tokens = &revocations.settings().admin_tokens;
    if tokens.is_empty() {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: "the revocation API is off: configure revocation.admin_tokens".into(),
        });
    }
    let header = session.req_header();
    let presented = bearer(&header.headers);
    let admin = presented
        .and_then(|token| authenticate(tokens, token))
        .ok_or_else(|| ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "send one of the configured admin tokens as a bearer token".into(),
        })?
        .to_string();
    let query = header.uri.query().unwrap_or_default().to_string();
    let query: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    match header.method.clone() {
        Method::GET => lookup(revocations, snapshot, &query),
        Method::POST => {
            let body = read_body(session, MAX_BODY).await?;
            revoke(revocations, snapshot, &admin, &body).await
        }
        Method::DELETE => lift(revocations, snapshot, &admin, &query).await,
        _ => Err(ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "method_not_allowed",
            message: "use GET, POST or DELETE".into(),
        }),
    }
}

/// The bearer token in `Authorization`, if there is one.
pub(super) fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
}

/// The name of the token presented, if it is one of `tokens`. Both sides
/// are compared as SHA-256 digests, every configured token each time,
/// so neither the length nor the position of a match shows in the timing.
pub fn authenticate<'a>(tokens: &'a [AdminToken], presented: &str) -> Option<&'a str> {
    let digest = sha256(presented.as_bytes());
    let mut found = None;
    for token in tokens {
        if verify_slices_are_equal(&digest, &token.digest).is_ok() {
            found = Some(token.name.as_str());
        }
    }
    found
}

/// The request body, refused once over `max` bytes.
pub(super) async fn read_body(
    session: &mut ServerSession,
    max: usize,
) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max {
                    return Err(ApiError {
                        status: StatusCode::PAYLOAD_TOO_LARGE,
                        code: "too_large",
                        message: format!("the body is over {max} bytes"),
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(error) => return Err(ApiError::bad(format!("cannot read the body: {error}"))),
        }
    }
}

/// `POST` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Revoke {
    issuer: String,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    sid: Option<String>,
    /// The revoked token's `exp` (for `jti`).
    #[serde(default)]
    exp: Option<i64>,
    /// The cut-off (for `sub`/`sid`); default: the next second.
    #[serde(default, alias = "cut_off")]
    not_before: Option<i64>,
}

/// The issuer named by its config name or its exact `iss`: its `iss`,
/// name and leeway.
fn issuer<'s>(snapshot: &'s Snapshot, named: &str) -> Result<(&'s str, &'s str, i64), ApiError> {
    snapshot
        .issuers
        .iter()
        .find(|i| i.name == named)
        .or_else(|| snapshot.issuers.iter().find(|i| i.issuer == named))
        .map(|i| (i.issuer.as_str(), i.name.as_str(), i.leeway_secs))
        .ok_or_else(|| {
            ApiError::bad(format!(
                "issuer {named:?} is not configured: name one by its name or its exact iss"
            ))
        })
}

/// Exactly one of `jti`, `sub`, `sid`, with a usable value.
fn one_target(
    jti: Option<String>,
    sub: Option<String>,
    sid: Option<String>,
) -> Result<(Kind, String), ApiError> {
    let given: Vec<(Kind, String)> = [(Kind::Jti, jti), (Kind::Sub, sub), (Kind::Sid, sid)]
        .into_iter()
        .filter_map(|(kind, value)| value.map(|v| (kind, v)))
        .collect();
    let [(kind, value)] = <[(Kind, String); 1]>::try_from(given)
        .map_err(|_| ApiError::bad("give exactly one of jti, sub or sid"))?;
    if value.is_empty() || value.len() > MAX_VALUE {
        return Err(ApiError::bad(format!(
            "{} must be 1 to {MAX_VALUE} bytes",
            kind.as_str()
        )));
    }
    Ok((kind, value))
}

fn entry_json(entry: &Entry, name: &str) -> Value {
    let at = if entry.kind == Kind::Jti {
        "expires_at"
    } else {
        "not_before"
    };
    json!({
        "kind": entry.kind.as_str(),
        "issuer": name,
        "iss": entry.iss,
        entry.kind.as_str(): entry.value,
        at: entry.at,
    })
}

async fn revoke(
    revocations: &Arc<Revocations>,
    snapshot: &Snapshot,
    admin: &str,
    body: &[u8],
) -> Result<(StatusCode, Value), ApiError> {
    let request: Revoke = serde_json::from_slice(body).map_err(|error| {
        ApiError::bad(format!(
            "the body must be a JSON object {{issuer, jti, exp}} or {{issuer, sub|sid, not_before?}}: {error}"
        ))
    })?;
    let (kind, value) = one_target(request.jti, request.sub, request.sid)?;
    let (iss, name, leeway) = issuer(snapshot, &request.issuer)?;
    let now = revocations.now();
    let at = match kind {
        Kind::Jti => {
            if request.not_before.is_some() {
                return Err(ApiError::bad(
                    "not_before applies to sub and sid; a jti entry takes the token's exp",
                ));
            }
            let exp = request
                .exp
                .ok_or_else(|| ApiError::bad("a jti revocation needs the token's exp"))?;
            exp.saturating_add(leeway)
        }
        Kind::Sub | Kind::Sid => {
            if request.exp.is_some() {
                return Err(ApiError::bad(
                    "exp applies to jti; a sub or sid entry takes not_before (default: now)",
                ));
            }
            // `iat` has whole seconds: a token issued earlier this second
            // must be covered too.
            let not_before = request.not_before.unwrap_or(now + 1);
            if not_before > now + MAX_CUT_OFF_AHEAD {
                return Err(ApiError::bad(format!(
                    "not_before {not_before} is more than {MAX_CUT_OFF_AHEAD}s in the future (seconds since the epoch are expected); it would refuse fresh logins until then"
                )));
            }
            not_before
        }
    };
    let entry = Entry {
        kind,
        iss: iss.to_string(),
        value,
        at,
    };
    if kind == Kind::Jti && at <= now {
        return Ok((
            StatusCode::OK,
            json!({
                "result": "already_expired",
                "message": "the token has expired (with the issuer's leeway): it is refused anyway, nothing was stored",
                "entry": entry_json(&entry, name),
            }),
        ));
    }
    let body = entry_json(&entry, name);
    let shared = revocations.settings().redis.is_some();
    let applied = apply(revocations, Change::Put(entry.clone())).await?;
    audit(Audited {
        admin,
        action: "revoke",
        kind,
        issuer: name,
        value: &entry.value,
        at: Some(entry.at),
        changed: Some(applied),
    });
    Ok((
        StatusCode::CREATED,
        json!({ "result": "revoked", "entry": body, "shared": shared }),
    ))
}

async fn apply(revocations: &Arc<Revocations>, change: Change) -> Result<bool, ApiError> {
    let revocations = revocations.clone();
    let outcome = tokio::task::spawn_blocking(move || revocations.apply_local(change)).await;
    match outcome {
        Ok(Ok(applied)) => Ok(applied.changed),
        Ok(Err(error)) => {
            tracing::error!("revocation: {error}");
            Err(ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                code: "storage_failed",
                message: "the change is in memory but could not be written to disk; see the log"
                    .into(),
            })
        }
        Err(panicked) => Err(ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: panicked.to_string(),
        }),
    }
}

fn query_target(query: &[(String, String)]) -> Result<Option<(Kind, String, String)>, ApiError> {
    let mut jti = None;
    let mut sub = None;
    let mut sid = None;
    let mut issuer = None;
    for (name, value) in query {
        let slot = match name.as_str() {
            "jti" => &mut jti,
            "sub" => &mut sub,
            "sid" => &mut sid,
            "issuer" => &mut issuer,
            other => {
                return Err(ApiError::bad(format!(
                    "unknown query parameter {other:?}: use issuer with one of jti, sub or sid"
                )));
            }
        };
        if slot.replace(value.clone()).is_some() {
            return Err(ApiError::bad(format!("{name} is given twice")));
        }
    }
    if jti.is_none() && sub.is_none() && sid.is_none() {
        if issuer.is_some() {
            return Err(ApiError::bad("issuer needs one of jti, sub or sid"));
        }
        return Ok(None);
    }
    let (kind, value) = one_target(jti, sub, sid)?;
    let issuer = issuer.ok_or_else(|| ApiError::bad("issuer is required with jti, sub or sid"))?;
    Ok(Some((kind, value, issuer)))
}

fn lookup(
    revocations: &Revocations,
    snapshot: &Snapshot,
    query: &[(String, String)],
) -> Result<(StatusCode, Value), ApiError> {
    let list = revocations.list();
    let Some((kind, value, named)) = query_target(query)? else {
        let mut body = json!({
            "entries": {
                "jti": list.len(Kind::Jti),
                "sub": list.len(Kind::Sub),
                "sid": list.len(Kind::Sid),
            },
            "persisted": revocations.settings().dir.is_some(),
        });
        if let Some(age) = revocations.sync_age() {
            body["redis"] = json!({
                "sync_age_seconds": age,
                "pending": revocations.pending().len(),
            });
        }
        return Ok((StatusCode::OK, body));
    };
    let (iss, name, _) = issuer(snapshot, &named)?;
    match list.get(kind, iss, &value) {
        Some(at) => {
            let entry = Entry {
                kind,
                iss: iss.to_string(),
                value,
                at,
            };
            Ok((
                StatusCode::OK,
                json!({ "revoked": true, "entry": entry_json(&entry, name) }),
            ))
        }
        None => Ok((StatusCode::NOT_FOUND, json!({ "revoked": false }))),
    }
}

async fn lift(
    revocations: &Arc<Revocations>,
    snapshot: &Snapshot,
    admin: &str,
    query: &[(String, String)],
) -> Result<(StatusCode, Value), ApiError> {
    let (kind, value, named) = query_target(query)?
        .ok_or_else(|| ApiError::bad("name the entry: ?issuer=…&sub=… or ?issuer=…&sid=…"))?;
    if kind == Kind::Jti {
        return Err(ApiError::bad(
            "a jti entry can't be lifted: it lapses by itself when the token expires",
        ));
    }
    let (iss, name, _) = issuer(snapshot, &named)?;
    if revocations.list().get(kind, iss, &value).is_none() {
        return Ok((StatusCode::NOT_FOUND, json!({ "result": "not_found" })));
    }
    let change = Change::Lift {
        kind,
        iss: iss.to_string(),
        value: value.clone(),
    };
    apply(revocations, change).await?;
    audit(Audited {
        admin,
        action: "lift",
        kind,
        issuer: name,
        value: &value,
        at: None,
        changed: None,
    });
    Ok((StatusCode::OK, json!({ "result": "lifted" })))
}

/// A change to the list, as the audit log records it.
struct Audited<'a> {
    admin: &'a str,
    action: &'static str,
    kind: Kind,
    issuer: &'a str,
    value: &'a str,
    /// When a revocation lapses or cuts off; none for a lift.
    at: Option<i64>,
    /// Whether a revocation changed the list.
    changed: Option<bool>,
}

/// One line per change, naming the admin token that made it.
fn audit(change: Audited<'_>) {
    tracing::info!(
        target: "jwtgate::revocation",
        admin = change.admin,
        action = change.action,
        kind = change.kind.as_str(),
        issuer = change.issuer,
        value = ?change.value,
        at = change.at,
        changed = change.changed,
        "revocation {}",
        if change.action == "lift" { "lifted" } else { "added" }
    );
}

fn reply(status: StatusCode, body: &Value) -> Response<Vec<u8>> {
    let mut bytes = body.to_string().into_bytes();
    bytes.push(b'\n');
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, bytes.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(bytes)
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, value: &str) -> AdminToken {
        AdminToken {
            name: name.into(),
            digest: sha256(value.as_bytes()),
            source: "env T".into(),
        }
    }

    #[test]
    fn authenticate_names_the_matching_token() {
        let tokens = [
            token("ops", "ops-token-0123456789"),
            token("idp", "idp-token-0123456789"),
        ];
        assert_eq!(authenticate(&tokens, "idp-token-0123456789"), Some("idp"));
        assert_eq!(authenticate(&tokens, "ops-token-0123456789"), Some("ops"));
        assert_eq!(authenticate(&tokens, "idp-token-012345678"), None);
        assert_eq!(authenticate(&tokens, ""), None);
    }

    #[test]
    fn query_targets_need_an_issuer_and_one_value() {
        let q = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            query_target(&pairs).map_err(|e| e.message)
        };
        assert!(q(&[]).unwrap().is_none());
        assert_eq!(
            q(&[("sub", "a b"), ("issuer", "main")]).unwrap(),
            Some((Kind::Sub, "a b".into(), "main".into()))
        );
        let refused: [(&[(&str, &str)], &str); 4] = [
            (&[("sub", "a")], "issuer is required"),
            (
                &[("sub", "a"), ("sid", "b"), ("issuer", "i")],
                "exactly one",
            ),
            (&[("x", "1")], "unknown query parameter"),
            (&[("sub", "a"), ("sub", "b"), ("issuer", "i")], "twice"),
        ];
        for (pairs, expected) in refused {
            let message = q(pairs).unwrap_err();
            assert!(message.contains(expected), "{pairs:?}: {message}");
        }
    }
}
