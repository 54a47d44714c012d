//! `jwtgate token`: mint tokens for development and load tests, decode them
//! (clearly unverified), and run the real verifier and route policy on one
//! with an explanation of every check.

use std::io::{BufWriter, Read, Write};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use http::{HeaderMap, HeaderValue, Method};
use jwtgate::auth::explain::{self, FailureDetail};
use jwtgate::auth::verify::Explain;
use jwtgate::auth::{Reason, Rejection};
use jwtgate::config::schema::{AuthMode, MatchConfig};
use jwtgate::jose::Algorithm;
use jwtgate::keys::remote::Refresher;
use jwtgate::mint::Signer;
use jwtgate::pipeline::{
    Adapter, CompiledRoute, Decision, Forwarded, Pipeline, RequestView, Scheme, Snapshot,
    TargetForm,
};
use jwtgate::state::status_list::ListRefresher;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Sign a token with a private key or HMAC secret file.
    Mint(MintArgs),
    /// Decode a token's header and claims WITHOUT verifying anything.
    Inspect {
        /// The token, or - to read it from standard input. A pasted
        /// `Bearer …` or `Authorization: Bearer …` is fine.
        token: String,
    },
    /// Verify a token against a route of a config, explaining every check.
    Verify {
        #[command(flatten)]
        config: super::ConfigArgs,
        /// The route whose rules apply.
        #[arg(long)]
        route: String,
        /// The token, or - to read it from standard input. A pasted
        /// `Bearer …` or `Authorization: Bearer …` is fine.
        token: String,
    },
}

#[derive(Args)]
pub struct MintArgs {
    /// PEM private key (RSA, EC, Ed25519), or for HS* a file holding the
    /// secret (at least 32 bytes).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Signing algorithm: RS256, RS384, RS512, PS256, PS384, PS512, ES256,
    /// ES384, EdDSA, HS256, HS384 or HS512 [default: the key's own: RS256,
    /// ES256 or ES384 by curve, EdDSA; needed for an HMAC secret].
    #[arg(long)]
    alg: Option<String>,
    /// `kid` header, naming the key in the issuer's JWKS.
    #[arg(long)]
    kid: Option<String>,
    /// `typ` header.
    #[arg(long, default_value = "JWT")]
    typ: String,
    /// `iss` claim: the issuer, exactly as in the gateway's `issuers[].issuer`.
    #[arg(long)]
    iss: Option<String>,
    /// `sub` claim: the user or client the token is about.
    #[arg(long)]
    sub: Option<String>,
    /// `aud` claim; repeat for several audiences.
    #[arg(long)]
    aud: Vec<String>,
    /// `scope` claim, space-delimited: --scope "read write".
    #[arg(long)]
    scope: Option<String>,
    /// Lifetime: `exp` is now plus this (15m, 1h, 2d) [default: 1h]. A
    /// negative lifetime mints a token that expired that long ago, to try
    /// rejections: --ttl=-5m.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true, value_parser = signed_seconds)]
    ttl: Option<i64>,
    /// Any other claim as NAME=VALUE; VALUE is parsed as JSON when it is
    /// JSON, else taken as a string. Repeatable. A claim another option sets
    /// (iss, sub, aud, scope; exp with --ttl; jti with --count above 1) is
    /// refused rather than silently overwritten.
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    claims: Vec<String>,
    /// Print this many distinct tokens (each with its own `jti`), one per line.
    #[arg(long, default_value = "1", value_parser = positive_count)]
    count: NonZeroUsize,
}

const DEFAULT_TTL_SECS: i64 = 60 * 60;

/// A duration in humantime form, optionally negative: `-5m` is -300.
fn signed_seconds(text: &str) -> anyhow::Result<i64> {
    let (sign, magnitude) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text),
    };
    let duration = humantime::parse_duration(magnitude)
        .with_context(|| format!("{text:?} is not a duration like 30s, 15m, 1h, -5m"))?;
    let seconds = i64::try_from(duration.as_secs()).context("the duration is too long")?;
    Ok(sign * seconds)
}

