//! Fetching keys over HTTP: OIDC discovery and JWK Sets, with timeouts, a
//! response-size cap and HTTPS required unless an issuer opts out (for
//! loopback tests). Nothing here runs on the request path.

use std::time::Duration;

use serde_json::Value;

/// How an issuer's keys are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locator {
    /// `{issuer}/.well-known/openid-configuration`, then its `jwks_uri`.
    Discovery {
        issuer: String,
    },
    JwksUri(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSettings {
    pub connect_timeout: Duration,
    /// For the whole request, body included.
    pub timeout: Duration,
    pub max_bytes: usize,
    pub allow_http: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: {message}")]
    Http {
        url: String,
        message: String,
        /// The request ran out of time (rather than failing outright).
        timeout: bool,
    },
    #[error("{url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: response larger than {max} bytes")]
    TooLarge { url: String, max: usize },
    #[error("{url}: not JSON: {message}")]
    NotJson { url: String, message: String },
    #[error("discovery document {url}: {message}")]
    Discovery { url: String, message: String },
    #[error(
        "discovery document {url}: issuer {found:?} does not equal the configured {expected:?}"
    )]
    IssuerMismatch {
        url: String,
        found: String,
        expected: String,
    },
    #[error("{0}: plain HTTP is refused (set allow_http: true for loopback tests only)")]
    Insecure(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl FetchError {
    /// The `result` label of a failed fetch: a closed set, in the fetch
    /// metrics' help texts.
    pub fn label(&self) -> &'static str {
        match self {
            FetchError::Http { .. } => "network",
            FetchError::Status { .. } => "http_status",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::NotJson { .. } => "invalid_json",
            FetchError::Discovery { .. } => "invalid_discovery",
            FetchError::IssuerMismatch { .. } => "issuer_mismatch",
            FetchError::Insecure(_) => "insecure",
            FetchError::Client(_) => "client",
        }
    }
}

/// A fetched JSON document and how long it may be cached (`Cache-Control:
/// max-age`, when the server says).
#[derive(Debug)]
pub struct Fetched {
    pub document: Value,
    pub max_age: Option<Duration>,
    /// The HTTP status it came with (a success).
    pub status: u16,
}

/// A fetched body, as [`Fetched`] but not parsed.
#[derive(Debug)]
pub struct FetchedBytes {
    pub bytes: Vec<u8>,
    pub max_age: Option<Duration>,
    pub status: u16,
    pub content_type: Option<String>,
}

/// Where an issuer's keys are, and the status of the discovery document
/// that said so (`None`: configured, nothing was fetched).
#[derive(Debug)]
pub struct Discovered {
    pub jwks_uri: String,
    pub status: Option<u16>,
}

pub struct Fetcher {
    client: reqwest::Client,
    settings: FetchSettings,
}

