//! `jwtgate health`: ask a running gateway's admin listener whether it is
//! ready (`/readyz`) or alive (`/healthz`), exit 0 or 1. It is the image's
//! `HEALTHCHECK`: distroless has no shell and no curl, so the binary asks
//! itself. One plain HTTP/1.1 request over a socket, with a short timeout:
//! no async runtime or HTTP client to start for a check run every few
//! seconds.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

/// The longest answer read: a readiness body names issuers, nothing more.
const MAX_ANSWER: u64 = 64 * 1024;

#[derive(Args)]
pub struct HealthArgs {
    /// The admin listener's address. In a container it is the one the
    /// config binds from JWTGATE_ADMIN; 0.0.0.0 or [::] is asked on
    /// loopback.
    #[arg(long, env = "JWTGATE_ADMIN", default_value = "127.0.0.1:9090")]
    admin: String,
    /// Ask `/healthz` (the process serves) instead of `/readyz` (the
    /// config is loaded, every required issuer has keys, not draining).
    #[arg(long)]
    live: bool,
    /// Give up on connecting, sending or reading after this long each.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

pub fn health(args: &HealthArgs) -> anyhow::Result<ExitCode> {
    let path = if args.live { "/healthz" } else { "/readyz" };
    let addr = loopback_for(&args.admin)?;
    match ask(addr, path, args.timeout) {
        Ok((200, _)) => {
            outln!("{path} at {addr}: 200 OK");
            Ok(ExitCode::SUCCESS)
        }
        Ok((status, body)) => {
            eprintln!("{path} at {addr}: {status}: {}", body.trim());
            Ok(ExitCode::FAILURE)
        }
        Err(error) => {
            eprintln!("{path} at {addr}: {error:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Where to connect for a listen address: an address that binds every
/// interface is reached on this host's loopback.
fn loopback_for(admin: &str) -> anyhow::Result<SocketAddr> {
    let admin = admin
        .strip_prefix("http://")
        .unwrap_or(admin)
        .trim_end_matches('/');
    let mut addr = admin
        .to_socket_addrs()
        .with_context(|| format!("--admin {admin}: not a host:port"))?
        .next()
        .with_context(|| format!("--admin {admin}: no address"))?;
    if addr.ip().is_unspecified() {
        let loopback = match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        };
        addr.set_ip(loopback);
    }
    Ok(addr)
}

/// GET `path`: the status and the body.
fn ask(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .context("cannot reach the admin listener (is jwtgate running?)")?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .context("cannot send the request")?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .context("no complete answer in time")?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| head.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP answer: {:?}", head.lines().next()))?;
    Ok((status, body.to_string()))
}
