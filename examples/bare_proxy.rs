//! The framework's floor: a Pingora reverse proxy that does nothing but pick
//! its one upstream. The load harness (benches/load/run.py) runs it beside
//! jwtgate at the same thread count, so what jwtgate costs per request above
//! this is jwtgate's own; what this costs is Pingora's and the kernel's.
//!
//! cargo build --release --example bare_proxy
//! target/release/examples/bare_proxy --listen 127.0.0.1:8080 --upstream 127.0.0.1:9000 --threads 2
//!
//! `--h2c` and `--tls ADDR --cert PEM --key PEM` (ALPN h2, then http/1.1)
//! add what the load harness's HTTP/2 and HTTPS readings need, with
//! Pingora's defaults; the `--h2-*` options change one HTTP/2 setting each,
//! to measure what it does to memory and CPU before jwtgate takes it.

use std::net::SocketAddr;

use async_trait::async_trait;
use clap::Parser;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::*;
use pingora::protocols::http::v2::server::default_h2_options;
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
    /// Also serve HTTP/2 with prior knowledge on `--listen`.
    #[arg(long)]
    h2c: bool,
    /// A TLS listener (needs `--cert` and `--key`).
    #[arg(long, requires_all = ["cert", "key"])]
    tls: Option<SocketAddr>,
    #[arg(long)]
    cert: Option<String>,
    #[arg(long)]
    key: Option<String>,
    /// HTTP/2: initial stream and connection flow-control windows, bytes.
    #[arg(long)]
    h2_window: Option<u32>,
    /// HTTP/2: SETTINGS_MAX_FRAME_SIZE, bytes.
    #[arg(long)]
    h2_max_frame: Option<u32>,
    /// HTTP/2: the most a stream may queue to send, bytes.
    #[arg(long)]
    h2_max_send_buffer: Option<usize>,
    /// HTTP/2: SETTINGS_HEADER_TABLE_SIZE (HPACK decoder table), bytes.
    #[arg(long)]
    h2_header_table: Option<u32>,
    /// HTTP/2: SETTINGS_MAX_CONCURRENT_STREAMS.
    #[arg(long)]
    h2_max_streams: Option<u32>,
}

impl Args {
    /// Pingora's HTTP/2 defaults with the settings given on the command line.
    fn h2_options(&self) -> Option<pingora::protocols::http::v2::server::H2Options> {
        let mut options = default_h2_options();
        let mut changed = false;
        if let Some(window) = self.h2_window {
            options.initial_window_size(window);
            options.initial_connection_window_size(window);
            changed = true;
        }
        if let Some(max) = self.h2_max_frame {
            options.max_frame_size(max);
            changed = true;
        }
        if let Some(max) = self.h2_max_send_buffer {
            options.max_send_buffer_size(max);
            changed = true;
        }
        if let Some(size) = self.h2_header_table {
            options.header_table_size(size);
            changed = true;
        }
        if let Some(max) = self.h2_max_streams {
            options.max_concurrent_streams(max);
            changed = true;
        }
        changed.then_some(options)
    }
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
    if let Some(app) = proxy.app_logic_mut() {
        if args.h2c {
            let mut options = HttpServerOptions::default();
            options.h2c = true;
            app.server_options = Some(options);
        }
        app.h2_options = args.h2_options();
    }
    proxy.add_tcp(&args.listen.to_string());
    if let (Some(addr), Some(cert), Some(key)) = (args.tls, &args.cert, &args.key) {
        let mut tls = TlsSettings::intermediate(cert, key).expect("the certificate and key load");
        tls.enable_h2();
        proxy.add_tls_with_settings(&addr.to_string(), None, tls);
    }
    server.add_service(proxy);
    server.run_forever();
}
