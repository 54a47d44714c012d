//! `jwtgate check`: validate a config the way `run` would, and show what it
//! means in a few lines.

use std::path::Path;
use std::process::ExitCode;

use jwtgate::config::schema::AuthMode;
use jwtgate::keys::fetch::{Locator, discovery_url};

pub fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let snapshot = match jwtgate::config::load_snapshot(path) {
        Ok(snapshot) => snapshot,
        Err(error) => {
            eprintln!("{error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("{}: OK", path.display());
    println!(
        "listen {} · admin {}{}",
        snapshot.listen_http,
        snapshot.admin_addr,
        snapshot
            .echo_addr
            .as_deref()
            .map(|a| format!(" · echo upstream {a}"))
            .unwrap_or_default()
    );
    println!("issuers ({}):", snapshot.issuers.len());
    for issuer in &snapshot.issuers {
        let algorithms: Vec<&str> = issuer.algorithms.iter().map(|a| a.as_str()).collect();
        let keys = match snapshot
            .remote
            .iter()
            .find(|r| std::sync::Arc::ptr_eq(&r.verifier, issuer))
        {
            Some(remote) => match &remote.locator {
                Locator::Discovery { issuer } => format!("discovery {}", discovery_url(issuer)),
                Locator::JwksUri(uri) => format!("jwks_uri {uri}"),
            },
            None => issuer.keys.current().len().to_string(),
        };
        println!(
            "  {:<12} iss={} algs=[{}] keys={} audiences={}",
            issuer.name,
            issuer.issuer,
            algorithms.join(","),
            keys,
            if issuer.check_audience {
                format!("{:?}", issuer.audiences)
            } else {
                "any (check skipped)".into()
            }
        );
    }
    println!("routes ({}):", snapshot.routes.len());
    for route in &snapshot.routes {
        let mode = match route.mode {
            AuthMode::Required => "auth required",
            AuthMode::Optional => "auth optional",
            AuthMode::Off => "auth off",
        };
        let issuers: Vec<&str> = route
            .policy
            .issuers
            .iter()
            .map(|i| snapshot.issuers[*i].name.as_str())
            .collect();
        let upstreams: Vec<String> = route.upstream.addrs.iter().map(|a| a.to_string()).collect();
        println!(
            "  {:<12} {mode:<14} issuers=[{}] → {}",
            route.name,
            issuers.join(","),
            upstreams.join(",")
        );
    }
    for warning in &snapshot.warnings {
        println!("warning: {warning}");
    }
    Ok(ExitCode::SUCCESS)
}