fn positive_count(text: &str) -> anyhow::Result<NonZeroUsize> {
    let count: usize = text
        .parse()
        .with_context(|| format!("{text:?} is not a whole number"))?;
    NonZeroUsize::new(count).context("at least one token: the count must be 1 or more")
}

pub fn token(command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Mint(args) => mint(args),
        TokenCommand::Inspect { token } => inspect(&read_token(&token)?),
        TokenCommand::Verify {
            config,
            route,
            token,
        } => verify(&config.config, &route, &read_token(&token)?),
    }
}

fn read_token(arg: &str) -> anyhow::Result<String> {
    if arg != "-" {
        return Ok(bare_token(arg).to_string());
    }
    let mut token = String::new();
    std::io::stdin()
        .read_to_string(&mut token)
        .context("reading the token from standard input")?;
    Ok(bare_token(&token).to_string())
}

/// The token in what a user pastes: itself, `Bearer <token>`, or a whole
/// `Authorization: Bearer <token>` header line (names in any case).
fn bare_token(pasted: &str) -> &str {
    let mut text = pasted.trim();
    if let Some((name, rest)) = text.split_once(':')
        && name.trim().eq_ignore_ascii_case("authorization")
    {
        text = rest.trim();
    }
    if let Some((scheme, rest)) = text.split_once(char::is_whitespace)
        && scheme.eq_ignore_ascii_case("bearer")
    {
        text = rest.trim();
    }
    text
}

/// Claims that options set, and the option that sets each.
fn claim_owner(name: &str, args: &MintArgs) -> Option<&'static str> {
    match name {
        "iss" if args.iss.is_some() => Some("--iss"),
        "sub" if args.sub.is_some() => Some("--sub"),
        "aud" if !args.aud.is_empty() => Some("--aud"),
        "scope" if args.scope.is_some() => Some("--scope"),
        "exp" if args.ttl.is_some() => Some("--ttl"),
        "jti" if args.count.get() > 1 => Some("--count above 1 (each token gets its own jti)"),
        _ => None,
    }
}

fn extra_claims(args: &MintArgs) -> anyhow::Result<Map<String, Value>> {
    let mut extra = Map::new();
    for claim in &args.claims {
        let Some((name, raw)) = claim.split_once('=') else {
            bail!("--claim {claim:?} is not NAME=VALUE");
        };
        if name.is_empty() {
            bail!("--claim {claim:?} has no claim name before the =");
        }
        if let Some(option) = claim_owner(name, args) {
            bail!("--claim {claim:?} contradicts {option}, which also sets {name}: give one");
        }
        let value = serde_json::from_str(raw).unwrap_or_else(|_| json!(raw));
        if extra.insert(name.to_string(), value).is_some() {
            bail!("--claim sets {name:?} twice: give it once");
        }
    }
    Ok(extra)
}

