//! The framework's floor: a Pingora reverse proxy that does nothing but pick
//! its one upstream. The load harness (benches/load/run.py) runs it beside
//! jwtgate at the same thread count, so what jwtgate costs per request above
//! this is jwtgate's own; what this costs is Pingora's and the kernel's.
//!
//! cargo build --release --example bare_proxy
//! target/release/examples/bare_proxy --listen 127.0.0.1:8080 --upstream 127.0.0.1:9000 --threads 2

use std::net::SocketAddr;

use async_trait::async_trait;
use clap::Parser;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;

#[derive(Parser)]
#[command(
    about = "A bare Pingora HTTP proxy to one upstream: the floor jwtgate is measured against"
)]
struct Args {
    /// Address to accept plain HTTP on.
    #[arg(long)]
    listen: SocketAddr,
    /// The one upstream every request goes to (plain HTTP).
    #[arg(long)]
    upstream: SocketAddr,
    /// Worker threads (Pingora's `threads`); compare at jwtgate's `server.threads`.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

struct BareProxy {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for BareProxy {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let args = Args::parse();
    if args.threads == 0 {
        eprintln!("bare_proxy: --threads must be at least 1");
        std::process::exit(2);
    }
    // Pingora's defaults, except the worker count the comparison needs.
    let conf = ServerConf {
        threads: args.threads,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(
        &server.configuration,
        BareProxy {
            upstream: args.upstream,
        },
    );
    proxy.add_tcp(&args.listen.to_string());
    server.add_service(proxy);
    server.run_forever();
}
