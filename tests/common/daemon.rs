//! Servers from the distribution that the tests run beside the gateway
//! (nginx, Caddy): found where Debian installs them, run in a temporary
//! directory of their own that holds everything they write, killed when
//! dropped. A missing one fails the test naming its Debian package.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The program `name`, on PATH or in /usr/sbin (where Debian puts nginx,
/// which a normal user's PATH lacks).
pub fn sbin(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    path.into_iter()
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{name} must be installed (scripts/test installs it: Debian {package})")
        })
}

/// A server process listening on a loopback port.
pub struct Daemon {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Daemon {
    /// Runs `command` in `dir` with its standard error in `stderr.log`.
    pub fn spawn(mut command: Command, dir: tempfile::TempDir, port: u16) -> Self {
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        Self { child, dir, port }
    }

    /// nginx with `conf` as its nginx.conf, in `dir`.
    pub fn nginx(conf: &str, dir: tempfile::TempDir, port: u16) -> Self {
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let mut command = Command::new(sbin("nginx", "nginx-light"));
        command
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf_path);
        Self::spawn(command, dir, port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// What it wrote to standard error and to its `error.log`.
    pub fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An nginx.conf for a test: one worker process in the foreground, every
/// file it writes under `root`, and `server` as its one `server` block.
pub fn nginx_conf(root: &Path, server: &str) -> String {
    let root = root.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
{server}
    }}
}}
"#
    )
}