fn mint(args: MintArgs) -> anyhow::Result<ExitCode> {
    let alg: Option<Algorithm> = args
        .alg
        .as_deref()
        .map(|alg| {
            alg.parse()
                .map_err(|_| anyhow::anyhow!("unsupported algorithm {alg:?}"))
        })
        .transpose()?;
    // Refuse bad options before touching the key file.
    let extra = extra_claims(&args)?;
    let signer = Signer::from_key_file(&args.key, alg)?;
    let now = jwtgate::clock::system().now_unix();

    let mut claims = Map::new();
    if let Some(iss) = args.iss {
        claims.insert("iss".into(), json!(iss));
    }
    if let Some(sub) = args.sub {
        claims.insert("sub".into(), json!(sub));
    }
    match args.aud.len() {
        0 => {}
        1 => {
            claims.insert("aud".into(), json!(args.aud[0]));
        }
        _ => {
            claims.insert("aud".into(), json!(args.aud));
        }
    }
    if let Some(scope) = args.scope {
        claims.insert("scope".into(), json!(scope));
    }
    claims.insert("iat".into(), json!(now));
    claims.insert(
        "exp".into(),
        json!(now + args.ttl.unwrap_or(DEFAULT_TTL_SECS)),
    );
    claims.extend(extra);
    let fixed_jti = claims.contains_key("jti");

    let run_id = jwtgate::answers::request_id::new_request_id().replace('-', "");
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for index in 0..args.count.get() {
        if !fixed_jti {
            claims.insert("jti".into(), json!(format!("{}-{index}", &run_id[..12])));
        }
        let token = signer.sign(&claims, args.kid.as_deref(), Some(&args.typ))?;
        writeln!(out, "{token}")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn decode_segment(segment: &str, what: &str) -> anyhow::Result<Value> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .with_context(|| format!("the {what} is not unpadded base64url"))?;
    serde_json::from_slice(&bytes).with_context(|| format!("the {what} is not JSON"))
}

fn inspect(token: &str) -> anyhow::Result<ExitCode> {
    let segments: Vec<&str> = token.split('.').collect();
    if segments.len() == 5 {
        return inspect_encrypted(segments[0]);
    }
    if segments.len() != 3 {
        bail!(
            "not a compact JWS: expected 3 dot-separated segments, found {}",
            segments.len()
        );
    }
    let header = decode_segment(segments[0], "header")?;
    let claims = decode_segment(segments[1], "claims")?;
    outln!("UNVERIFIED: decoded only; the signature and claims were NOT checked.");
    if let Some(alg) = header.get("alg").and_then(Value::as_str)
        && alg.eq_ignore_ascii_case("none")
    {
        outln!(
            "WARNING: alg {alg:?}: the token is UNSIGNED, anyone could have written it; jwtgate always rejects it."
        );
    }
    outln!("header:\n{}", serde_json::to_string_pretty(&header)?);
    outln!("claims:\n{}", serde_json::to_string_pretty(&claims)?);
    let now = jwtgate::clock::system().now_unix();
    if let Some(exp) = claims.get("exp").and_then(Value::as_i64) {
        let relation = if exp > now { "expires in" } else { "expired" };
        outln!("exp: {relation} {}s", (exp - now).abs());
    }
    Ok(ExitCode::SUCCESS)
}

/// A JWE's claims can't be read without the recipient's key: show its
/// protected header, say what it is, and fail.
fn inspect_encrypted(header_segment: &str) -> anyhow::Result<ExitCode> {
    outln!(
        "ENCRYPTED: five segments, a JWE (encrypted token); its claims can't be read without the recipient's private key, and jwtgate rejects encrypted tokens (reason encrypted_token)."
    );
    match decode_segment(header_segment, "protected header") {
        Ok(header) => outln!("header:\n{}", serde_json::to_string_pretty(&header)?),
        Err(error) => outln!("header: unreadable ({error:#})"),
    }
    Ok(ExitCode::FAILURE)
}

/// Prints each check as it is decided; a failure with the values it
/// compared.
struct Printer<'a> {
    detail: FailureDetail<'a>,
}

impl Explain for Printer<'_> {
    fn passed(&mut self, check: &'static str, detail: &dyn Fn() -> String) {
        outln!("  PASS {check:<12} {}", detail());
    }

    fn failed(&mut self, check: &'static str, reason: Reason) {
        match self.detail.describe(check, reason) {
            Some(detail) => outln!("  FAIL {check:<12} {}: {detail}", explain::summary(reason)),
            None => outln!("  FAIL {check:<12} {}", explain::summary(reason)),
        }
    }
}

/// Remote issuers have no keys until fetched: fetch each once, as the
/// gateway would at startup, and say how it went.
fn fetch_remote_keys(
    snapshot: &jwtgate::pipeline::Snapshot,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let metrics = jwtgate::telemetry::Metrics::new().keys;
    for source in &snapshot.remote {
        let refresher = Refresher::new(
            source.clone(),
            None,
            metrics.clone(),
            jwtgate::clock::system(),
        )
        .map_err(anyhow::Error::msg)?;
        match runtime.block_on(refresher.refresh_once()) {
            Ok(count) => outln!("keys: issuer {:?}: fetched {count} key(s)", source.name),
            Err(error) => outln!("keys: issuer {:?}: cannot fetch: {error}", source.name),
        }
    }
    Ok(())
}

