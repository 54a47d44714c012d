//! What a reloaded config makes of a connection an earlier one let outlive
//! its request (see [`crate::state::live`]): the same route rules a request
//! is decided by ([`crate::auth::policy::RoutePolicy::readmit`]), applied
//! to the token that opened it.

use crate::auth::VerifiedToken;
use crate::config::schema::AuthMode;
use crate::state::live::Verdict;

use super::Snapshot;

/// The verdict of `snapshot` on a connection of the route named `route`,
/// opened with `token` (from the issuer whose `iss` is `iss`) or with none.
/// A removed route ends it; a route that opts out with
/// `auth.long_lived.end_on_reload: false` keeps it; otherwise it ends when
/// the route would now refuse it, or on an `audit` route would end.
pub fn on_reload(
    snapshot: &Snapshot,
    route: &str,
    token: Option<&VerifiedToken>,
    iss: &str,
) -> Verdict {
    let Some(route) = snapshot.routes.iter().find(|r| r.name == route) else {
        return Verdict::End;
    };
    if !route.long_lived.end_on_reload {
        return Verdict::Keep;
    }
    let admitted = match (token, route.mode) {
        (_, AuthMode::Off) => true,
        (None, AuthMode::Optional) => true,
        // Without a token it was never admitted as `required`, and was
        // counted `would_deny` when it opened.
        (None, AuthMode::Audit) => true,
        (None, AuthMode::Required) => false,
        (Some(token), _) => route.policy.readmit(token, iss, &snapshot.issuers).is_ok(),
    };
    match (admitted, route.mode) {
        (true, _) => Verdict::Keep,
        (false, AuthMode::Audit) => Verdict::WouldEnd,
        (false, _) => Verdict::End,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::pipeline::support_tests::{MAIN, NOW, compiled, rs256};

    /// One route, `ws`, whose `AUTH` each case fills; `main` and `other`
    /// verify with the fixture JWKS.
    const CONFIG: &str = r#"
listen: { http: "127.0.0.1:0" }
admin: { addr: "127.0.0.1:1" }
issuers:
  - { name: main, issuer: "https://main.pipeline.test", algorithms: [RS256], audiences: [api], jwks_file: jwks.json }
  - { name: other, issuer: "https://other.pipeline.test", algorithms: [RS256], audiences: [api], jwks_file: jwks.json }
routes:
  - { name: ws, match: { path_prefix: /ws }, upstream: { addrs: ["127.0.0.1:9"] }, auth: AUTH }
"#;

    fn snapshot(auth: &str) -> Snapshot {
        compiled(&CONFIG.replace("AUTH", auth))
    }

    /// A token with scope `a` and `tenant: acme`, as `snapshot`'s route
    /// verified it.
    fn verified(snapshot: &Snapshot) -> Arc<VerifiedToken> {
        let claims = json!({
            "iss": MAIN, "sub": "alice", "aud": "api", "iat": NOW, "exp": NOW + 300,
            "scope": "a", "tenant": "acme",
        });
        let token = rs256(&claims);
        snapshot.routes[0]
            .policy
            .authorize(&token, &snapshot.issuers, NOW, 8192, None, &mut ())
            .expect("the first config admits the token")
    }

    #[test]
    fn a_reload_ends_what_the_route_now_refuses() {
        let before = snapshot("{ issuers: [main, other], scopes: { all_of: [a] } }");
        let token = verified(&before);
        let verdict = |auth: &str| on_reload(&snapshot(auth), "ws", Some(&token), MAIN);
        assert_eq!(verdict("{ issuers: [main] }"), Verdict::Keep);
        assert_eq!(
            verdict(
                "{ issuers: [main], scopes: { all_of: [a] }, claims: [{ claim: tenant, any_of: [acme] }] }"
            ),
            Verdict::Keep,
            "rules the token still meets"
        );
        assert_eq!(
            verdict("{ issuers: [main], scopes: { all_of: [b] } }"),
            Verdict::End
        );
        assert_eq!(
            verdict("{ issuers: [other] }"),
            Verdict::End,
            "issuer removed"
        );
        assert_eq!(
            verdict("{ issuers: [main], audiences: [billing] }"),
            Verdict::End
        );
        assert_eq!(
            verdict("{ issuers: [main], claims: [{ claim: tenant, any_of: [other] }] }"),
            Verdict::End
        );
        assert_eq!(
            verdict(
                "{ issuers: [main], scopes: { all_of: [b] }, long_lived: { end_on_reload: false } }"
            ),
            Verdict::Keep,
            "the route opts out"
        );
        assert_eq!(
            verdict("{ mode: audit, issuers: [main], scopes: { all_of: [b] } }"),
            Verdict::WouldEnd
        );
        assert_eq!(verdict("{ mode: off }"), Verdict::Keep);
        let renamed = snapshot("{ issuers: [main] }");
        assert_eq!(
            on_reload(&renamed, "gone", Some(&token), MAIN),
            Verdict::End,
            "a removed route"
        );
    }

    #[test]
    fn an_anonymous_connection_ends_where_a_token_is_now_required() {
        let verdict = |auth: &str| on_reload(&snapshot(auth), "ws", None, "");
        assert_eq!(
            verdict("{ mode: optional, issuers: [main] }"),
            Verdict::Keep
        );
        assert_eq!(verdict("{ issuers: [main] }"), Verdict::End);
        assert_eq!(verdict("{ mode: audit, issuers: [main] }"), Verdict::Keep);
    }
}
