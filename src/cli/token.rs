//! `jwtgate token`: mint tokens for development and load tests, decode them
//! (clearly unverified), and run the real verifier and route policy on one
//! with an explanation of every check.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use jwtgate::auth::verify::Explain;
use jwtgate::auth::{Algorithm, Reason};
use jwtgate::keys::remote::Refresher;
use jwtgate::mint::Signer;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Sign a token with a private key or HMAC secret file.
    Mint(MintArgs),
    /// Decode a token's header and claims WITHOUT verifying anything.
    Inspect {
        /// The token, or - to read it from standard input.
        token: String,
    },
    /// Verify a token against a route of a config, explaining every check.
    Verify {
        #[command(flatten)]
        config: super::ConfigArgs,
        /// The route whose rules apply.
        #[arg(long)]
        route: String,
        /// The token, or - to read it from standard input.
        token: String,
    },
}

#[derive(Args)]
pub struct MintArgs {
    /// PEM private key (RSA, EC, Ed25519), or for HS* a file holding the secret.
    #[arg(long)]
    key: PathBuf,
    #[arg(long, default_value = "RS256")]
    alg: String,
    /// `kid` header, naming the key in the issuer's JWKS.
    #[arg(long)]
    kid: Option<String>,
    /// `typ` header.
    #[arg(long, default_value = "JWT")]
    typ: String,
    #[arg(long)]
    iss: Option<String>,
    #[arg(long)]
    sub: Option<String>,
    /// `aud`; repeat for several audiences.
    #[arg(long)]
    aud: Vec<String>,
    /// Space-delimited `scope` claim.
    #[arg(long)]
    scope: Option<String>,
    /// Lifetime: `exp` is now plus this (e.g. 15m, 1h).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Any other claim as NAME=VALUE; VALUE is parsed as JSON when it is JSON,
    /// else taken as a string. Repeatable.
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    claims: Vec<String>,
    /// Emit this many distinct tokens (each with its own `jti`), one per line.
    #[arg(long, default_value_t = 1)]
    count: usize,
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
        return Ok(arg.trim().to_string());
    }
    let mut token = String::new();
    std::io::stdin()
        .read_to_string(&mut token)
        .context("reading the token from standard input")?;
    Ok(token.trim().to_string())
}

fn mint(args: MintArgs) -> anyhow::Result<ExitCode> {
    let alg: Algorithm = args
        .alg
        .parse()
        .map_err(|_| anyhow::anyhow!("unsupported algorithm {:?}", args.alg))?;
    let signer = Signer::from_file(&args.key, alg)?;
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
    claims.insert("exp".into(), json!(now + args.ttl.as_secs() as i64));
    for claim in &args.claims {
        let Some((name, raw)) = claim.split_once('=') else {
            bail!("--claim {claim:?} is not NAME=VALUE");
        };
        let value = serde_json::from_str(raw).unwrap_or_else(|_| json!(raw));
        claims.insert(name.to_string(), value);
    }

    let run_id = jwtgate::proxy::request_id::new_request_id().replace('-', "");
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for index in 0..args.count {
        claims.insert("jti".into(), json!(format!("{}-{index}", &run_id[..12])));
        let token = signer.sign(&claims, args.kid.as_deref(), Some(&args.typ))?;
        writeln!(out, "{token}")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn inspect(token: &str) -> anyhow::Result<ExitCode> {
    let segments: Vec<&str> = token.split('.').collect();
    if segments.len() != 3 {
        bail!(
            "not a compact JWS: expected 3 dot-separated segments, found {}",
            segments.len()
        );
    }
    let decode = |segment: &str, what: &str| -> anyhow::Result<Value> {
        let bytes = URL_SAFE_NO_PAD
            .decode(segment)
            .with_context(|| format!("the {what} is not unpadded base64url"))?;
        serde_json::from_slice(&bytes).with_context(|| format!("the {what} is not JSON"))
    };
    let header = decode(segments[0], "header")?;
    let claims = decode(segments[1], "claims")?;
    println!("UNVERIFIED: decoded only; the signature and claims were NOT checked.");
    println!("header:\n{}", serde_json::to_string_pretty(&header)?);
    println!("claims:\n{}", serde_json::to_string_pretty(&claims)?);
    let now = jwtgate::clock::system().now_unix();
    if let Some(exp) = claims.get("exp").and_then(Value::as_i64) {
        let relation = if exp > now { "expires in" } else { "expired" };
        println!("exp: {relation} {}s", (exp - now).abs());
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints each check as it is decided.
struct Printer;

impl Explain for Printer {
    fn passed(&mut self, check: &'static str, detail: &dyn Fn() -> String) {
        println!("  PASS {check:<12} {}", detail());
    }

    fn failed(&mut self, check: &'static str, reason: Reason) {
        println!("  FAIL {check:<12} {reason}");
    }
}

/// Remote issuers have no keys until fetched: fetch each once, as the
/// gateway would at startup, and say how it went.
fn fetch_remote_keys(snapshot: &jwtgate::config::Snapshot) -> anyhow::Result<()> {
    if snapshot.remote.is_empty() {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let metrics = std::sync::Arc::new(jwtgate::telemetry::Metrics::new());
    for source in &snapshot.remote {
        let refresher = Refresher::new(
            source.clone(),
            None,
            metrics.clone(),
            jwtgate::clock::system(),
        )
        .map_err(anyhow::Error::msg)?;
        match runtime.block_on(refresher.refresh_once()) {
            Ok(count) => println!(
                "keys: issuer {:?}: fetched {count} key(s)",
                source.verifier.name
            ),
            Err(error) => println!(
                "keys: issuer {:?}: cannot fetch: {error}",
                source.verifier.name
            ),
        }
    }
    Ok(())
}

fn verify(config: &Path, route_name: &str, token: &str) -> anyhow::Result<ExitCode> {
    let snapshot = jwtgate::config::load_snapshot(config)?;
    let Some(route) = snapshot.routes.iter().find(|r| r.name == route_name) else {
        let names: Vec<&str> = snapshot.routes.iter().map(|r| r.name.as_str()).collect();
        bail!(
            "no route named {route_name:?}; routes: {}",
            names.join(", ")
        );
    };
    fetch_remote_keys(&snapshot)?;
    println!("route {:?} (auth {:?})", route.name, route.mode);
    let now = jwtgate::clock::system().now_unix();
    match route.policy.authorize(
        token,
        &snapshot.issuers,
        now,
        snapshot.max_token_bytes,
        None,
        &mut Printer,
    ) {
        Ok(verified) => {
            println!(
                "ACCEPTED: issuer {:?}, sub {:?}",
                snapshot.issuers[verified.issuer].name,
                verified.subject().unwrap_or("-")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => {
            let rejection = failure.rejection;
            println!(
                "REJECTED: {} {} (reason: {})",
                rejection.status(),
                rejection.error_code().unwrap_or("-"),
                rejection.reason
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