/// The status list the token names, fetched once from each issuer that
/// checks lists and allows its URI (no refresher runs here either). The
/// token is read unverified only to know which list; what it says about
/// the token is decided with the rest.
fn fetch_status_lists(
    snapshot: &jwtgate::pipeline::Snapshot,
    token: &str,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let Ok(parsed) = jwtgate::auth::token::parse(token, snapshot.max_token_bytes) else {
        return Ok(());
    };
    let metrics = jwtgate::telemetry::Metrics::new().status_lists;
    for lists in snapshot.status_lists.iter().flatten() {
        if !lists.register_named(&parsed.claims) {
            continue;
        }
        let refresher = ListRefresher::new(
            lists.clone(),
            None,
            metrics.clone(),
            jwtgate::clock::system(),
        )
        .map_err(anyhow::Error::msg)?;
        for slot in lists.slots() {
            match runtime.block_on(refresher.refresh(&slot)) {
                Ok(()) => outln!("status list: issuer {:?}: fetched {}", lists.name, slot.uri),
                Err(error) => outln!(
                    "status list: issuer {:?}: cannot fetch {}: {error}",
                    lists.name,
                    slot.uri
                ),
            }
        }
    }
    Ok(())
}

/// The request `token verify` asks about: what the route's match admits
/// (its prefix, its first method or GET, its host), carrying the token as
/// a bearer.
struct Probe {
    method: Method,
    target: String,
    headers: HeaderMap,
}

impl Probe {
    fn new(matcher: &MatchConfig, token: &str) -> anyhow::Result<Self> {
        let method = match matcher.methods.as_ref().and_then(|methods| methods.first()) {
            Some(method) => Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                .with_context(|| format!("the route's method {method:?} is not a method"))?,
            None => Method::GET,
        };
        let mut headers = HeaderMap::new();
        if let Some(host) = &matcher.host {
            headers.insert(
                http::header::HOST,
                HeaderValue::from_str(host).context("the route's host is not a header value")?,
            );
        }
        let authorization = HeaderValue::from_str(&format!("Bearer {token}")).context(
            "the token has characters no HTTP header can carry (a line break, non-ASCII text)",
        )?;
        headers.insert(http::header::AUTHORIZATION, authorization);
        Ok(Self {
            method,
            target: matcher.path_prefix.clone(),
            headers,
        })
    }

    fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            raw_target: self.target.as_bytes(),
            target: TargetForm::Origin {
                path_and_query: self.target.as_bytes(),
            },
            headers: &self.headers,
            client: None,
            // A token is judged the same over either scheme; HTTPS also
            // passes a route that clear text may not reach.
            scheme: Scheme::Https,
            client_cert_thumbprint: None,
            adapter: Adapter::Cli,
            exemplar: None,
        }
    }

    /// `GET /api (host api.example)`, for messages.
    fn describe(&self) -> String {
        match self.headers.get(http::header::HOST) {
            Some(host) => format!(
                "{} {} (host {})",
                self.method,
                self.target,
                String::from_utf8_lossy(host.as_bytes())
            ),
            None => format!("{} {}", self.method, self.target),
        }
    }
}

fn print_rejection(rejection: &Rejection, prefix: &str) {
    outln!(
        "{prefix}: {} {} (reason: {}): {}",
        rejection.status(),
        rejection.error_code().unwrap_or("without an error code"),
        rejection.reason,
        explain::summary(rejection.reason)
    );
}

