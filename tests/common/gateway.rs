//! The real `jwtgate` binary, started on OS-chosen loopback ports.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{
    DECISIONS, REQUESTS, Upstream, fixtures, free_port, http_client, metric_value, poll,
    relevant_lines,
};

/// The real `jwtgate` binary running `jwtgate run -c <tmp>/gateway.yaml`.
pub struct Gateway {
    child: Child,
    dir: tempfile::TempDir,
    proxy: SocketAddr,
    admin: SocketAddr,
    client: reqwest::Client,
}

const STARTUP_LIMIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
const START_ATTEMPTS: usize = 3;

impl Gateway {
    /// Starts the gateway with `template`, after replacing `{PROXY}`,
    /// `{ADMIN}`, `{UPSTREAM}` and `{FIXTURES}`, and waits until the
    /// gateway process itself listens on both ports and its admin answers
    /// `/healthz`. Retries with new ports when a port was taken between
    /// choosing it and the gateway binding it.
    pub async fn start(template: &str, upstream: &Upstream) -> Self {
        Self::start_with_args(template, upstream, &[]).await
    }

    /// [`Gateway::start`] with extra arguments before `run`, such as
    /// `--log-format json`.
    pub async fn start_with_args(template: &str, upstream: &Upstream, args: &[&str]) -> Self {
        Self::start_with_env(template, upstream, args, &[]).await
    }

    /// Like [`Gateway::start_with_args`], with extra environment variables.
    pub async fn start_with_env(
        template: &str,
        upstream: &Upstream,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_full(template, upstream, args, &[], env).await
    }

    /// Like [`Gateway::start`], with arguments after `run`, such as `--watch`.
    pub async fn start_with_run_args(
        template: &str,
        upstream: &Upstream,
        run_args: &[&str],
    ) -> Self {
        Self::start_full(template, upstream, &[], run_args, &[]).await
    }

    /// Every way to start: arguments before and after `run`, and extra
    /// environment variables.
    pub async fn start_full(
        template: &str,
        upstream: &Upstream,
        args: &[&str],
        run_args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_before(template, upstream.addr(), args, run_args, env).await
    }

