//! Route matching: optional host, longest path prefix on segment
//! boundaries, optional methods. Lookup walks the request path's own prefixes
//! from longest to shortest and probes a hash map for each, so its cost
//! depends on the path's depth, not on how many routes exist. Paths and
//! hosts arrive in canonical form (see `canonical`).

use std::collections::HashMap;

use super::canonical;

/// What the router stores per route; `T` is the compiled route.
#[derive(Debug)]
struct Entry<T> {
    methods: Option<Vec<http::Method>>,
    route: T,
}

/// The routes sharing one prefix, in config order.
#[derive(Debug)]
struct Slot<T> {
    entries: Vec<Entry<T>>,
    /// The `Allow` header value for a method none of them admits, built
    /// when routes are added so a 405 costs no work.
    allow: String,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            allow: String::new(),
        }
    }
}

/// The router's answer for a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a, T> {
    Route(&'a T),
    /// The longest matching prefix has routes, none for this method: the
    /// request is not handed to a shorter prefix, which would let
    /// `DELETE /admin` reach a public `/` route.
    MethodNotAllowed {
        allow: &'a str,
    },
    NoRoute,
}

impl<'a, T> Lookup<'a, T> {
    pub fn route(self) -> Option<&'a T> {
        match self {
            Lookup::Route(route) => Some(route),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct Router<T> {
    /// host (canonical: lower case, no port, no trailing dot) → prefix → routes.
    by_host: HashMap<String, HashMap<String, Slot<T>>>,
    any_host: HashMap<String, Slot<T>>,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Self {
            by_host: HashMap::new(),
            any_host: HashMap::new(),
        }
    }
}

impl<T> Router<T> {
    /// `prefix` must start with `/`; a trailing `/` (other than the root) is
    /// dropped, since `/api/` and `/api` match the same requests here.
    /// `host` is folded by [`canonical::host_key`] (config compilation has
    /// already refused a host it can't read).
    pub fn add(
        &mut self,
        host: Option<&str>,
        prefix: &str,
        methods: Option<Vec<http::Method>>,
        route: T,
    ) {
        let prefix = normalize_prefix(prefix);
        let table = match host {
            Some(host) => {
                let key = match canonical::host_key(host.as_bytes()) {
                    Ok(Some(key)) => key.into_owned(),
                    _ => host.to_ascii_lowercase(),
                };
                self.by_host.entry(key).or_default()
            }
            None => &mut self.any_host,
        };
        let slot = table.entry(prefix).or_default();
        if let Some(methods) = &methods {
            for method in methods {
                let listed = slot.allow.split(", ").any(|m| m == method.as_str());
                if !listed {
                    if !slot.allow.is_empty() {
                        slot.allow.push_str(", ");
                    }
                    slot.allow.push_str(method.as_str());
                }
            }
        }
        slot.entries.push(Entry { methods, route });
    }

    /// The route for a request: routes for the request's host first, then
    /// host-less routes; within each, the longest matching prefix decides,
    /// by its first route admitting the method. `host` must be a routing key
    /// from [`canonical::host_key`].
    pub fn lookup(&self, host: Option<&str>, path: &str, method: &http::Method) -> Lookup<'_, T> {
        // Most configs route by path alone: skip the host work then.
        if !self.by_host.is_empty()
            && let Some(table) = host.and_then(|h| self.by_host.get(h))
        {
            let found = longest(table, path, method);
            if !matches!(found, Lookup::NoRoute) {
                return found;
            }
        }
        longest(&self.any_host, path, method)
    }

    /// [`Router::lookup`]'s route, if it found one.
    pub fn find(&self, host: Option<&str>, path: &str, method: &http::Method) -> Option<&T> {
        self.lookup(host, path, method).route()
    }
}