/// Runs the gateway's own decision pipeline on a request to the route
/// carrying the token, so the route's mode applies as it would in `run`.
fn verify(config_path: &Path, route_name: &str, token: &str) -> anyhow::Result<ExitCode> {
    let config = jwtgate::assemble::load(config_path, &jwtgate::assemble::sources::System)?;
    let probe = config
        .routes
        .iter()
        .find(|route| route.name.value == route_name)
        .map(|route| Probe::new(&route.matcher, token));
    let snapshot = jwtgate::assemble::compile(config_path, config)?;
    let (Some(probe), Some(route)) = (probe, snapshot.routes.iter().find(|r| r.name == route_name))
    else {
        let names: Vec<&str> = snapshot.routes.iter().map(|r| r.name.as_str()).collect();
        bail!(
            "no route named {route_name:?}; routes: {}",
            names.join(", ")
        );
    };
    let probe = probe?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    fetch_remote_keys(&snapshot, &runtime)?;
    fetch_status_lists(&snapshot, token, &runtime)?;
    outln!(
        "route {:?} (auth {})",
        route.name,
        super::check::mode_name(route.mode)
    );
    let now = jwtgate::clock::system().now_unix();
    let mut printer = Printer {
        detail: FailureDetail::new(
            token,
            &snapshot.issuers,
            &route.policy,
            now,
            snapshot.max_token_bytes,
        ),
    };
    // Keys were fetched just above, and no refresher runs to answer a
    // refetch: waiting for one could only time out.
    let pipeline = Pipeline::new(jwtgate::clock::system(), None).without_refetch();
    let view = probe.view();
    let decision = runtime.block_on(pipeline.decide_explained(&snapshot, &view, &mut printer));
    if let Some(decided) = decision.route()
        && decided.name != route.name
    {
        bail!(
            "{} is routed to {:?}, not {:?}: an earlier route takes the requests {:?} matches",
            probe.describe(),
            decided.name,
            route.name,
            route.name
        );
    }
    verdict(decision, route, &snapshot, &probe)
}

/// What `token verify` says of a decision, and its exit code.
fn verdict(
    decision: Decision<'_>,
    route: &CompiledRoute,
    snapshot: &Snapshot,
    probe: &Probe,
) -> anyhow::Result<ExitCode> {
    match decision {
        Decision::Forward {
            auth: Forwarded::Identity(identity),
            ..
        } => {
            outln!(
                "ACCEPTED: issuer {:?}, sub {}",
                snapshot.issuers[identity.issuer].name,
                identity
                    .subject()
                    .map_or_else(|| "(none)".to_string(), |sub| format!("{sub:?}"))
            );
            Ok(ExitCode::SUCCESS)
        }
        Decision::Forward {
            auth: Forwarded::Anonymous,
            ..
        } if route.mode == AuthMode::Off => {
            outln!(
                "NOT CHECKED: auth is off on this route; jwtgate forwards its requests without verifying a token and sets no identity headers"
            );
            Ok(ExitCode::SUCCESS)
        }
        Decision::Forward {
            auth: Forwarded::WouldDeny(failure),
            ..
        } => {
            print_rejection(&failure.rejection, "REJECTED (not enforced)");
            outln!(
                "the route is in audit mode: jwtgate forwards the request without identity headers and counts it as would_deny"
            );
            Ok(ExitCode::FAILURE)
        }
        Decision::Deny { failure, .. } => {
            print_rejection(&failure.rejection, "REJECTED");
            Ok(ExitCode::FAILURE)
        }
        Decision::Forward {
            auth: Forwarded::Anonymous,
            ..
        } => {
            outln!("NO TOKEN: the route's token sources found none; forwarded without identity");
            Ok(ExitCode::FAILURE)
        }
        Decision::Refuse(refusal) => bail!(
            "{} is refused before routing ({}): check the route's match",
            probe.describe(),
            refusal.as_str()
        ),
        // One request from a fresh pipeline is always within a limit's burst.
        Decision::RateLimited { limited, .. } => bail!(
            "{} is over rate limit {:?}",
            probe.describe(),
            limited.limit.name
        ),
        Decision::Preflight { .. } | Decision::NoRoute | Decision::HttpsRequired { .. } => bail!(
            "{} does not reach route {:?}: check the route's match",
            probe.describe(),
            route.name
        ),
    }
}
