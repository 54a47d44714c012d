//! What the test IdP issues beside bearer JWTs, and what a resource server
//! asks of it: DPoP-bound (RFC 9449) and certificate-bound (RFC 8705)
//! tokens, opaque tokens, their introspection (RFC 7662) and revocation
//! (RFC 7009).

use std::time::Duration;

use serde_json::Value;

use super::{
    CLIENT_CERT_HEADER, CLIENT_ID, CLIENT_SECRET, DPOP_CLIENT, DpopKey, INTROSPECTOR, Idp,
    MTLS_CLIENT, OPAQUE_RESOURCE, Proof, RESOURCE, client_secret, form_urlencoded, percent_encode,
};

/// A client-credentials token request: by `client_id` (with its secret,
/// `client_secret_basic`), for `resource` and `scope` (empty: none), with
/// a DPoP proof signed by `dpop` (`proof`, or by default one for `POST`
/// to the token endpoint) and the certificate `cert_pem`.
#[derive(Debug, Clone)]
pub struct TokenRequest<'a> {
    pub client_id: &'a str,
    pub resource: &'a str,
    pub scope: &'a str,
    pub dpop: Option<&'a DpopKey>,
    pub proof: Option<Proof>,
    pub cert_pem: Option<&'a str>,
}

impl<'a> TokenRequest<'a> {
    /// For [`RESOURCE`] (a JWT), without proof or certificate.
    pub fn new(client_id: &'a str, scope: &'a str) -> Self {
        Self {
            client_id,
            resource: RESOURCE,
            scope,
            dpop: None,
            proof: None,
            cert_pem: None,
        }
    }

    pub fn resource(mut self, resource: &'a str) -> Self {
        self.resource = resource;
        self
    }

    pub fn dpop(mut self, key: &'a DpopKey) -> Self {
        self.dpop = Some(key);
        self
    }

    /// The DPoP proof's claims instead of `POST` to the token endpoint
    /// (a nonce the IdP demands is still added).
    pub fn proof(mut self, proof: Proof) -> Self {
        self.proof = Some(proof);
        self
    }

    pub fn cert(mut self, cert_pem: &'a str) -> Self {
        self.cert_pem = Some(cert_pem);
        self
    }
}

/// How a client authenticates to the token, introspection and revocation
/// endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Basic,
    Post,
    /// `private_key_jwt`: the "secret" is the signed client assertion.
    Assertion,
}

/// RFC 7523's `client_assertion_type`.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The IdP's answer: status, `DPoP-Nonce` and the body (`Null` when not
/// JSON, e.g. revocation's empty `200`).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub dpop_nonce: Option<String>,
    pub body: Value,
}

/// The `access_token` of a token response.
pub fn access_token(response: &Value) -> String {
    response["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token in {response}"))
        .to_string()
}

