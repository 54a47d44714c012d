//! `jwtgate revoke`: the admin listener's `/revocations` API from the
//! command line. It prints the gateway's JSON answer and exits non-zero
//! when the gateway refused the request.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

/// Where the admin API is and how to authenticate to it.
#[derive(Args)]
pub struct RevokeArgs {
    /// The gateway's admin listener.
    #[arg(
        long,
        env = "JWTGATE_ADMIN_URL",
        default_value = "http://127.0.0.1:9090",
        global = true
    )]
    admin: String,
    /// A file holding the admin token (else JWTGATE_REVOKE_TOKEN).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: RevokeCommand,
}

#[derive(Subcommand)]
enum RevokeCommand {
    /// Revoke one token by its `jti`, until its `exp` (plus the issuer's
    /// leeway).
    Jti {
        /// The `jti`.
        jti: String,
        /// The issuer: its name in the config, or its exact `iss`.
        #[arg(long)]
        issuer: String,
        /// The token's `exp` (seconds since the epoch).
        #[arg(long)]
        exp: i64,
    },
    /// Refuse every token of a subject issued before a cut-off.
    Sub {
        sub: String,
        #[arg(long)]
        issuer: String,
        /// The cut-off (seconds since the epoch); default: now.
        #[arg(long)]
        not_before: Option<i64>,
    },
    /// Refuse every token of a session issued before a cut-off.
    Sid {
        sid: String,
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        not_before: Option<i64>,
    },
    /// Lift a subject's or session's cut-off.
    Lift {
        kind: LiftKind,
        value: String,
        #[arg(long)]
        issuer: String,
    },
    /// Without arguments, count the entries; with one, look it up.
    Show {
        kind: Option<ShowKind>,
        value: Option<String>,
        #[arg(long)]
        issuer: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LiftKind {
    Sub,
    Sid,
}

#[derive(Clone, Copy, ValueEnum)]
enum ShowKind {
    Jti,
    Sub,
    Sid,
}

impl LiftKind {
    fn as_str(self) -> &'static str {
        match self {
            LiftKind::Sub => "sub",
            LiftKind::Sid => "sid",
        }
    }
}

impl ShowKind {
    fn as_str(self) -> &'static str {
        match self {
            ShowKind::Jti => "jti",
            ShowKind::Sub => "sub",
            ShowKind::Sid => "sid",
        }
    }
}

/// The variable the admin token is read from: the name the documentation
/// gives it in `revocation.admin_tokens`, so one variable serves both.
const TOKEN_VAR: &str = "JWTGATE_REVOKE_TOKEN";
/// The name `jwtgate revoke` read before; still read when [`TOKEN_VAR`] is
/// unset, with a warning.
const OLD_TOKEN_VAR: &str = "JWTGATE_ADMIN_TOKEN";

fn admin_token(args: &RevokeArgs) -> anyhow::Result<String> {
    let (token, source) = if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --token-file {}", path.display()))?;
        let token = text.trim_end_matches(['\r', '\n']).to_string();
        (token, format!("--token-file {}", path.display()))
    } else if let Some(token) = var(TOKEN_VAR)? {
        (token, TOKEN_VAR.to_string())
    } else if let Some(token) = var(OLD_TOKEN_VAR)? {
        eprintln!("warning: {OLD_TOKEN_VAR} is deprecated; set {TOKEN_VAR} instead");
        (token, OLD_TOKEN_VAR.to_string())
    } else {
        bail!("no admin token: set {TOKEN_VAR} or pass --token-file");
    };
    if token.trim().is_empty() {
        bail!(
            "the admin token from {source} is empty: give one of the gateway's revocation.admin_tokens"
        );
    }
    Ok(token)
}

/// An environment variable, `None` when unset.
fn var(name: &str) -> anyhow::Result<Option<String>> {
    match std::env::var(name) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => bail!("{name} is not UTF-8 text"),
    }
}

pub fn revoke(args: RevokeArgs) -> anyhow::Result<ExitCode> {
    let token = admin_token(&args)?;
    let base = args.admin.trim_end_matches('/');
    let url = format!("{base}/revocations");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")?;
    let request = match args.command {
        RevokeCommand::Jti { jti, issuer, exp } => client
            .post(&url)
            .json(&json!({ "jti": jti, "issuer": issuer, "exp": exp })),
        RevokeCommand::Sub {
            sub,
            issuer,
            not_before,
        } => client
            .post(&url)
            .json(&cut_off("sub", sub, issuer, not_before)),
        RevokeCommand::Sid {
            sid,
            issuer,
            not_before,
        } => client
            .post(&url)
            .json(&cut_off("sid", sid, issuer, not_before)),
        RevokeCommand::Lift {
            kind,
            value,
            issuer,
        } => client.delete(query_url(&url, kind.as_str(), &value, &issuer)),
        RevokeCommand::Show {
            kind,
            value,
            issuer,
        } => match (kind, value, issuer) {
            (None, None, None) => client.get(&url),
            (Some(kind), Some(value), Some(issuer)) => {
                client.get(query_url(&url, kind.as_str(), &value, &issuer))
            }
            _ => bail!("show takes nothing, or a kind, a value and --issuer"),
        },
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (status, body) = runtime.block_on(async {
        let response = request
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("cannot reach the admin listener at {base}"))?;
        let status = response.status();
        let body = response.text().await.context("cannot read the answer")?;
        anyhow::Ok((status, body))
    })?;
    let shown = serde_json::from_str::<Value>(&body)
        .map(|value| serde_json::to_string_pretty(&value).expect("JSON prints"))
        .unwrap_or_else(|_| body.clone());
    if status.is_success() {
        outln!("{shown}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{}: {shown}", status.as_u16());
        Ok(ExitCode::FAILURE)
    }
}

/// `url?kind=value&issuer=issuer`, percent-encoded.
fn query_url(url: &str, kind: &str, value: &str, issuer: &str) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair(kind, value)
        .append_pair("issuer", issuer)
        .finish();
    format!("{url}?{query}")
}

fn cut_off(kind: &str, value: String, issuer: String, not_before: Option<i64>) -> Value {
    let mut body = json!({ kind: value, "issuer": issuer });
    if let Some(not_before) = not_before {
        body["not_before"] = json!(not_before);
    }
    body
}