fn longest<'a, T>(
    table: &'a HashMap<String, Slot<T>>,
    path: &str,
    method: &http::Method,
) -> Lookup<'a, T> {
    if table.is_empty() {
        return Lookup::NoRoute;
    }
    let path = path.split('?').next().unwrap_or("/");
    let mut candidate = path.trim_end_matches('/');
    loop {
        let key = if candidate.is_empty() { "/" } else { candidate };
        if let Some(slot) = table.get(key) {
            let admitted = slot.entries.iter().find(|e| {
                e.methods
                    .as_ref()
                    .is_none_or(|methods| methods.contains(method))
            });
            return match admitted {
                Some(entry) => Lookup::Route(&entry.route),
                None => Lookup::MethodNotAllowed { allow: &slot.allow },
            };
        }
        if candidate.is_empty() {
            return Lookup::NoRoute;
        }
        // Step back to the previous segment boundary.
        candidate = &candidate[..candidate.rfind('/').unwrap_or(0)];
    }
}

fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn router() -> Router<&'static str> {
        let mut r = Router::default();
        r.add(None, "/", None, "root");
        r.add(None, "/api", None, "api");
        r.add(None, "/api/orders/", Some(vec![Method::GET]), "orders-read");
        r.add(
            None,
            "/api/orders",
            Some(vec![Method::POST]),
            "orders-write",
        );
        r.add(Some("Admin.Example.com"), "/", None, "admin-host");
        r
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let r = router();
        let get = Method::GET;
        assert_eq!(r.find(None, "/api/orders/42", &get), Some(&"orders-read"));
        assert_eq!(r.find(None, "/api/orders", &get), Some(&"orders-read"));
        assert_eq!(r.find(None, "/api/ordersx", &get), Some(&"api"));
        assert_eq!(r.find(None, "/apix", &get), Some(&"root"));
        assert_eq!(r.find(None, "/api?x=/api/orders", &get), Some(&"api"));
        assert_eq!(r.find(None, "/", &get), Some(&"root"));
    }

    #[test]
    fn methods_select_among_equal_prefixes_and_never_fall_back() {
        let r = router();
        assert_eq!(
            r.find(None, "/api/orders/1", &Method::POST),
            Some(&"orders-write")
        );
        // `/api` admits DELETE, but `/api/orders` is the longest prefix.
        assert_eq!(
            r.lookup(None, "/api/orders/1", &Method::DELETE),
            Lookup::MethodNotAllowed { allow: "GET, POST" }
        );
        assert_eq!(
            r.lookup(None, "/api/x", &Method::DELETE),
            Lookup::Route(&"api")
        );
    }

    #[test]
    fn allow_lists_each_method_once_in_config_order() {
        let mut r = Router::default();
        r.add(None, "/a", Some(vec![Method::PUT, Method::GET]), 1);
        r.add(None, "/a/", Some(vec![Method::GET, Method::POST]), 2);
        assert_eq!(
            r.lookup(None, "/a", &Method::DELETE),
            Lookup::MethodNotAllowed {
                allow: "PUT, GET, POST"
            }
        );
    }

    #[test]
    fn a_host_route_refusing_the_method_does_not_fall_back_to_host_less_routes() {
        let mut r = Router::default();
        r.add(Some("admin.example"), "/", Some(vec![Method::GET]), "admin");
        r.add(None, "/", None, "public");
        assert_eq!(
            r.lookup(Some("admin.example"), "/x", &Method::POST),
            Lookup::MethodNotAllowed { allow: "GET" }
        );
        assert_eq!(
            r.find(Some("other.example"), "/x", &Method::POST),
            Some(&"public")
        );
    }

    #[test]
    fn host_routes_win_and_are_stored_by_routing_key() {
        let r = router();
        assert_eq!(
            r.find(Some("admin.example.com"), "/api", &Method::GET),
            Some(&"admin-host")
        );
        assert_eq!(
            r.find(Some("other.example.com"), "/api", &Method::GET),
            Some(&"api")
        );
        let mut r = Router::default();
        r.add(Some("Admin.Example.:8443"), "/", None, "admin");
        assert_eq!(
            r.find(Some("admin.example"), "/", &Method::GET),
            Some(&"admin")
        );
    }

    #[test]
    fn no_match_without_a_root_route() {
        let mut r = Router::default();
        r.add(None, "/echo", None, "echo");
        assert_eq!(r.find(None, "/", &Method::GET), None);
        assert_eq!(r.find(None, "/echoes", &Method::GET), None);
        assert_eq!(r.find(None, "/echo/x", &Method::GET), Some(&"echo"));
    }
}