    /// [`Gateway::start_full`] with `{UPSTREAM}` standing for `upstream`,
    /// a server other than the recording one.
    pub async fn start_before(
        template: &str,
        upstream: SocketAddr,
        args: &[&str],
        run_args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(template, upstream, args, run_args, env).await {
                Ok(gateway) => return gateway,
                Err(log) => last_log = log,
            }
        }
        panic!(
            "jwtgate did not start after {START_ATTEMPTS} attempts (ports in use); log:\n{last_log}"
        );
    }

    /// `Err(log)` only for a port conflict; any other failure panics.
    async fn try_start(
        template: &str,
        upstream: SocketAddr,
        args: &[&str],
        run_args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let proxy_port = free_port();
        let admin_port = free_port();
        let yaml = fill(template, proxy_port, admin_port, upstream);
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("gateway.yaml");
        std::fs::write(&config, &yaml).expect("write config");
        let stderr = File::create(dir.path().join("stderr.log")).expect("stderr file");
        let stdout = File::create(dir.path().join("stdout.log")).expect("stdout file");
        let child = Command::new(env!("CARGO_BIN_EXE_jwtgate"))
            .args(args)
            .arg("run")
            .args(run_args)
            .arg("-c")
            .arg(&config)
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn jwtgate");
        let client = http_client();
        let mut gateway = Self {
            child,
            dir,
            proxy: SocketAddr::from(([127, 0, 0, 1], proxy_port)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            client,
        };

        let deadline = Instant::now() + STARTUP_LIMIT;
        loop {
            if let Some(status) = gateway.child.try_wait().expect("query the jwtgate process") {
                // Read once it has exited, so the log is complete: a gateway
                // that found a port taken is retried, not reported as a crash.
                let log = gateway.log();
                if port_taken(&log) {
                    return Err(log);
                }
                panic!("jwtgate exited during startup ({status}); config:\n{yaml}\nlog:\n{log}");
            }
            let log = gateway.log();
            if port_taken(&log) {
                return Err(log);
            }
            // `free_port` released both ports, so until this process listens
            // on them either may belong to another listener: another test's
            // upstream or page server, or another program. Nothing is sent to
            // a port before it is known to be the gateway's own: a probe would
            // take that listener for the gateway, and reach its requests log.
            let listening = listening_ports(gateway.child.id());
            if listening.contains(&proxy_port) && listening.contains(&admin_port) {
                let response = gateway
                    .client
                    .get(gateway.admin_url("/healthz"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await;
                if matches!(response, Ok(r) if r.status() == 200) {
                    return Ok(gateway);
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "jwtgate was not ready within {STARTUP_LIMIT:?}; config:\n{yaml}\nlog:\n{log}"
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy
    }

    /// The config file the gateway runs with (rewrite it, then reload).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gateway.yaml")
    }

    /// `template` filled in as [`Gateway::start`] does, with this gateway's
    /// ports: a config the running gateway can reload.
    pub fn render(&self, template: &str, upstream: &Upstream) -> String {
        fill(
            template,
            self.proxy.port(),
            self.admin.port(),
            upstream.addr(),
        )
    }

    /// Replaces the config file with `template` (filled in as
    /// [`Gateway::render`] does) in one rename, so a reload never reads half
    /// a file.
    pub fn write_config(&self, template: &str, upstream: &Upstream) {
        let path = self.config_path();
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, self.render(template, upstream)).expect("write config");
        std::fs::rename(&temporary, &path).expect("rename config");
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// `GET path` on the proxy, with `Authorization: Bearer token` if given.
    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        self.get_with(path, token, &[]).await
    }

    /// [`Gateway::get`] with more request headers.
    pub async fn get_with(
        &self,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("request to the gateway")
    }

    /// The status of [`Gateway::get`].
    pub async fn status(&self, path: &str, token: Option<&str>) -> u16 {
        self.get(path, token).await.status().as_u16()
    }

    /// Waits until the admin `/readyz` answers 200 (every required issuer's
    /// keys are in); panics with the log after thirty seconds.
    pub async fn wait_ready(&self) {
        let limit = Duration::from_secs(30);
        poll(limit, POLL, || async {
            match self.admin_get("/readyz").await.status().as_u16() {
                200 => Ok(()),
                status => Err(format!(
                    "/readyz is still {status} after {limit:?}; log:\n{}",
                    self.log()
                )),
            }
        })
        .await
    }

    /// `GET path` on the admin listener.
    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.admin(reqwest::Method::GET, path).await
    }

    async fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::Response {
        self.client
            .request(method.clone(), self.admin_url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path} on the admin listener: {e}"))
    }

    /// `POST /-/reload`: the status and the body of the answer.
    pub async fn reload(&self) -> (u16, String) {
        let response = self.admin(reqwest::Method::POST, "/-/reload").await;
        let status = response.status().as_u16();
        (status, response.text().await.expect("reload body"))
    }

    /// [`Gateway::reload`], its JSON answer parsed.
    pub async fn reload_json(&self) -> (u16, Value) {
        let (status, body) = self.reload().await;
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("reload answer is not JSON ({e}): {body}"));
        (status, json)
    }

    /// The Prometheus text from the admin `/metrics`.
    pub async fn metrics(&self) -> String {
        let response = self.admin_get("/metrics").await;
        assert_eq!(response.status(), 200, "/metrics status");
        response.text().await.expect("metrics body")
    }

    /// Sum of every series of `name` whose labels include all of `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics().await, name, labels)
    }

    /// Waits until the metric reads exactly `expected`: some counters (the
    /// per-status request count) are updated in the logging phase, after
    /// the response was sent. Panics with the metrics text when it does not
    /// get there within ten seconds.
    pub async fn expect_metric(&self, name: &str, labels: &[(&str, &str)], expected: f64) {
        let limit = Duration::from_secs(10);
        self.expect_metric_within(name, labels, expected, limit)
            .await;
    }

    /// [`Gateway::expect_metric`], bounded by `limit`.
    pub async fn expect_metric_within(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        expected: f64,
        limit: Duration,
    ) {
        let wanted = expected.to_string();
        self.wait_for_metric(name, labels, limit, &wanted, |value| value == expected)
            .await;
    }

    /// Waits until the metric is at least `min`, for up to 30 seconds (a
    /// remote issuer's fetches are retried with backoff).
    pub async fn expect_metric_at_least(&self, name: &str, labels: &[(&str, &str)], min: f64) {
        let wanted = format!("at least {min}");
        let limit = Duration::from_secs(30);
        self.wait_for_metric(name, labels, limit, &wanted, |value| value >= min)
            .await;
    }

    /// Waits until the proxied requests answered with `status` that jwtgate
    /// refused for `reason` (the access log's) number `count`, on any route.
    pub async fn expect_refusals(&self, status: &str, reason: &str, count: f64) {
        let labels = [("adapter", "proxy"), ("status", status), ("reason", reason)];
        self.expect_metric(REQUESTS, &labels, count).await;
    }

    /// Waits until the requests `adapter` answered on `route` with
    /// `status`, refused for `reason` (`none`: not refused), number `count`.
    pub async fn expect_adapter_requests(
        &self,
        adapter: &str,
        [route, status, reason]: [&str; 3],
        count: f64,
    ) {
        let labels = [
            ("adapter", adapter),
            ("route", route),
            ("status", status),
            ("reason", reason),
        ];
        self.expect_metric(REQUESTS, &labels, count).await;
    }

    /// Waits until the requests of `route` answered with `status` number
    /// `count`, as [`Gateway::expect_metric`] does.
    pub async fn expect_requests(&self, route: &str, status: &str, count: f64) {
        let labels = [("route", route), ("status", status)];
        self.expect_metric(REQUESTS, &labels, count).await;
    }

    /// Waits until the decisions with `labels` number `count`, as
    /// [`Gateway::expect_metric`] does.
    pub async fn expect_decisions(&self, labels: &[(&str, &str)], count: f64) {
        self.expect_metric(DECISIONS, labels, count).await;
    }

    /// Polls the metric until `done` holds for its value; panics after
    /// `limit`, saying it was to be `wanted`.
    async fn wait_for_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        limit: Duration,
        wanted: &str,
        done: impl Fn(f64) -> bool,
    ) {
        poll(limit, POLL, || async {
            let text = self.metrics().await;
            let value = metric_value(&text, name, labels);
            if done(value) {
                return Ok(());
            }
            Err(format!(
                "{name}{labels:?} is {value}, expected {wanted} within {limit:?}; metrics:\n{}",
                relevant_lines(&text)
            ))
        })
        .await
    }

    /// Everything the process wrote to stderr and stdout so far.
    pub fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("stdout.log"))
    }

    /// The access-log line (target `jwtgate::access`) of the request whose
    /// `X-Request-Id` was `request_id`, once it is written. Logs carry no
    /// colour codes: stderr is a file here, not a terminal.
    pub async fn access_line(&self, request_id: &str) -> String {
        let needle = format!("request_id=\"{request_id}\"");
        let find = |log: &str| {
            log.lines()
                .find(|line| line.contains("jwtgate::access") && line.contains(&needle))
                .map(str::to_owned)
        };
        let log = self.wait_for_log(|log| find(log).is_some()).await;
        find(&log).unwrap_or_else(|| panic!("no access-log line for {request_id}:\n{log}"))
    }

    /// [`Gateway::access_line`], once asserted to contain each of `fields`.
    pub async fn expect_access_line(&self, request_id: &str, fields: &[&str]) -> String {
        let line = self.access_line(request_id).await;
        for field in fields {
            assert!(line.contains(field), "{field} not in {line}");
        }
        line
    }

    /// The first log line containing `needle`, once there is one (waiting as
    /// [`Gateway::wait_for_log`] does); panics with the log when none comes.
    pub async fn log_line(&self, needle: &str) -> String {
        let log = self.wait_for_log(|log| log.contains(needle)).await;
        log.lines()
            .find(|line| line.contains(needle))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no {needle:?} in the log:\n{log}"))
    }

    /// Polls [`Gateway::log`] until `done` holds for it or ten seconds pass,
    /// and returns the log as last read (the access log is written after the
    /// response). Never fails itself: the caller asserts on what it got.
    pub async fn wait_for_log(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if done(&log) || Instant::now() > deadline {
                return log;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Gateway {
    /// The process id, to send it signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the process signal `name` (`TERM`, `HUP`, ...) with `kill -s`.
    pub fn signal(&self, name: &str) {
        send_signal(self.pid(), name);
    }

    /// Waits up to `limit` for the process to exit; `None` if it still runs.
    pub async fn wait_for_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("query the jwtgate process") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// `kill -s NAME pid`.
pub fn send_signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s {name} {pid}: {status}");
}

/// `template` with the ports and addresses [`Gateway::start`] fills in.
pub fn fill(template: &str, proxy_port: u16, admin_port: u16, upstream: SocketAddr) -> String {
    template
        .replace("{PROXY}", &proxy_port.to_string())
        .replace("{ADMIN}", &admin_port.to_string())
        .replace("{UPSTREAM}", &upstream.to_string())
        .replace("{FIXTURES}", &fixtures().display().to_string())
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the gateway's log says a port it was given is taken: jwtgate's
/// own check before it starts (it then exits), or Pingora's bind, which
/// would go on retrying the port for half a minute.
fn port_taken(log: &str) -> bool {
    log.contains("Address already in use")
        || log.contains("AddrInUse")
        || log.contains("is in use, will try again")
}

/// The TCP ports that process `pid` itself listens on: the kernel's table
/// of listening sockets, kept to the sockets among the process's open files.
/// A port someone else listens on is not in it, whatever answers there.
pub fn listening_ports(pid: u32) -> std::collections::BTreeSet<u16> {
    let sockets: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    let mut ports = std::collections::BTreeSet::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        // After the header: `sl local_address rem_address st ... inode ...`,
        // the local address as HEXADDR:HEXPORT, state 0A for LISTEN.
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(&"0A"), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            if !inode.parse().is_ok_and(|inode| sockets.contains(&inode)) {
                continue;
            }
            if let Some(port) = local
                .rsplit_once(':')
                .and_then(|(_, port)| u16::from_str_radix(port, 16).ok())
            {
                ports.insert(port);
            }
        }
    }
    ports
}
