//! Route matching: optional exact host, longest path prefix on segment
//! boundaries, optional methods. Lookup walks the request path's own prefixes
//! from longest to shortest and probes a hash map for each, so its cost
//! depends on the path's depth, not on how many routes exist.

use std::collections::HashMap;

/// What the router stores per route; `T` is the compiled route.
#[derive(Debug)]
struct Entry<T> {
    methods: Option<Vec<http::Method>>,
    route: T,
}

#[derive(Debug)]
pub struct Router<T> {
    /// host (lower-case, no port) → prefix → entries, in config order.
    by_host: HashMap<String, HashMap<String, Vec<Entry<T>>>>,
    any_host: HashMap<String, Vec<Entry<T>>>,
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
    pub fn add(
        &mut self,
        host: Option<&str>,
        prefix: &str,
        methods: Option<Vec<http::Method>>,
        route: T,
    ) {
        let prefix = normalize_prefix(prefix);
        let table = match host {
            Some(host) => self.by_host.entry(host.to_ascii_lowercase()).or_default(),
            None => &mut self.any_host,
        };
        table
            .entry(prefix)
            .or_default()
            .push(Entry { methods, route });
    }

    /// The best route for a request: routes for the request's host first,
    /// then host-less routes; within each, the longest matching prefix whose
    /// method list admits the method.
    pub fn find(&self, host: Option<&str>, path: &str, method: &http::Method) -> Option<&T> {
        // Most configs route by path alone: skip the host work then.
        if !self.by_host.is_empty()
            && let Some(table) = host.and_then(|h| self.by_host.get(host_key(h).as_ref()))
            && let Some(route) = longest(table, path, method)
        {
            return Some(route);
        }
        longest(&self.any_host, path, method)
    }
}

fn longest<'a, T>(
    table: &'a HashMap<String, Vec<Entry<T>>>,
    path: &str,
    method: &http::Method,
) -> Option<&'a T> {
    if table.is_empty() {
        return None;
    }
    let path = path.split('?').next().unwrap_or("/");
    let mut candidate = path.trim_end_matches('/');
    loop {
        let key = if candidate.is_empty() { "/" } else { candidate };
        if let Some(entries) = table.get(key) {
            let admitted = entries.iter().find(|e| {
                e.methods
                    .as_ref()
                    .is_none_or(|methods| methods.contains(method))
            });
            if let Some(entry) = admitted {
                return Some(&entry.route);
            }
        }
        if candidate.is_empty() {
            return None;
        }
        // Step back to the previous segment boundary.
        candidate = &candidate[..candidate.rfind('/').unwrap_or(0)];
    }
}

/// Lower-cased, without a port, so `API.example.com:8080` finds
/// `api.example.com`. Borrows when the host is already lower-case.
fn host_key(host: &str) -> std::borrow::Cow<'_, str> {
    let name = match host.rsplit_once(':') {
        Some((name, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!name.contains(':') || name.ends_with(']')) =>
        {
            name
        }
        _ => host,
    };
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(name.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(name)
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

/// Resolves dot segments and merges repeated slashes (RFC 3986 §5.2.4), after
/// decoding percent-encoded dots, so `/public/../admin` or `//admin` cannot
/// match one route here and reach another upstream. Returns `None` when the
/// path is already normal, to spare an allocation on the common path.
pub fn normalize_path(path: &str) -> Option<String> {
    let needs_work =
        path.contains("//") || path.contains("/.") || path.contains("%2e") || path.contains("%2E");
    if !needs_work {
        return None;
    }
    let decoded = path.replace("%2e", ".").replace("%2E", ".");
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for segment in &segments {
        normal.push('/');
        normal.push_str(segment);
    }
    let trailing_slash =
        decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    if normal.is_empty() || trailing_slash {
        normal.push('/');
    }
    (normal != path).then_some(normal)
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
    fn methods_select_among_equal_prefixes_and_fall_back() {
        let r = router();
        assert_eq!(
            r.find(None, "/api/orders/1", &Method::POST),
            Some(&"orders-write")
        );
        assert_eq!(r.find(None, "/api/orders/1", &Method::DELETE), Some(&"api"));
    }

    #[test]
    fn host_routes_win_and_ignore_case_and_port() {
        let r = router();
        assert_eq!(
            r.find(Some("ADMIN.example.com:8443"), "/api", &Method::GET),
            Some(&"admin-host")
        );
        assert_eq!(
            r.find(Some("other.example.com"), "/api", &Method::GET),
            Some(&"api")
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

    #[test]
    fn paths_are_normalized() {
        assert_eq!(normalize_path("/a/b"), None);
        assert_eq!(
            normalize_path("/public/../admin").as_deref(),
            Some("/admin")
        );
        assert_eq!(normalize_path("//admin").as_deref(), Some("/admin"));
        assert_eq!(
            normalize_path("/public/%2e%2E/admin").as_deref(),
            Some("/admin")
        );
        assert_eq!(normalize_path("/a/./b/").as_deref(), Some("/a/b/"));
        assert_eq!(normalize_path("/../..").as_deref(), Some("/"));
    }
}