impl Idp {
    /// `path` under the issuer (where oidc-provider mounts its endpoints).
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer().trim_end_matches('/'))
    }

    pub fn token_url(&self) -> String {
        self.endpoint("/token")
    }

    pub fn introspection_url(&self) -> String {
        self.endpoint("/token/introspection")
    }

    pub fn revocation_url(&self) -> String {
        self.endpoint("/token/revocation")
    }

    /// Sends `request` once (with `nonce` in its DPoP proof); the reply
    /// whatever its status.
    pub async fn try_issue(&self, request: &TokenRequest<'_>, nonce: Option<&str>) -> Reply {
        let mut fields = vec![
            ("grant_type", "client_credentials"),
            ("resource", request.resource),
        ];
        if !request.scope.is_empty() {
            fields.push(("scope", request.scope));
        }
        let url = self.token_url();
        let mut headers = Vec::new();
        if let Some(key) = request.dpop {
            let mut proof = (request.proof.clone()).unwrap_or_else(|| Proof::new("POST", &url));
            if let Some(nonce) = nonce {
                proof = proof.nonce(nonce);
            }
            headers.push(("dpop".to_string(), key.proof(&proof)));
        }
        if let Some(pem) = request.cert_pem {
            headers.push((CLIENT_CERT_HEADER.to_string(), percent_encode(pem)));
        }
        let secret = secret_of(request.client_id);
        let auth = (request.client_id, secret.as_str(), ClientAuth::Basic);
        self.post_form(&url, &fields, auth, &headers).await
    }

    /// The token response of `request`, which must succeed. A DPoP nonce
    /// the IdP demands (`use_dpop_nonce`, with `IDP_DPOP_NONCES=1`) is put
    /// in a second proof.
    pub async fn issue(&self, request: &TokenRequest<'_>) -> Value {
        let mut reply = self.try_issue(request, None).await;
        if reply.status == 400 && reply.body["error"] == "use_dpop_nonce" {
            let nonce = reply
                .dpop_nonce
                .clone()
                .expect("use_dpop_nonce without DPoP-Nonce");
            reply = self.try_issue(request, Some(&nonce)).await;
        }
        assert_eq!(
            reply.status, 200,
            "token request {request:?}: {}",
            reply.body
        );
        reply.body
    }

    /// A JWT access token for [`RESOURCE`] bound to `key` (`cnf.jkt`),
    /// token type `DPoP`, issued to [`DPOP_CLIENT`].
    pub async fn dpop_bound_token(&self, key: &DpopKey, scope: &str) -> String {
        let response = self
            .issue(&TokenRequest::new(DPOP_CLIENT, scope).dpop(key))
            .await;
        assert_eq!(response["token_type"], "DPoP", "{response}");
        access_token(&response)
    }

    /// A JWT access token for [`RESOURCE`] bound to the certificate
    /// `cert_pem` (`cnf["x5t#S256"]`), issued to [`MTLS_CLIENT`].
    pub async fn cert_bound_token(&self, cert_pem: &str, scope: &str) -> String {
        let request = TokenRequest::new(MTLS_CLIENT, scope).cert(cert_pem);
        access_token(&self.issue(&request).await)
    }

    /// An opaque access token for [`OPAQUE_RESOURCE`], issued to
    /// [`CLIENT_ID`] (so [`Idp::revoke`] can revoke it).
    pub async fn opaque_token(&self, scope: &str) -> String {
        let request = TokenRequest::new(CLIENT_ID, scope).resource(OPAQUE_RESOURCE);
        access_token(&self.issue(&request).await)
    }

    /// The introspection response for `token`, asked by [`INTROSPECTOR`]
    /// with `client_secret_basic`.
    pub async fn introspect(&self, token: &str) -> Value {
        let secret = client_secret(INTROSPECTOR);
        let reply = self
            .introspect_as(token, (INTROSPECTOR, &secret, ClientAuth::Basic))
            .await;
        assert_eq!(reply.status, 200, "introspection: {}", reply.body);
        reply.body
    }

    /// Introspection of `token` by the client `(id, secret, how)`.
    pub async fn introspect_as(&self, token: &str, client: (&str, &str, ClientAuth)) -> Reply {
        let url = self.introspection_url();
        self.post_form(&url, &[("token", token)], client, &[]).await
    }

    /// Revokes `token`, which [`CLIENT_ID`] got (oidc-provider lets a
    /// client revoke only its own tokens).
    pub async fn revoke(&self, token: &str) {
        self.revoke_as(token, CLIENT_ID).await;
    }

    /// Revokes `token`, which `client_id` got.
    pub async fn revoke_as(&self, token: &str, client_id: &str) {
        let url = self.revocation_url();
        let secret = secret_of(client_id);
        let client = (client_id, secret.as_str(), ClientAuth::Basic);
        let reply = self.post_form(&url, &[("token", token)], client, &[]).await;
        assert_eq!(reply.status, 200, "revocation: {}", reply.body);
    }

    /// POSTs `fields` as a form, authenticated as `(id, secret, how)`.
    async fn post_form(
        &self,
        url: &str,
        fields: &[(&str, &str)],
        client: (&str, &str, ClientAuth),
        headers: &[(String, String)],
    ) -> Reply {
        let response = self.send_form(url, fields, client, headers).await;
        let status = response.status().as_u16();
        let dpop_nonce = response
            .headers()
            .get("dpop-nonce")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            dpop_nonce,
            body,
        }
    }

    /// [`Idp::post_form`]'s request; the response as it came.
    pub(super) async fn send_form(
        &self,
        url: &str,
        fields: &[(&str, &str)],
        (id, secret, how): (&str, &str, ClientAuth),
        headers: &[(String, String)],
    ) -> reqwest::Response {
        let mut fields = fields.to_vec();
        let mut request = self.client.post(url);
        match how {
            ClientAuth::Basic => request = request.basic_auth(id, Some(secret)),
            ClientAuth::Post => fields.extend([("client_id", id), ("client_secret", secret)]),
            ClientAuth::Assertion => fields.extend([
                ("client_id", id),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", secret),
            ]),
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_urlencoded(&fields))
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}; IdP stderr:\n{}", self.stderr()))
    }
}

/// [`CLIENT_ID`]'s secret is not `<id>-secret`: it predates the others.
fn secret_of(client_id: &str) -> String {
    if client_id == CLIENT_ID {
        CLIENT_SECRET.to_string()
    } else {
        client_secret(client_id)
    }
}