impl Fetcher {
    pub fn new(settings: FetchSettings) -> Result<Self, FetchError> {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .https_only(!settings.allow_http)
            .user_agent(concat!("jwtgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Client(error_chain(&e)))?;
        Ok(Self { client, settings })
    }

    /// Resolves the JWKS URL: as configured, or through discovery, whose
    /// `issuer` must equal the configured one exactly (OIDC Discovery §4.3),
    /// so a document from elsewhere can't redirect us to foreign keys.
    pub async fn jwks_uri(&self, locator: &Locator) -> Result<Discovered, FetchError> {
        let issuer = match locator {
            // The scheme is checked by get_json, for every URL it fetches.
            Locator::JwksUri(uri) => {
                return Ok(Discovered {
                    jwks_uri: uri.clone(),
                    status: None,
                });
            }
            Locator::Discovery { issuer } => issuer,
        };
        let (document, status) = self.discover(issuer).await?;
        let jwks_uri = discovery_member(issuer, &document, "jwks_uri")?;
        Ok(Discovered {
            jwks_uri,
            status: Some(status),
        })
    }

    /// The issuer's discovery document, once its `issuer` is known to
    /// equal `issuer` exactly (OIDC Discovery §4.3), with its HTTP status.
    pub async fn discover(&self, issuer: &str) -> Result<(Value, u16), FetchError> {
        let url = discovery_url(issuer);
        let fetched = self.get_json(&url).await?;
        match fetched.document.get("issuer").and_then(Value::as_str) {
            Some(found) if found == issuer => Ok((fetched.document, fetched.status)),
            Some(found) => Err(FetchError::IssuerMismatch {
                url,
                found: found.to_string(),
                expected: issuer.to_string(),
            }),
            None => Err(FetchError::Discovery {
                url,
                message: "no \"issuer\"".into(),
            }),
        }
    }

    pub async fn get_json(&self, url: &str) -> Result<Fetched, FetchError> {
        let body = self.get(url, "application/json").await?;
        let document = serde_json::from_slice(&body.bytes).map_err(|e| FetchError::NotJson {
            url: url.to_string(),
            message: e.to_string(),
        })?;
        Ok(Fetched {
            document,
            max_age: body.max_age,
            status: body.status,
        })
    }

    /// The body at `url`, asked for as `accept`, within the size cap.
    pub async fn get(&self, url: &str, accept: &'static str) -> Result<FetchedBytes, FetchError> {
        self.check_scheme(url)?;
        let request = self.client.get(url).header(http::header::ACCEPT, accept);
        self.send(url, request).await
    }

    /// The answer to a form posted to `url` (`form`: already encoded),
    /// with `authorization` when given, asked for as `accept`.
    pub async fn post_form(
        &self,
        url: &str,
        form: String,
        authorization: Option<&str>,
        accept: &'static str,
    ) -> Result<FetchedBytes, FetchError> {
        self.check_scheme(url)?;
        let mut request = self
            .client
            .post(url)
            .header(http::header::ACCEPT, accept)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form);
        if let Some(authorization) = authorization {
            request = request.header(http::header::AUTHORIZATION, authorization);
        }
        self.send(url, request).await
    }

    /// Sends `request`: a success's body within the size cap, or why not.
    async fn send(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<FetchedBytes, FetchError> {
        let http_error = |e: reqwest::Error| FetchError::Http {
            url: url.to_string(),
            message: error_chain(&e),
            timeout: e.is_timeout(),
        };
        let mut response = request.send().await.map_err(http_error)?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        let max_age = response
            .headers()
            .get_all(http::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(max_age);
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let max = self.settings.max_bytes;
        if response
            .content_length()
            .is_some_and(|len| len as usize > max)
        {
            return Err(FetchError::TooLarge {
                url: url.to_string(),
                max,
            });
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(http_error)? {
            if bytes.len() + chunk.len() > max {
                return Err(FetchError::TooLarge {
                    url: url.to_string(),
                    max,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(FetchedBytes {
            bytes,
            max_age,
            status: status.as_u16(),
            content_type,
        })
    }

    fn check_scheme(&self, url: &str) -> Result<(), FetchError> {
        if scheme_allowed(url, self.settings.allow_http) {
            Ok(())
        } else {
            Err(FetchError::Insecure(url.to_string()))
        }
    }
}

/// HTTPS, or plain HTTP when an issuer opted in (loopback tests).
pub fn scheme_allowed(url: &str, allow_http: bool) -> bool {
    let lower = url.to_ascii_lowercase();
    lower.starts_with("https://") || (allow_http && lower.starts_with("http://"))
}

/// A URL member of a discovery document.
pub fn discovery_member(issuer: &str, document: &Value, name: &str) -> Result<String, FetchError> {
    document
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| FetchError::Discovery {
            url: discovery_url(issuer),
            message: format!("no {name:?}"),
        })
}

pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// `max-age` from a Cache-Control value; `no-cache`/`no-store` count as 0.
fn max_age(value: &str) -> Option<Duration> {
    let mut result = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return Some(Duration::ZERO);
        }
        if let Some(seconds) = lower.strip_prefix("max-age=") {
            result = seconds
                .trim_matches('"')
                .parse()
                .ok()
                .map(Duration::from_secs);
        }
    }
    result
}

/// reqwest's errors hide the useful part (connection refused, timeout) in
/// their sources.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An HTTP server on loopback answering every request with `response`;
    /// returns its base URL.
    pub(crate) async fn serve(response: String) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        format!("http://{addr}")
    }

    fn fetcher(allow_http: bool) -> Fetcher {
        Fetcher::new(FetchSettings {
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            max_bytes: 1024,
            allow_http,
        })
        .unwrap()
    }

    /// A 200 response carrying `body` as JSON.
    pub(crate) fn ok(body: &str, extra_headers: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{extra_headers}connection: close\r\n\r\n{body}"
        )
    }

    #[tokio::test]
    async fn responses_over_the_size_cap_are_refused() {
        let big = format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(2000));
        // Announced by Content-Length, and streamed without one.
        let announced = serve(ok(&big, &format!("content-length: {}\r\n", big.len()))).await;
        let streamed = serve(ok(&big, "")).await;
        for url in [announced, streamed] {
            let error = fetcher(true).get_json(&url).await.unwrap_err();
            assert!(matches!(error, FetchError::TooLarge { .. }), "{error}");
        }
        let small = serve(ok("{\"keys\":[]}", "cache-control: max-age=120\r\n")).await;
        let fetched = fetcher(true).get_json(&small).await.unwrap();
        assert_eq!(fetched.max_age, Some(Duration::from_secs(120)));
    }

    #[tokio::test]
    async fn plain_http_needs_the_opt_in() {
        let url = serve(ok("{}", "")).await;
        let error = fetcher(false).get_json(&url).await.unwrap_err();
        assert!(matches!(error, FetchError::Insecure(_)), "{error}");
    }

    #[tokio::test]
    async fn discovery_must_name_the_configured_issuer() {
        let url = serve(ok(
            r#"{"issuer":"https://elsewhere.example","jwks_uri":"http://127.0.0.1:1/jwks"}"#,
            "",
        ))
        .await;
        let locator = Locator::Discovery {
            issuer: url.clone(),
        };
        let error = fetcher(true).jwks_uri(&locator).await.unwrap_err();
        assert!(
            matches!(error, FetchError::IssuerMismatch { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("does not equal"), "{error}");

        // A provider whose discovery document names its own URL is followed.
        let own = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let issuer = format!("http://{}", listener.local_addr().unwrap());
            let body = format!(r#"{{"issuer":"{issuer}","jwks_uri":"{issuer}/jwks"}}"#);
            let response = ok(&body, "");
            tokio::spawn(async move {
                if let Ok((mut stream, _)) = listener.accept().await {
                    let mut request = [0u8; 4096];
                    let _ = stream.read(&mut request).await;
                    let _ = stream.write_all(response.as_bytes()).await;
                }
            });
            issuer
        };
        let locator = Locator::Discovery {
            issuer: own.clone(),
        };
        assert_eq!(
            fetcher(true).jwks_uri(&locator).await.unwrap().jwks_uri,
            format!("{own}/jwks")
        );
    }

    #[test]
    fn cache_control_max_age() {
        assert_eq!(
            max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age("Max-Age=\"60\""), Some(Duration::from_secs(60)));
        assert_eq!(max_age("no-cache"), Some(Duration::ZERO));
        assert_eq!(max_age("max-age=60, no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }

    #[test]
    fn discovery_url_ignores_a_trailing_slash() {
        assert_eq!(
            discovery_url("https://idp.example/realms/x/"),
            "https://idp.example/realms/x/.well-known/openid-configuration"
        );
    }
}
