//! One introspection call (RFC 7662 §2.1): the token in a form, jwtgate
//! authenticated as the issuer's client (a secret in HTTP Basic or the
//! form, or a signed assertion, RFC 7523), and the answer as JSON or, when
//! asked, as a JWT signed by the issuer (RFC 9701).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use super::Introspector;
use crate::auth::IssuerVerifier;
use crate::auth::introspected::{self, AnswerError};
use crate::auth::json::JsonObject;
use crate::keys::fetch::{FetchError, FetchSettings};
use crate::mint::Signer;

/// What the media type of a JWT-secured answer is (RFC 9701 §4).
const JWT_ANSWER: &str = "application/token-introspection+jwt";

/// A client assertion is good for this long (RFC 7523 §3: short).
const ASSERTION_LIFETIME_SECS: i64 = 60;

/// Everything an introspector is built from; two equal settings make
/// interchangeable introspectors.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct IntrospectionSettings {
    /// The issuer's `iss`: where discovery looks, and a client
    /// assertion's `aud`.
    pub issuer: String,
    /// Configured; `None`: the discovery document's.
    pub endpoint: Option<String>,
    pub client_id: String,
    pub credential: ClientCredential,
    pub jwt_response: bool,
    pub active_ttl: Duration,
    pub inactive_ttl: Duration,
    pub max_entries: u64,
    pub max_cache_bytes: u64,
    /// Timeouts (the call's whole timeout is `fetch.timeout`), the answer
    /// size cap, whether `http://` is allowed.
    pub fetch: FetchSettings,
}

/// How jwtgate proves it is the client.
#[derive(Clone)]
pub enum ClientCredential {
    /// `client_secret_basic`.
    Basic(Secret),
    /// `client_secret_post`.
    Post(Secret),
    /// `private_key_jwt`: a fresh assertion per call.
    PrivateKey {
        signer: Arc<Signer>,
        kid: Option<String>,
        /// SHA-256 of the key file, to tell two keys apart.
        key_digest: [u8; 32],
    },
}

/// A client secret: compared, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientCredential::Basic(_) => "client_secret_basic",
            ClientCredential::Post(_) => "client_secret_post",
            ClientCredential::PrivateKey { .. } => "private_key_jwt",
        })
    }
}

impl PartialEq for ClientCredential {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ClientCredential::Basic(a), ClientCredential::Basic(b))
            | (ClientCredential::Post(a), ClientCredential::Post(b)) => a == b,
            (
                ClientCredential::PrivateKey {
                    kid: a,
                    key_digest: x,
                    ..
                },
                ClientCredential::PrivateKey {
                    kid: b,
                    key_digest: y,
                    ..
                },
            ) => a == b && x == y,
            _ => false,
        }
    }
}

impl Eq for ClientCredential {}

/// The `result` label of a failed call.
pub(super) fn error_label(error: &FetchError) -> &'static str {
    match error {
        FetchError::Http { timeout: true, .. } => "timeout",
        FetchError::Http { .. } => "network",
        FetchError::Status { .. } => "http_status",
        FetchError::TooLarge { .. } => "too_large",
        FetchError::NotJson { .. } => "invalid_response",
        FetchError::Discovery { .. } | FetchError::IssuerMismatch { .. } => "discovery",
        FetchError::Insecure(_) | FetchError::Client(_) => "client",
    }
}

impl Introspector {
    /// Asks the endpoint about `token`: the answer, not yet judged.
    pub(super) async fn call(
        &self,
        token: &str,
        issuer: &IssuerVerifier,
        now: i64,
    ) -> Result<JsonObject, FetchError> {
        let settings = &self.settings;
        let endpoint = self.endpoint().await?;
        // The serializer is not `Send`: it is done with before any await.
        let (form, authorization) = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("token", token)
                .append_pair("token_type_hint", "access_token");
            let authorization = self.authenticate(&mut form, now)?;
            (form.finish(), authorization)
        };
        let accept = if settings.jwt_response {
            JWT_ANSWER
        } else {
            "application/json"
        };
        let fetched = self
            .fetcher
            .post_form(endpoint, form, authorization.as_deref(), accept)
            .await?;
        let invalid = |message: String| FetchError::NotJson {
            url: endpoint.to_string(),
            message,
        };
        if !settings.jwt_response {
            return JsonObject::parse(&fetched.bytes)
                .map_err(|_| invalid("the answer is not one strict JSON object".into()));
        }
        let text = std::str::from_utf8(&fetched.bytes)
            .map_err(|_| invalid("the JWT answer is not text".into()))?;
        introspected::unwrap_signed(
            text.trim(),
            issuer,
            &settings.client_id,
            settings.fetch.max_bytes,
        )
        .map_err(|error| invalid(answer_error(error)))
    }

    /// Adds the client's credentials to `form`, or returns the
    /// `Authorization` value that carries them.
    fn authenticate(
        &self,
        form: &mut form_urlencoded::Serializer<'_, String>,
        now: i64,
    ) -> Result<Option<String>, FetchError> {
        let client_id = self.settings.client_id.as_str();
        match &self.settings.credential {
            ClientCredential::Basic(secret) => {
                // RFC 6749 §2.3.1: each part form-encoded before joining.
                let id: String = form_urlencoded::byte_serialize(client_id.as_bytes()).collect();
                let secret: String = form_urlencoded::byte_serialize(&secret.0).collect();
                let pair = STANDARD.encode(format!("{id}:{secret}"));
                Ok(Some(format!("Basic {pair}")))
            }
            ClientCredential::Post(secret) => {
                let secret = String::from_utf8_lossy(&secret.0);
                form.append_pair("client_id", client_id)
                    .append_pair("client_secret", &secret);
                Ok(None)
            }
            ClientCredential::PrivateKey { signer, kid, .. } => {
                let assertion = self.assertion(signer, kid.as_deref(), now)?;
                form.append_pair("client_id", client_id)
                    .append_pair(
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    )
                    .append_pair("client_assertion", &assertion);
                Ok(None)
            }
        }
    }

    /// A client assertion (RFC 7523 §3) for this one call: `aud` is the
    /// issuer identifier, `jti` random, so the issuer can refuse a replay.
    fn assertion(
        &self,
        signer: &Signer,
        kid: Option<&str>,
        now: i64,
    ) -> Result<String, FetchError> {
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).map_err(|_| FetchError::Client("no randomness".into()))?;
        let client_id = Value::from(self.settings.client_id.as_str());
        let claims: Map<String, Value> = [
            ("iss", client_id.clone()),
            ("sub", client_id),
            ("aud", Value::from(self.settings.issuer.as_str())),
            ("jti", Value::from(crate::digest::hex(&jti))),
            ("iat", Value::from(now)),
            ("exp", Value::from(now + ASSERTION_LIFETIME_SECS)),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect();
        signer
            .sign(&claims, kid, Some("JWT"))
            .map_err(|e| FetchError::Client(format!("cannot sign the client assertion: {e}")))
    }
}

fn answer_error(error: AnswerError) -> String {
    match error {
        AnswerError::Signature(error) => {
            format!("the JWT answer is not signed by the issuer ({error:?})")
        }
        AnswerError::WrongParty => {
            "the JWT answer's iss is not the issuer, or its aud is not jwtgate's client".into()
        }
        AnswerError::NoAnswer => "the JWT answer has no token_introspection object".into(),
    }
}
