#!/usr/bin/env python3
"""jwtgate load harness: measures what JWT verification costs at the edge.

One command, from the repository root:

    python3 benches/load/run.py

It builds jwtgate (release), installs wrk and nginx-light if missing, starts a
fast nginx upstream and two jwtgate instances (token cache on / off) on free
127.0.0.1 ports, mints tokens with `jwtgate token mint`, and runs six wrk
workloads in interleaved rounds: direct (wrk -> nginx), auth-off, one-token,
distinct-tokens (cache off: every request is a full RS256 verification),
distinct-tokens-cached and invalid-tokens. Beside them, at the same worker
count, it runs the proxies jwtgate is compared with: a bare Pingora proxy
(examples/bare_proxy.rs, the framework's floor), nginx as a proxy_pass proxy
and HAProxy verifying the same RS256 tokens with jwt_verify on every request
(skip them with --no-compare). It writes summary.md (led by a table of CPU per
request beside those proxies), results.json and latency.svg to --out, and stops
every process it started on exit.

With --target URL --token-file FILE the same token workloads run against a
gateway you deployed yourself (nothing is started locally).

With --scale it measures latency and scale instead (scale.py): the maximum
rate at 1 and 2 worker threads, the latency added at a fixed rate (oha), and
RSS idle, with 10 000 idle keep-alive connections and after they close.

See benches/load/README.md for what the numbers mean.
Python 3 standard library only.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import datetime as dt
import hashlib
import json
import math
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from xml.sax.saxutils import escape

# scale.py (the --scale mode) imports this file as `run`; when it runs as a
# script that name must be this module, not a second copy with its own classes.
sys.modules.setdefault("run", sys.modules[__name__])

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LUA_SCRIPT = HERE / "load.lua"

DEMO_ISSUER = "https://issuer.jwtgate.example"
DEMO_AUDIENCE = "echo-api"
DEMO_KID = "demo-rs256"
DEMO_KEY = REPO / "deploy" / "dev-keys" / "rs256.pem"
DEMO_JWKS = REPO / "deploy" / "dev-keys" / "jwks.json"
IMPOSTOR_KEY = REPO / "tests" / "fixtures" / "keys" / "rsa-impostor.pem"
INVALID_TOKEN_COUNT = 300
WRK_TIMEOUT = "10s"
COOLDOWN_S = 1.0
PERCENTILES = [("p50", "p50_us"), ("p90", "p90_us"), ("p99", "p99_us"), ("p99.9", "p999_us")]

CLK_TCK = os.sysconf("SC_CLK_TCK")

# Loopback requests made by the harness itself (readiness, preflight, metrics)
# never go through an HTTP proxy from the environment.
NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def log(msg: str) -> None:
    print(f"[load] {msg}", file=sys.stderr, flush=True)


class HarnessError(Exception):
    pass


# --------------------------------------------------------------------------
# processes


try:
    _LIBC = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover
    _LIBC = None


def publish(out: Path, text: str) -> int:
    """A bench script's last step: its summary to summary.md and stdout; status 0."""
    (out / "summary.md").write_text(text + "\n")
    print(text)
    log(f"results in {out}")
    return 0


def exit_with(main) -> None:
    """Runs a bench script's `main` and exits with its status; a harness
    error is one line and status 2, not a traceback."""
    try:
        sys.exit(main())
    except HarnessError as exc:
        log(f"error: {exc}")
        sys.exit(2)


def _die_with_parent(sig: int):
    """preexec_fn: the child gets `sig` if this harness dies (even SIGKILL)."""

    def fn() -> None:
        if _LIBC is not None:
            _LIBC.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG

    return fn


def _proc_stat(pid: int):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    rest = data[data.rindex(")") + 2 :].split()
    # rest[0] = state (field 3), rest[2] = pgrp (5), rest[11] = utime (14), rest[12] = stime (15)
    return {"pgrp": int(rest[2]), "cpu_ticks": int(rest[11]) + int(rest[12])}


def group_pids(pgid: int) -> list[int]:
    """Processes in process group `pgid` (each child we start leads its own)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if st and st["pgrp"] == pgid:
                pids.append(int(entry))
    return pids


def group_cpu_seconds(pgid: int) -> float:
    ticks = 0
    for pid in group_pids(pgid):
        st = _proc_stat(pid)
        if st:
            ticks += st["cpu_ticks"]
    return ticks / CLK_TCK


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def group_rss_kib(pgid: int) -> int:
    """Resident memory of a process group: nginx's master and workers together."""
    return sum(rss_kib(pid) or 0 for pid in group_pids(pgid))


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle, since boot (from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) / CLK_TCK


class Processes:
    """Every long-running process the harness starts, so all can be stopped."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen, int]] = []

    def start(self, name, argv, *, stop_signal, log_path=None, env=None, cwd=None):
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if log_path else subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                start_new_session=True,  # own process group: Ctrl-C reaches only us
                preexec_fn=_die_with_parent(stop_signal),
            )
        finally:
            if log_path:
                out.close()
        self.procs.append((name, proc, stop_signal))
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        for i, (name, p, sig) in enumerate(self.procs):
            if p is proc:
                self._stop_one(name, p, sig)
                del self.procs[i]
                return

    @staticmethod
    def _stop_one(name: str, p: subprocess.Popen, sig: int) -> None:
        if p.poll() is None:
            try:
                p.send_signal(sig)
                p.wait(timeout=8)
            except subprocess.TimeoutExpired:
                log(f"{name} (pid {p.pid}) did not stop on {signal.Signals(sig).name}; killing its group")
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=8)
            except ProcessLookupError:
                pass
        # e.g. nginx workers: anything left in the group we created goes too.
        leftovers = group_pids(p.pid)
        if leftovers:
            log(f"{name}: killing leftover processes {leftovers}")
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop_all(self) -> None:
        while self.procs:
            name, p, sig = self.procs.pop()
            try:
                self._stop_one(name, p, sig)
            except Exception as exc:  # keep stopping the others
                log(f"stopping {name}: {exc}")


def _raise_on_signal(signum, _frame):
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------
# tools


def find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def find_haproxy() -> str | None:
    found = shutil.which("haproxy")
    if found:
        return found
    return "/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None


def ensure_packages(need_nginx: bool, need_haproxy: bool = False, need_h2load: bool = False) -> None:
    missing = []
    if need_h2load and not shutil.which("h2load"):
        missing.append("nghttp2-client")
    if need_h2load and not shutil.which("openssl") and "openssl" not in missing:
        missing.append("openssl")
    if not shutil.which("wrk"):
        missing.append("wrk")
    if need_nginx and not find_nginx():
        missing.append("nginx-light")
    if need_haproxy and not find_haproxy():
        missing.append("haproxy")
    if need_haproxy and not shutil.which("openssl"):
        missing.append("openssl")
    if not missing:
        return
    if not shutil.which("apt-get"):
        raise HarnessError(f"missing {', '.join(missing)} and no apt-get to install them; install them yourself")
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log(f"installing {' '.join(missing)} with apt-get")
    subprocess.run(prefix + ["apt-get", "update"], check=True, env=env)
    daemons_before = {name: _pids_named(name) for name in ("nginx", "haproxy")}
    subprocess.run(prefix + ["apt-get", "install", "-y", *missing], check=True, env=env)
    for name, before in daemons_before.items():
        started = sorted(set(_pids_named(name)) - set(before))
        if started:
            log(
                f"note: the {name} package's install scripts started a system {name} (pids {started}); "
                f"this harness does not use or stop it (`service {name} stop` does)"
            )


def _pids_named(comm: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == comm:
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


BARE_PROXY = REPO / "target" / "release" / "examples" / "bare_proxy"


def build_jwtgate(skip_build: bool, bare_proxy: bool) -> Path:
    binary = REPO / "target" / "release" / "jwtgate"
    if not skip_build:
        log("building jwtgate: cargo build --release --locked")
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=REPO, check=True)
        if bare_proxy:
            log("building the bare Pingora proxy: cargo build --release --locked --example bare_proxy")
            subprocess.run(["cargo", "build", "--release", "--locked", "--example", "bare_proxy"],
                           cwd=REPO, check=True)
    if not os.access(binary, os.X_OK):
        raise HarnessError(f"{binary} not found; run without --skip-build")
    if bare_proxy and not os.access(BARE_PROXY, os.X_OK):
        raise HarnessError(f"{BARE_PROXY} not found; run without --skip-build, or with --no-compare, or build it: "
                           "cargo build --release --locked --example bare_proxy")
    return binary


def tool_version(argv) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        text = (r.stdout + r.stderr).strip().splitlines()
        return text[0] if text else ""
    except Exception as exc:
        return f"unknown ({exc})"


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if not dirty:
            return rev
        # uncommitted changes to tracked files were built in: name them by a hash of the diff
        diff = subprocess.run(["git", "-C", str(REPO), "diff", "HEAD"], capture_output=True, timeout=30).stdout
        return f"{rev}+local-changes (git diff HEAD sha256 {hashlib.sha256(diff).hexdigest()[:12]})"
    except Exception:
        return "unknown"


# --------------------------------------------------------------------------
# network helpers (loopback only, except --target / --direct-url)


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def http_get(url: str, headers=None, timeout: float = 5.0):
    """(status, body) without following a proxy; HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with NO_PROXY_OPENER.open(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wait_until(check, what: str, proc: subprocess.Popen | None, log_path: Path | None, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise HarnessError(f"{what}: process exited with {proc.returncode}{_tail(log_path)}")
        try:
            if check():
                return
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        time.sleep(0.2)
    raise HarnessError(f"{what}: not ready after {timeout:.0f}s (last error: {last}){_tail(log_path)}")


def _tail(path: Path | None, n: int = 20) -> str:
    if not path or not path.exists():
        return ""
    lines = path.read_text(errors="replace").splitlines()[-n:]
    return f"\n--- last lines of {path} ---\n" + "\n".join(lines)


def scrape_metrics(admin: str) -> dict:
    """Counters we report per workload, from the admin /metrics endpoint."""
    status, body = http_get(f"http://{admin}/metrics")
    if status != 200:
        return {}
    out: dict = {"cache_hits": 0.0, "cache_misses": 0.0, "decisions": {}}
    for line in body.decode("utf-8", "replace").splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        try:
            v = float(value)
        except ValueError:
            continue
        name, _, labels = name_labels.partition("{")
        if name == "jwtgate_token_cache_hits_total":
            out["cache_hits"] += v
        elif name == "jwtgate_token_cache_misses_total":
            out["cache_misses"] += v
        elif name == "jwtgate_auth_decisions_total":
            lab = _parse_labels(labels.rstrip("}"))
            key = f"{lab.get('outcome', '?')}:{lab.get('reason', '?')}"
            out["decisions"][key] = out["decisions"].get(key, 0.0) + v
    return out


def _parse_labels(text: str) -> dict:
    labels = {}
    for part in text.split(","):
        k, _, v = part.partition("=")
        if k:
            labels[k.strip()] = v.strip().strip('"')
    return labels


def metrics_delta(before: dict, after: dict) -> dict:
    if not before or not after:
        return {}
    decisions = {}
    for k, v in after["decisions"].items():
        d = v - before["decisions"].get(k, 0.0)
        if d:
            decisions[k] = int(d)
    return {
        "cache_hits": int(after["cache_hits"] - before["cache_hits"]),
        "cache_misses": int(after["cache_misses"] - before["cache_misses"]),
        "auth_decisions": decisions,
    }


# --------------------------------------------------------------------------
# local setup: nginx, gateways, tokens


# What both generated nginx configs share: one process tree in a private prefix,
# no access log, long-lived client connections.
NGINX_HTTP_PREAMBLE = """\
daemon off;
master_process on;
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {log} warn;
events {{ worker_connections {worker_connections}; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
"""

NGINX_CONF = """\
# generated by benches/load/run.py: a fast upstream that answers "ok"
""" + NGINX_HTTP_PREAMBLE.replace("{workers}", "1").replace("{worker_connections}", "4096") + """\
    server {{
        listen 127.0.0.1:{port};
        default_type text/plain;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def start_nginx(procs: Processes, nginx: str, tmp: Path, out: Path, port: int):
    prefix = tmp / "nginx"
    prefix.mkdir()
    conf = NGINX_CONF.format(tmp=prefix, log=out / "nginx-error.log", port=port)
    conf_path = prefix / "nginx.conf"
    conf_path.write_text(conf)
    (out / "nginx.conf").write_text(conf)
    stderr_log = out / "nginx.stderr.log"
    proc = procs.start(
        "nginx",
        [nginx, "-p", f"{prefix}/", "-e", out / "nginx-error.log", "-c", conf_path],
        stop_signal=signal.SIGTERM,  # nginx: fast shutdown, the master stops its workers
        log_path=stderr_log,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_get(url + "/api")[0] == 200, "nginx", proc, out / "nginx-error.log", 30)
    return proc, f"127.0.0.1:{port}"


def gateway_yaml(listen: str, admin: str, upstream: str, threads: int, cache: bool,
                 authz: str | None = None, h2c: bool = False, https: tuple[str, Path, Path] | None = None,
                 extra_issuers: str = "", extra_routes: str = "") -> str:
    """`https` is (address, certificate, key) of a TLS listener (ALPN h2, then http/1.1); `extra_issuers` and
    `extra_routes` are YAML list items added to `issuers` and `routes` (introspection.py's)."""
    q = json.dumps  # JSON strings are valid YAML double-quoted scalars
    http = f"{{ addr: {q(listen)}, h2c: true }}" if h2c else q(listen)
    https_block = ""
    if https:
        addr, cert, key = https
        https_block = (f"  https:\n    addr: {q(addr)}\n"
                       f"    certificates: [{{ hosts: [localhost], cert: {q(str(cert))}, key: {q(str(key))} }}]\n")
    cache_block = "" if cache else "token_cache: { enabled: false }\n"
    # The envoy convention without a prefix: a decision request is the
    # original request itself, so the same wrk script drives it.
    authz_line = f"  authz: {{ addr: {q(authz)}, convention: envoy }}\n" if authz else ""
    return f"""\
# generated by benches/load/run.py (token cache {'on' if cache else 'off'})
listen:
  http: {http}
{https_block}{authz_line}admin:
  addr: {q(admin)}
server:
  threads: {threads}
{cache_block}issuers:
  - name: demo
    issuer: {q(DEMO_ISSUER)}
    algorithms: [RS256, ES256, EdDSA]
    audiences: [{DEMO_AUDIENCE}]
    leeway: 30s
    jwks_file: {q(str(DEMO_JWKS))}
{extra_issuers}routes:
  - name: "off"
    match: {{ path_prefix: /off }}
    upstream: {{ addrs: [{q(upstream)}] }}
    auth: {{ mode: "off" }}
  - name: api
    match: {{ path_prefix: /api }}
    upstream: {{ addrs: [{q(upstream)}] }}
    auth:
      mode: required
      issuers: [demo]
    forward:
      claims: {{ sub: X-User-Id }}
{extra_routes}"""


def start_gateway(procs, binary: Path, out: Path, tag: str, upstream: str, threads: int, cache: bool,
                  authz: str | None = None, h2c: bool = False, https: tuple[str, Path, Path] | None = None,
                  env: dict | None = None, extra_config: str = "", extra_issuers: str = "",
                  extra_routes: str = ""):
    """`extra_config`: top-level YAML blocks appended to gateway_yaml's (e.g. tracing.py's `telemetry`);
    `extra_issuers`, `extra_routes`: see gateway_yaml."""
    listen_port, admin_port = free_ports(2)
    listen, admin = f"127.0.0.1:{listen_port}", f"127.0.0.1:{admin_port}"
    cfg = out / f"gateway-{tag}.yaml"
    cfg.write_text(gateway_yaml(listen, admin, upstream, threads, cache, authz, h2c, https, extra_issuers,
                                extra_routes) + extra_config)
    check = subprocess.run([str(binary), "check", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise HarnessError(f"jwtgate check -c {cfg} failed:\n{check.stdout}{check.stderr}")
    log_path = out / f"gateway-{tag}.stderr.log"
    env = dict(os.environ, RUST_LOG="warn", NO_COLOR="1", **(env or {}))
    proc = procs.start(
        f"jwtgate ({tag})",
        [binary, "run", "-c", cfg],
        stop_signal=signal.SIGINT,  # jwtgate: SIGINT stops at once (SIGTERM drains for seconds)
        log_path=log_path,
        env=env,
    )
    wait_until(lambda: http_get(f"http://{admin}/readyz")[0] == 200, f"jwtgate ({tag}) /readyz", proc, log_path, 60)
    return proc, listen, admin


# --------------------------------------------------------------------------
# the proxies jwtgate is compared with, each at the gateway's worker count


def start_bare_pingora(procs, out: Path, upstream: str, threads: int, extra_args: tuple = ()):
    """examples/bare_proxy.rs: Pingora's ProxyHttp with only upstream_peer, default ServerConf.

    `extra_args`: its `--h2c`, `--tls` and `--h2-*` options."""
    port = free_ports(1)[0]
    listen = f"127.0.0.1:{port}"
    log_path = out / "pingora-bare.stderr.log"
    proc = procs.start(
        "bare Pingora proxy",
        [BARE_PROXY, "--listen", listen, "--upstream", upstream, "--threads", threads, *extra_args],
        stop_signal=signal.SIGINT,  # Pingora: SIGINT is the fast shutdown
        log_path=log_path,
        env=dict(os.environ, RUST_LOG="warn"),
    )
    wait_until(lambda: http_get(f"http://{listen}/api")[0] == 200, "bare Pingora proxy", proc, log_path, 30)
    return proc, listen


NGINX_PROXY_CONF = """\
# generated by benches/load/run.py: nginx as a reverse proxy (no auth) in front of the upstream
""" + NGINX_HTTP_PREAMBLE + """\
    # Keep upstream connections open, as Pingora's connection pool does.
    upstream backend {{
        server {upstream};
        keepalive 128;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
{extra_listen}        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def start_nginx_proxy(procs, nginx: str, tmp: Path, out: Path, upstream: str, workers: int,
                      worker_connections: int = 4096, extra_listen: str = ""):
    """`extra_listen`: more directives for the server block (https.py's HTTP/2 and TLS listeners)."""
    port = free_ports(1)[0]
    prefix = tmp / "nginx-proxy"
    prefix.mkdir()
    conf = NGINX_PROXY_CONF.format(tmp=prefix, log=out / "nginx-proxy-error.log", port=port,
                                   upstream=upstream, workers=workers, worker_connections=worker_connections,
                                   extra_listen=extra_listen)
    conf_path = prefix / "nginx.conf"
    conf_path.write_text(conf)
    (out / "nginx-proxy.conf").write_text(conf)
    proc = procs.start(
        "nginx proxy_pass",
        [nginx, "-p", f"{prefix}/", "-e", out / "nginx-proxy-error.log", "-c", conf_path],
        stop_signal=signal.SIGTERM,
        log_path=out / "nginx-proxy.stderr.log",
    )
    listen = f"127.0.0.1:{port}"
    wait_until(lambda: http_get(f"http://{listen}/api")[0] == 200, "nginx proxy_pass", proc,
               out / "nginx-proxy-error.log", 30)
    return proc, listen


# The checks jwtgate's `/api` route makes, in HAProxy 2.6's words: an RS256
# signature by the demo key, then iss, aud and exp (with jwtgate's 30 s leeway)
# on every request; HAProxy has no verified-token cache. `sub` is forwarded as
# X-User-Id and the token is not, as jwtgate does. `aud` is matched as a string,
# which is what `jwtgate token mint --aud` writes for one audience.
HAPROXY_CONF = """\
# generated by benches/load/run.py: HAProxy verifying RS256 JWTs on every request
global
    nbthread {threads}
    maxconn 4096
{global_extra}
defaults
    mode http
    timeout connect 5s
    timeout client 75s
    timeout server 75s
    timeout http-keep-alive 75s

frontend jwt
    bind 127.0.0.1:{port}
{extra_bind}    http-request set-var(txn.bearer) http_auth_bearer
    http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')
    http-request deny deny_status 401 unless {{ var(txn.alg) -m str RS256 }}
    http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_verify(txn.alg,"{public_key}") -m int 1 }}
    http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_payload_query('$.iss') -m str {issuer} }}
    http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_payload_query('$.aud') -m str {audience} }}
    http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int')
    http-request deny deny_status 401 unless {{ var(txn.exp) -m found }}
    http-request deny deny_status 401 if {{ date(-30),sub(txn.exp) -m int gt 0 }}
    http-request set-header X-User-Id %[var(txn.bearer),jwt_payload_query('$.sub')]
    http-request del-header Authorization
    default_backend upstream

backend upstream
    http-reuse always
    server nginx {upstream}
"""


def start_haproxy(procs, haproxy: str, tmp: Path, out: Path, upstream: str, threads: int,
                  extra_bind: str = "", global_extra: str = ""):
    """`extra_bind` and `global_extra`: https.py's TLS listener, with the same checks behind it."""
    public_key = tmp / "rs256.pub.pem"
    derive = subprocess.run(["openssl", "pkey", "-in", str(DEMO_KEY), "-pubout", "-out", str(public_key)],
                            capture_output=True, text=True, timeout=30)
    if derive.returncode != 0:
        raise HarnessError(f"openssl pkey -pubout {DEMO_KEY} failed: {derive.stderr}")
    port = free_ports(1)[0]
    conf = HAPROXY_CONF.format(threads=threads, port=port, public_key=public_key, issuer=DEMO_ISSUER,
                               audience=DEMO_AUDIENCE, upstream=upstream, extra_bind=extra_bind,
                               global_extra=global_extra)
    conf_path = out / "haproxy.cfg"
    conf_path.write_text(conf)
    check = subprocess.run([haproxy, "-c", "-f", str(conf_path)], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise HarnessError(f"haproxy -c -f {conf_path} failed:\n{check.stdout}{check.stderr}")
    log_path = out / "haproxy.stderr.log"
    proc = procs.start(
        "haproxy jwt_verify",
        [haproxy, "-db", "-f", conf_path],  # -db: foreground, one process with nbthread threads
        stop_signal=signal.SIGTERM,  # HAProxy: SIGTERM is the immediate stop
        log_path=log_path,
    )
    listen = f"127.0.0.1:{port}"
    wait_until(lambda: http_get(f"http://{listen}/api")[0] == 401, "haproxy", proc, log_path, 30)
    return proc, listen


def check_haproxy_rejects(binary: Path, listen: str, tmp: Path) -> None:
    """HAProxy must refuse what jwtgate refuses, or its row would not be measuring verification."""
    common = ["--kid", DEMO_KID, "--sub", "load", "--scope", "echo:read"]
    cases = [
        ("a bad signature", IMPOSTOR_KEY, ["--iss", DEMO_ISSUER, "--aud", DEMO_AUDIENCE]),
        ("another issuer", DEMO_KEY, ["--iss", "https://other.example", "--aud", DEMO_AUDIENCE]),
        ("another audience", DEMO_KEY, ["--iss", DEMO_ISSUER, "--aud", "other-api"]),
        ("an expired token", DEMO_KEY, ["--iss", DEMO_ISSUER, "--aud", DEMO_AUDIENCE, "--ttl=-5m"]),
    ]
    for what, key, claims in cases:
        r = subprocess.run([str(binary), "token", "mint", "--key", str(key), *common, *claims],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise HarnessError(f"token mint ({what}) failed: {r.stderr}")
        status, _ = http_get(f"http://{listen}/api", {"Authorization": f"Bearer {r.stdout.strip()}"})
        if status != 401:
            raise HarnessError(f"haproxy answered {status} to {what}, expected 401: its config does not "
                               f"check what jwtgate checks (see haproxy.cfg)")
    log(f"haproxy refuses {', '.join(c[0] for c in cases)} with 401, as jwtgate does")


def mint(binary: Path, key: Path, count: int, path: Path) -> list[str]:
    argv = [
        str(binary), "token", "mint", "--key", str(key), "--kid", DEMO_KID,
        "--iss", DEMO_ISSUER, "--aud", DEMO_AUDIENCE, "--sub", "load",
        "--scope", "echo:read", "--ttl", "2h", "--count", str(count),
    ]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise HarnessError(f"token mint failed: {r.stderr}")
    tokens = [t for t in r.stdout.splitlines() if t.strip()]
    if len(tokens) != count or len(set(tokens)) != count:
        raise HarnessError(f"token mint: expected {count} distinct tokens, got {len(set(tokens))}")
    path.write_text("\n".join(tokens) + "\n")
    return tokens


def corrupt_signatures(tokens: list[str], count: int) -> list[str]:
    """Bad-signature variants of `tokens`: same header and claims, one signature byte flipped."""
    out, seen = [], set()
    for i in range(count * 4):
        if len(out) >= count:
            break
        head, claims, sig = tokens[i % len(tokens)].split(".")
        raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
        if not raw:
            continue
        raw[i % len(raw)] ^= 1 + (i // len(raw)) % 255
        bad = f"{head}.{claims}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"
        if bad not in seen:
            seen.add(bad)
            out.append(bad)
    return out


# --------------------------------------------------------------------------
# workloads


class Workload:
    def __init__(self, name, description, url, expect, token_file=None, gateway=None, admin=None,
                 proxy="jwtgate"):
        self.name = name
        self.description = description
        self.url = url
        self.expect = expect  # "2xx" or "401"
        self.token_file = token_file
        # Popen of the proxy serving it, whose process group's CPU and RSS are
        # measured (jwtgate, or a proxy it is compared with); local mode only
        self.gateway = gateway
        self.admin = admin  # its admin address (metrics), jwtgate in local mode only
        # which proxy: jwtgate, pingora-bare, nginx-proxy, haproxy; None when there is none (direct)
        self.proxy = proxy if gateway is not None else None

    def as_json(self):
        return {"name": self.name, "description": self.description, "url": self.url, "expect": self.expect,
                "proxy": self.proxy}


def run_wrk(args, procs: Processes, w: Workload, others: dict, out_dir: Path, label: str) -> dict:
    argv = [
        "wrk", "-t", str(args.wrk_threads), "-c", str(args.connections), "-d", f"{args.duration}s",
        "--timeout", WRK_TIMEOUT, "-s", str(LUA_SCRIPT), w.url,
        "--", w.expect, str(args.wrk_threads),
    ]
    if w.token_file:
        argv.append(str(w.token_file))

    before_metrics = scrape_metrics(w.admin) if w.admin else {}
    cpu_before = {k: group_cpu_seconds(p.pid) for k, p in others.items()}
    gw_before = group_cpu_seconds(w.gateway.pid) if w.gateway else None
    busy_before = machine_busy_seconds()
    ru_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()

    log_path = out_dir / "wrk" / f"{label}.txt"
    log_path.parent.mkdir(exist_ok=True)
    proc = procs.start(f"wrk ({w.name})", argv, stop_signal=signal.SIGTERM, log_path=log_path)
    try:
        proc.wait(timeout=args.duration + 120)
    except subprocess.TimeoutExpired:
        procs.stop(proc)
        raise HarnessError(f"wrk ({w.name}) did not finish in time{_tail(log_path)}")
    procs.stop(proc)  # already exited: just forget it

    wall = time.monotonic() - t0
    ru_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = machine_busy_seconds() - busy_before
    gw_cpu = (group_cpu_seconds(w.gateway.pid) - gw_before) if w.gateway else None
    cpu = {k: group_cpu_seconds(p.pid) - cpu_before[k] for k, p in others.items()}
    wrk_cpu = (ru_after.ru_utime - ru_before.ru_utime) + (ru_after.ru_stime - ru_before.ru_stime)
    after_metrics = scrape_metrics(w.admin) if w.admin else {}

    text = log_path.read_text(errors="replace")
    if proc.returncode != 0:
        raise HarnessError(f"wrk ({w.name}) exited with {proc.returncode}{_tail(log_path)}")
    res = {}
    for line in text.splitlines():
        if line.startswith("JWTGATE_LOAD "):
            _, key, value = line.split(" ", 2)
            try:
                res[key] = float(value) if "." in value else int(value)
            except ValueError:
                res[key] = value
    if "rps" not in res:
        raise HarnessError(f"wrk ({w.name}) printed no results{_tail(log_path)}")

    ours = wrk_cpu + (gw_cpu or 0.0) + sum(cpu.values())
    record = {
        "wrk": res,
        "wall_s": round(wall, 3),
        "cpu_s": {
            "gateway": None if gw_cpu is None else round(gw_cpu, 3),
            **{k: round(v, 3) for k, v in cpu.items()},
            "wrk": round(wrk_cpu, 3),
            "machine_busy": round(busy, 3),
            "rest_of_machine": round(max(busy - ours, 0.0), 3),
        },
        "gateway_cpu_us_per_request": (
            round(gw_cpu / res["requests"] * 1e6, 2) if gw_cpu is not None and res["requests"] else None
        ),
        "gateway_rss_kib": group_rss_kib(w.gateway.pid) if w.gateway else None,
        "metrics": metrics_delta(before_metrics, after_metrics),
        "wrk_output": f"wrk/{label}.txt",
    }
    return record


def wrk_line(rec: dict) -> str:
    r = rec["wrk"]
    return (f"{r['rps']:>10,.0f} req/s  p50 {r['p50_us'] / 1000:.3f} ms  p99 {r['p99_us'] / 1000:.3f} ms  "
            f"2xx {r['status_2xx']:,} 401 {r['status_401']:,} errors {r['errors']:,}")


def standalone_arguments(p: argparse.ArgumentParser, quick: bool = True) -> None:
    """The options every standalone run takes: rounds and their length (`--quick`: 3 × 3 s), wrk's
    connections and threads as this run uses them, the jwtgate binary and the output folder."""
    p.add_argument("--duration", type=int, default=10, help="seconds per workload per round (default 10)")
    p.add_argument("--rounds", type=int, default=3)
    if quick:
        p.add_argument("--quick", action="store_true", help="3 rounds × 3 s")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32, as run.py)")
    p.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (default 2, as run.py)")
    p.add_argument("--binary", type=Path, default=REPO / "target" / "release" / "jwtgate")
    p.add_argument("--out", type=Path, default=None)


class Standalone:
    """A load run of its own beside this one's (dpop.py, tracing.py, identity.py), in a `with` block: its
    output folder (`out`, or a new temporary one), a scratch folder, its processes with nginx answering
    "ok" as the upstream (stopped when the block ends), its records and meta, and results.json."""

    def __init__(self, name: str, out: Path | None):
        self.out = (out or Path(tempfile.mkdtemp(prefix=f"jwtgate-{name}-"))).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"jwtgate-{name}-tmp-"))
        self.procs = Processes()
        self.records: list[dict] = []
        self.meta: dict = {}
        self.nginx = self.upstream = None

    def __enter__(self):
        ensure_packages(need_nginx=True)
        signal.signal(signal.SIGTERM, _raise_on_signal)
        try:
            self.nginx, self.upstream = start_nginx(self.procs, find_nginx(), self.tmp, self.out,
                                                    free_ports(1)[0])
        except BaseException:
            self.procs.stop_all()
            raise
        return self

    def __exit__(self, *_exc) -> bool:
        self.procs.stop_all()
        return False

    def save(self, summary=None, rounds=None) -> None:
        (self.out / "results.json").write_text(json.dumps({"meta": self.meta, "records": self.records,
                                                           "summary": summary, "per_round": rounds},
                                                          indent=2) + "\n")

    def run_rounds(self, args, workloads: list, measure, describe, others: dict) -> None:
        """run_rounds over `workloads`, recording into `records` and saving after each round."""
        run_rounds(args.rounds, workloads, measure, describe, self.records, self.save, others, self.out)


def run_rounds(rounds: int, workloads: list[Workload], measure, describe, records: list[dict], save,
               others: dict, out: Path) -> None:
    """Every workload once per round, `rounds` times: slow drift of the machine
    then spreads over all workloads instead of landing on one. Even rounds run
    the workloads in reverse order, so in each pair of rounds a workload and
    the one it is compared with (listed next to each other) each go first
    once, and a drift over a round cancels in their ratio instead of always
    favouring the one measured first.

    `measure(workload, label)` returns one record; it is tagged with its round
    and workload, appended to `records`, logged with `describe(record)` and
    saved at once, so an interrupted run keeps what it measured.
    """
    for rnd in range(1, rounds + 1):
        for w in (workloads if rnd % 2 else workloads[::-1]):
            rec = measure(w, f"r{rnd}-{w.name}")
            rec.update(round=rnd, workload=w.name)
            records.append(rec)
            log(f"round {rnd}/{rounds} {w.name:>22}: {describe(rec)}")
            save()
            for name, p in list(others.items()) + [("gateway", w.gateway)]:
                if p is not None and p.poll() is not None:
                    raise HarnessError(f"{name} exited during the run (code {p.returncode}); see logs in {out}")
            time.sleep(COOLDOWN_S)


def preflight(workloads: list[Workload], strict: bool) -> None:
    """One request per workload before loading, so a misconfiguration fails fast."""
    for w in workloads:
        headers = {}
        if w.token_file:
            first = Path(w.token_file).read_text().split("\n", 1)[0].strip()
            headers["Authorization"] = f"Bearer {first}"
        try:
            status, _ = http_get(w.url, headers)
        except (OSError, urllib.error.URLError) as exc:
            reason = getattr(exc, "reason", exc)
            if strict or not isinstance(reason, ssl.SSLError):
                raise HarnessError(f"preflight {w.name}: {w.url}: {exc}")
            log(f"warning: preflight {w.name}: {exc} (continuing: wrk does not verify TLS certificates)")
            continue
        ok = 200 <= status < 300 if w.expect == "2xx" else status == 401
        if not ok:
            raise HarnessError(f"preflight {w.name}: GET {w.url} answered {status}, expected {w.expect}")
        log(f"preflight {w.name}: {status} as expected")


# --------------------------------------------------------------------------
# summary


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(workloads: list[Workload], records: list[dict]) -> list[dict]:
    by = {w.name: [r for r in records if r["workload"] == w.name] for w in workloads}
    direct = {r["round"]: r for r in by.get("direct", [])}
    summary = []
    for w in workloads:
        rs = by[w.name]
        if not rs:
            continue
        s = {"workload": w.name, "rounds": len(rs), "expect": w.expect}
        rps = [r["wrk"]["rps"] for r in rs]
        s["rps_median"] = med(rps)
        s["rps_min"], s["rps_max"] = min(rps), max(rps)
        for label, key in PERCENTILES:
            s[f"{label}_ms"] = med([r["wrk"][key] / 1000 for r in rs])
        if direct and w.name != "direct":
            for label, key in (("p50", "p50_us"), ("p99", "p99_us")):
                diffs = [
                    (r["wrk"][key] - direct[r["round"]]["wrk"][key]) / 1000 for r in rs if r["round"] in direct
                ]
                s[f"added_{label}_ms"] = med(diffs)
        for k in ("requests", "status_2xx", "status_401", "status_other", "socket_errors",
                  "unexpected_status", "errors", "err_timeout"):
            s[f"total_{k}"] = sum(int(r["wrk"].get(k, 0)) for r in rs)
        for k in ("gateway", "nginx", "wrk", "rest_of_machine", "machine_busy"):
            s[f"{k}_cores"] = med(
                [r["cpu_s"][k] / r["wall_s"] if r["cpu_s"].get(k) is not None else None for r in rs]
            )
        cpu_per_request = [r["gateway_cpu_us_per_request"] for r in rs if r["gateway_cpu_us_per_request"] is not None]
        s["gateway_cpu_us_per_request"] = med(cpu_per_request)
        s["gateway_cpu_us_min"] = min(cpu_per_request) if cpu_per_request else None
        s["gateway_cpu_us_max"] = max(cpu_per_request) if cpu_per_request else None
        s["proxy"] = w.proxy
        s["total_cache_hits"] = sum(r["metrics"].get("cache_hits", 0) for r in rs) if rs[0]["metrics"] else None
        s["total_cache_misses"] = sum(r["metrics"].get("cache_misses", 0) for r in rs) if rs[0]["metrics"] else None
        decisions: dict = {}
        for r in rs:
            for k, v in r["metrics"].get("auth_decisions", {}).items():
                decisions[k] = decisions.get(k, 0) + v
        s["auth_decisions"] = decisions
        summary.append(s)
    return summary


# Which comparison workload each jwtgate workload is set beside, and
# jwtgate's performance goals for its ratios (reported, never pass/fail).
BARE, NGINX_PROXY = "pingora-bare", "nginx-proxy"
# Bare Pingora fed the one-token requests (it ignores the token and forwards
# it): a request with a ~600-byte Authorization header costs every proxy more
# to receive and parse than one without, so the rows whose requests carry a
# token are set beside this, and what is left is what authentication costs.
BARE_TOKEN = "pingora-bare-token"
HAPROXY_ONE, HAPROXY_DISTINCT = "haproxy-jwt-one-token", "haproxy-jwt-distinct-tokens"
BARE_FOR = {
    "one-token": BARE_TOKEN,
    "one-token-baseline": BARE_TOKEN,
    "authz": BARE_TOKEN,
    "distinct-tokens": BARE_TOKEN,
    "distinct-tokens-cached": BARE_TOKEN,
    "invalid-tokens": BARE_TOKEN,
}
HAPROXY_FOR = {
    "one-token": HAPROXY_ONE,
    "one-token-baseline": HAPROXY_ONE,
    "distinct-tokens": HAPROXY_DISTINCT,
    "distinct-tokens-cached": HAPROXY_DISTINCT,
}
TARGETS = {  # workload -> [(against, limit)]
    "auth-off": [(BARE, 1.10)],
    "one-token": [(BARE, 1.15), ("haproxy", 0.80)],
    "distinct-tokens": [("haproxy", 1.10)],
}


def compare(summary: list[dict], records: list[dict]) -> list[dict]:
    """Per jwtgate workload: its CPU µs/request beside the comparison proxies', and the ratios.

    A ratio is taken per round (both measured in the same round, so slow drift
    of the machine cancels), then the median and min–max over rounds are given.
    """
    per_round: dict = {}
    for r in records:
        if r.get("gateway_cpu_us_per_request") is not None:
            per_round.setdefault(r["workload"], {})[r["round"]] = r["gateway_cpu_us_per_request"]
    by_name = {s["workload"]: s for s in summary}

    def ratio(name, other):
        if other not in per_round or name not in per_round:
            return None
        xs = [v / per_round[other][rnd] for rnd, v in per_round[name].items()
              if per_round[other].get(rnd)]
        return {"median": med(xs), "min": min(xs), "max": max(xs)} if xs else None

    def cell(name):
        s = by_name.get(name)
        if not s or s.get("gateway_cpu_us_per_request") is None:
            return None
        return {"median": s["gateway_cpu_us_per_request"], "min": s["gateway_cpu_us_min"],
                "max": s["gateway_cpu_us_max"]}

    rows = []
    for s in summary:
        if s.get("proxy") != "jwtgate" or s.get("gateway_cpu_us_per_request") is None:
            continue
        name = s["workload"]
        haproxy = HAPROXY_FOR.get(name)
        # Older runs (and --no-compare) have no bare-with-token workload.
        bare = BARE_FOR.get(name, BARE) if cell(BARE_FOR.get(name, BARE)) else BARE
        row = {
            "workload": name,
            "jwtgate": cell(name),
            "bare_workload": bare if cell(bare) else None,
            BARE: cell(bare),
            NGINX_PROXY: cell(NGINX_PROXY),
            "haproxy_workload": haproxy if cell(haproxy) else None,
            "haproxy": cell(haproxy),
            "ratio_bare": ratio(name, bare),
            "ratio_nginx": ratio(name, NGINX_PROXY),
            "ratio_haproxy": ratio(name, haproxy) if haproxy else None,
            "targets": [],
        }
        for against, limit in TARGETS.get(name, []):
            got = row["ratio_bare" if against == BARE else "ratio_haproxy"]
            row["targets"].append({
                "ratio": f"÷ {'bare Pingora' if against == BARE else 'HAProxy'}",
                "limit": limit,
                "median": got["median"] if got else None,
                "met": None if not got else got["median"] <= limit,
            })
        rows.append(row)
    return rows


def comparison_md(rows: list[dict], meta: dict) -> list[str]:
    def us(c):
        return "–" if not c else f"{c['median']:.1f} ({c['min']:.0f}–{c['max']:.0f})"

    def ratio(c):
        return "–" if not c else f"{c['median']:.2f} ({c['min']:.2f}–{c['max']:.2f})"

    def target(t):
        if t["median"] is None:
            return f"{t['ratio']} ≤ {t['limit']:.2f}: not measured"
        return f"{t['ratio']} ≤ {t['limit']:.2f}: {'met' if t['met'] else 'not met'}"

    threads = meta["options"]["gateway_threads"]
    lines = [
        "## CPU per request beside the proxies users compare with",
        "",
        f"CPU µs the proxy's processes spent per request (user + system ÷ requests), median over rounds "
        f"(min–max in brackets); every proxy runs {threads} worker thread{'s' if threads != 1 else ''} "
        "in front of the same nginx upstream, in the same interleaved rounds. Bare Pingora and nginx "
        "`proxy_pass` do no auth; bare Pingora gets the same requests as the jwtgate row (no token for "
        f"`auth-off`, the one reused token, ignored and forwarded, for the rows with tokens: `{BARE_TOKEN}`); "
        "HAProxy verifies the RS256 signature, iss, aud and exp on every request, "
        "with the same token set as the jwtgate row (one reused token, or the distinct tokens). "
        "A ratio is jwtgate ÷ the other proxy in the same round, median (min–max) over rounds. "
        "Targets are jwtgate's performance goals, reported, not enforced.",
        "",
        "| jwtgate workload | jwtgate | bare Pingora | nginx proxy_pass | HAProxy jwt_verify "
        "| ÷ bare Pingora | ÷ nginx | ÷ HAProxy | targets |",
        "|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {us(r['jwtgate'])} | {us(r[BARE])} | {us(r[NGINX_PROXY])} "
            f"| {us(r['haproxy'])} | {ratio(r['ratio_bare'])} | {ratio(r['ratio_nginx'])} "
            f"| {ratio(r['ratio_haproxy'])} | {'; '.join(target(t) for t in r['targets']) or '–'} |"
        )
    return lines + [""]


def fmt(x, digits=3):
    if x is None:
        return "–"
    return f"{x:.{digits}f}"


def fmt_rps(x):
    return "–" if x is None else f"{x:,.0f}"


def fmt_signed(x):
    return "–" if x is None else f"{x:+.3f}"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_summary_md(path: Path, meta: dict, workloads: list[Workload], summary: list[dict],
                     comparison: list[dict]) -> None:
    o = meta["options"]
    lines = [
        f"# jwtgate load test, {meta['started_at']}",
        "",
        f"- Command: `{meta['command']}`",
        f"- Machine: {meta['machine']['cores']} cores, {meta['machine']['cpu_model']}, "
        f"Linux {meta['machine']['kernel']}; load average at start {meta['machine']['loadavg_start']}",
        f"- wrk: {o['wrk_threads']} threads, {o['connections']} connections, {o['duration']} s per workload "
        f"per round, {o['rounds']} round{'s' if o['rounds'] != 1 else ''} (interleaved), request timeout {WRK_TIMEOUT}",
    ]
    if meta["mode"] == "local":
        lines += [
            f"- {meta['versions']['jwtgate']} (release build of git {meta['versions']['git']}), "
            f"`server.threads: {o['gateway_threads']}`, `RUST_LOG=warn` (no access log lines)",
            f"- Upstream: {meta['versions']['nginx'].replace('nginx version: ', '')}, 1 worker, `return 200 \"ok\\n\"`, access log off; "
            f"all on 127.0.0.1, load generator, gateway and upstream share the machine",
            f"- Tokens: {o['tokens']} distinct RS256 tokens (demo issuer, 2048-bit key), "
            f"{meta['invalid_tokens']} distinct bad-signature tokens",
        ]
    else:
        lines += [
            f"- Target: `{meta['target']}` with {meta['valid_tokens']} tokens from `{o['token_file']}`, "
            f"{meta['invalid_tokens']} bad-signature variants; direct baseline: `{o['direct_url'] or 'none'}`",
        ]
    if comparison:
        lines += [f"- Compared with: {', '.join(meta['versions'][k] for k in ('pingora-bare', 'haproxy') if k in meta['versions'])}"
                  + ("; nginx proxy_pass is a second instance of the upstream's nginx binary" if "nginx-proxy" in meta.get("endpoints", {}) else "")]
    lines += [
        f"- {meta['versions']['wrk']}",
        "",
    ]
    if comparison:
        lines += comparison_md(comparison, meta) + ["## Latency and throughput", ""]
    lines += [
        "Latencies in ms; each value is the median over rounds. \"Added\" is the median over rounds of "
        "(workload − direct) in the same round. 401 and errors are totals over all rounds.",
        "",
        "| workload | req/s (median) | req/s min–max | p50 | p90 | p99 | p99.9 | added p50 | added p99 | 401 | errors |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for s in summary:
        lines.append(
            f"| {s['workload']} | {fmt_rps(s['rps_median'])} | {fmt_rps(s['rps_min'])}–{fmt_rps(s['rps_max'])} "
            f"| {fmt(s['p50_ms'])} | {fmt(s['p90_ms'])} | {fmt(s['p99_ms'])} | {fmt(s['p99.9_ms'])} "
            f"| {fmt_signed(s.get('added_p50_ms'))} | {fmt_signed(s.get('added_p99_ms'))} "
            f"| {s['total_status_401']:,} | {s['total_errors']:,} |"
        )
    lines += ["", "Workloads:", ""]
    for w in workloads:
        lines.append(f"- `{w.name}`: {w.description} (expects {w.expect})")
    lines += [
        "",
        "## CPU (median over rounds)",
        "",
        "\"cores\" = CPU seconds used ÷ wall seconds; \"proxy\" is the process group of the proxy the "
        "workload goes through (jwtgate, or the proxy it is compared with); \"nginx\" is the upstream; "
        "\"rest of machine\" is everything else running on the host meanwhile (other builds on a shared machine)."
        + ("" if meta["mode"] == "local" else
           " With --target only this (the load generator's) machine is measured: a gateway or upstream "
           "running here counts as \"rest of machine\"."),
        "",
        "| workload | proxy | proxy cores | proxy CPU µs/request | min–max | nginx cores | wrk cores "
        "| rest of machine cores | cache hits | cache misses | auth decisions (outcome:reason) |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for s in summary:
        dec = ", ".join(f"{k} {v:,}" for k, v in sorted(s["auth_decisions"].items())) or "–"
        hits = "–" if s["total_cache_hits"] is None else f"{s['total_cache_hits']:,}"
        misses = "–" if s["total_cache_misses"] is None else f"{s['total_cache_misses']:,}"
        lines.append(
            f"| {s['workload']} | {s.get('proxy') or '–'} | {fmt(s['gateway_cores'], 2)} "
            f"| {fmt(s['gateway_cpu_us_per_request'], 1)} "
            f"| {'–' if s.get('gateway_cpu_us_min') is None else fmt(s['gateway_cpu_us_min'], 0) + '–' + fmt(s['gateway_cpu_us_max'], 0)} "
            f"| {fmt(s['nginx_cores'], 2)} | {fmt(s['wrk_cores'], 2)} | {fmt(s['rest_of_machine_cores'], 2)} "
            f"| {hits} | {misses} | {dec} |"
        )
    notes = findings(summary) + meta.get("log_findings", [])
    lines += ["", "## Findings", ""] + [f"- {n}" for n in notes]
    lines += ["", "Files: `results.json` (every round's raw numbers), `latency.svg`, `wrk/` (raw wrk output), "
              "gateway/nginx configs and logs.", ""]
    path.write_text("\n".join(lines))


def gateway_log_findings(out: Path, bounds: dict) -> list[str]:
    """What the gateways logged at warn/error level (RUST_LOG=warn) during the run.

    `bounds`: log file name -> connections × wrk runs against that gateway, the
    most "client went away" errors that wrk's end-of-run closes can explain.
    """
    notes = []
    for path in sorted(out.glob("gateway-*.stderr.log")):
        lines = path.read_text(errors="replace").splitlines()
        closed = sum("Downstream ConnectionClosed" in line for line in lines)
        other = [line for line in lines if line.strip() and "Downstream ConnectionClosed" not in line]
        bound = bounds.get(path.name, 0)
        if closed and closed <= bound:
            notes.append(
                f"`{path.name}`: {closed} \"Downstream ConnectionClosed … before response header is sent\" "
                f"errors, within the {bound} that wrk can cause by closing its connections with requests in "
                "flight when each run ends; not failed requests"
            )
        elif closed:
            notes.append(
                f"**`{path.name}`: {closed} \"Downstream ConnectionClosed\" errors**, more than the {bound} "
                "that end-of-run closes explain: clients dropped connections mid-run"
            )
        if other:
            notes.append(f"`{path.name}`: {len(other)} other warning/error lines, e.g. `{other[0][:200]}`")
    return notes


def findings(summary: list[dict]) -> list[str]:
    notes = []
    for s in summary:
        if s["total_errors"]:
            parts = []
            if s["expect"] == "2xx" and s["total_status_401"]:
                parts.append(f"{s['total_status_401']:,} unexpected 401")
            if s["expect"] == "401" and s["total_status_2xx"]:
                parts.append(f"{s['total_status_2xx']:,} ACCEPTED invalid tokens (2xx)")
            if s["total_status_other"]:
                parts.append(f"{s['total_status_other']:,} other statuses")
            if s["total_socket_errors"]:
                parts.append(f"{s['total_socket_errors']:,} socket errors/timeouts")
            notes.append(f"**{s['workload']}: {s['total_errors']:,} errors** ({'; '.join(parts)})")
        spread = (s["rps_max"] - s["rps_min"]) / s["rps_median"] if s["rps_median"] else 0
        if spread > 0.15:
            notes.append(
                f"{s['workload']}: req/s varied {spread:.0%} between rounds ({fmt_rps(s['rps_min'])}–"
                f"{fmt_rps(s['rps_max'])}); treat differences smaller than that as noise"
            )
    if not any(s["total_errors"] for s in summary):
        notes.append("no errors: every workload got only the statuses it expects")
    gw = [s for s in summary if s.get("gateway_cpu_us_per_request") is not None and s.get("proxy") == "jwtgate"]
    if gw:
        top = max(gw, key=lambda s: s["gateway_cpu_us_per_request"])
        notes.append(
            f"most jwtgate CPU per request: {top['workload']} "
            f"({fmt(top['gateway_cpu_us_per_request'], 1)} µs/request, {fmt(top['gateway_cores'], 2)} cores busy)"
        )
    rest = [s["rest_of_machine_cores"] for s in summary if s.get("rest_of_machine_cores") is not None]
    if rest and max(rest) > 0.25:
        notes.append(
            f"other processes used up to {max(rest):.2f} cores during the runs: the machine was shared, "
            "absolute numbers are pessimistic and noisier"
        )
    return notes


# --------------------------------------------------------------------------
# SVG chart


def write_svg(path: Path, summary: list[dict], title: str, subtitle: str) -> None:
    series = [("p50", "#4C78A8"), ("p90", "#F58518"), ("p99", "#E45756"), ("p99.9", "#72B7B2")]
    values = [s[f"{k}_ms"] for s in summary for k, _ in series if s.get(f"{k}_ms")]
    if not values:
        return
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    if hi / lo < 10:
        hi = lo * 10

    W, H = 1000, 560
    left, right, top, bottom = 80, 170, 70, 90
    pw, ph = W - left - right, H - top - bottom

    def y(v):
        return top + ph - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * ph

    e = []
    e.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
             'font-family="DejaVu Sans, Helvetica, Arial, sans-serif">')
    e.append(f'<rect x="0" y="0" width="{W}" height="{H}" fill="white"/>')
    e.append(f'<text x="{W / 2}" y="28" text-anchor="middle" font-size="18" font-weight="bold">{escape(title)}</text>')
    e.append(f'<text x="{W / 2}" y="50" text-anchor="middle" font-size="12" fill="#444">{escape(subtitle)}</text>')

    # y grid and ticks (1, 2, 5 per decade)
    decade = lo
    while decade <= hi * 1.0001:
        for m in (1, 2, 5):
            v = decade * m
            if v < lo * 0.9999 or v > hi * 1.0001:
                continue
            yy = y(v)
            major = m == 1
            e.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{left + pw}" y2="{yy:.1f}" '
                     f'stroke="{"#bbb" if major else "#e5e5e5"}" stroke-width="1"/>')
            label = f"{v:g}"
            e.append(f'<text x="{left - 8}" y="{yy + 4:.1f}" text-anchor="end" font-size="12">{label}</text>')
        decade *= 10
    e.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#333"/>')
    e.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#333"/>')
    e.append(f'<text transform="translate(22 {top + ph / 2}) rotate(-90)" text-anchor="middle" font-size="14">'
             'latency (ms, log scale)</text>')
    e.append(f'<text x="{left + pw / 2}" y="{H - 18}" text-anchor="middle" font-size="14">'
             'workload (median req/s below the name)</text>')

    n = len(summary)
    gw = pw / n
    bw = min(30.0, gw * 0.8 / len(series))
    for i, s in enumerate(summary):
        gx = left + gw * i + (gw - bw * len(series)) / 2
        for j, (k, color) in enumerate(series):
            v = s.get(f"{k}_ms")
            if not v:
                continue
            x = gx + j * bw
            yy = y(max(v, lo))
            e.append(f'<rect x="{x:.1f}" y="{yy:.1f}" width="{bw - 2:.1f}" height="{top + ph - yy:.1f}" '
                     f'fill="{color}"><title>{escape(s["workload"])} {k}: {v:.3f} ms</title></rect>')
            e.append(f'<text x="{x + (bw - 2) / 2:.1f}" y="{yy - 4:.1f}" text-anchor="middle" font-size="9">'
                     f'{_short(v)}</text>')
        cx = left + gw * i + gw / 2
        e.append(f'<text x="{cx:.1f}" y="{top + ph + 20}" text-anchor="middle" font-size="12">'
                 f'{escape(s["workload"])}</text>')
        e.append(f'<text x="{cx:.1f}" y="{top + ph + 36}" text-anchor="middle" font-size="11" fill="#555">'
                 f'{fmt_rps(s["rps_median"])} req/s</text>')

    lx, ly = left + pw + 20, top + 10
    e.append(f'<text x="{lx}" y="{ly}" font-size="13" font-weight="bold">percentile</text>')
    for j, (k, color) in enumerate(series):
        yy = ly + 14 + j * 22
        e.append(f'<rect x="{lx}" y="{yy}" width="16" height="14" fill="{color}"/>')
        e.append(f'<text x="{lx + 24}" y="{yy + 12}" font-size="13">{k}</text>')
    e.append("</svg>")
    path.write_text("\n".join(e) + "\n")


def _short(v: float) -> str:
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


# --------------------------------------------------------------------------
# main


def parse_args(argv):
    cores = os.cpu_count() or 1
    p = argparse.ArgumentParser(
        prog="run.py",
        description="jwtgate load harness: wrk against a local nginx, and against jwtgate with auth off, one "
        "cached token, distinct tokens (cache off / on) and invalid tokens. Writes summary.md, results.json "
        "and latency.svg. All load goes to 127.0.0.1 unless --target/--direct-url say otherwise.",
        epilog="Example: python3 benches/load/run.py --duration 5 --rounds 3. See benches/load/README.md.",
    )
    p.add_argument("--duration", type=int, default=None, help="seconds per workload per round (default 10; 3 with --quick)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; each runs every workload once (default 3)")
    p.add_argument("--quick", action="store_true",
                   help="a short run for before/after checks of a change: 3 s per workload, 1000 tokens "
                   "(explicit --duration/--tokens still win)")
    p.add_argument("--baseline-binary", type=Path, metavar="PATH",
                   help="also start this jwtgate binary (e.g. one built from the previous commit) and run the "
                   "auth-off and one-token workloads against it in the same interleaved rounds, so a change "
                   "is compared with its baseline on equal terms")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--tokens", type=int, default=None, help="distinct valid tokens to mint (default 5000; 1000 with --quick)")
    p.add_argument("--gateway-threads", type=int, default=cores,
                   help=f"jwtgate server.threads (default: number of cores, here {cores})")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default benches/load/results/<timestamp>)")
    p.add_argument("--target", metavar="URL",
                   help="run the token workloads against this deployed gateway URL (e.g. https://gw.example/api); "
                   "starts nothing locally; needs --token-file")
    p.add_argument("--token-file", type=Path,
                   help="with --target: file of valid tokens for that gateway, one per line")
    p.add_argument("--direct-url", metavar="URL",
                   help="with --target: the upstream's URL without the gateway, measured as the 'direct' baseline")
    p.add_argument("--skip-build", action="store_true",
                   help="use the existing target/release/jwtgate (and target/release/examples/bare_proxy) instead "
                   "of running cargo build --release --locked")
    p.add_argument("--no-compare", action="store_true",
                   help="skip the proxies jwtgate is compared with (bare Pingora, nginx proxy_pass, HAProxy "
                   "jwt_verify): only jwtgate's workloads (and --baseline-binary's) run, e.g. for a quicker --quick")
    p.add_argument("--scale", action="store_true",
                   help="latency and scale instead of the workloads above: maximum rate at 1 and 2 worker threads, "
                   "latency added at a fixed rate (oha), and RSS idle, with --idle-connections idle keep-alive "
                   "connections and after they close; jwtgate beside bare Pingora and nginx proxy_pass")
    p.add_argument("--idle-connections", type=int, default=None, metavar="N",
                   help="with --scale: idle keep-alive client connections held open for the memory reading "
                   "(default 10000)")
    p.add_argument("--https", action="store_true",
                   help="also run the HTTPS workloads (h2load over TLS: keep-alive HTTP/1.1 and HTTP/2, and a new "
                   "connection per request) against jwtgate and, unless --no-compare, bare Pingora, nginx and "
                   "HAProxy (see https.py)")
    p.add_argument("--new-connections", type=int, default=None, metavar="N",
                   help="with --https: connections (one request each) per new-connection run (default 3000; "
                   "1500 with --quick)")
    p.add_argument("--handshake-rate", type=int, default=1000, metavar="PER_S",
                   help="with --https: new connections opened per second in the new-connection runs (default 1000)")
    p.add_argument("--memory-only", action="store_true",
                   help="with --scale: only the memory readings (HTTP/1.1, h2c, TLS h2), not the maximum rate and "
                   "latency runs")
    p.add_argument("--bare-h2", action="append", default=[], metavar="OPTIONS",
                   help="with --scale: also read bare Pingora's HTTP/2 memory with these HTTP/2 settings of "
                   "examples/bare_proxy.rs, e.g. \"--h2-window 16384\" (repeatable: one row per protocol each)")
    p.add_argument("--rate", type=float, default=None, metavar="REQ_PER_S",
                   help="with --scale: the fixed rate of the latency runs (default: half of jwtgate's measured "
                   "1-thread maximum)")
    args = p.parse_args(argv)
    if args.duration is None:
        args.duration = 3 if args.quick else (5 if args.scale else 10)
    if args.tokens is None:
        args.tokens = 1000 if args.quick else 5000
    if args.new_connections is None:
        args.new_connections = 1500 if args.quick else 3000
    if args.https and (args.target or args.scale):
        p.error("--https starts its own proxies and goes without --target and --scale")
    if args.new_connections < 1 or args.handshake_rate < 1:
        p.error("--new-connections and --handshake-rate must be at least 1")
    if args.baseline_binary and args.target:
        p.error("--baseline-binary starts a local gateway; it does not go with --target")
    if args.baseline_binary and not os.access(args.baseline_binary, os.X_OK):
        p.error(f"{args.baseline_binary}: not an executable")
    for name in ("duration", "rounds", "connections", "wrk_threads", "tokens", "gateway_threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.connections < args.wrk_threads:
        p.error("--connections must be at least --wrk-threads (wrk opens at least one per thread)")
    if args.target and not args.token_file:
        p.error("--target needs --token-file (tokens minted by your issuer for that gateway)")
    if args.scale and args.target:
        p.error("--scale starts its own proxies on loopback; it does not go with --target")
    if not args.scale and (args.rate is not None or args.idle_connections is not None or args.memory_only
                           or args.bare_h2):
        p.error("--rate, --idle-connections, --memory-only and --bare-h2 go with --scale")
    if args.bare_h2 and args.no_compare:
        p.error("--bare-h2 adds bare Pingora rows; it does not go with --no-compare")
    if args.idle_connections is None:
        args.idle_connections = 10000
    if args.idle_connections < 1:
        p.error("--idle-connections must be at least 1")
    if args.rate is not None and not args.rate > 0:
        p.error("--rate must be above 0")
    if args.target:
        args.no_compare = True  # nothing is started locally, so there is nothing to compare with
    if (args.token_file or args.direct_url) and not args.target:
        p.error("--token-file and --direct-url go with --target")
    for url in (args.target, args.direct_url):
        if url and urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            p.error(f"{url}: expected an http:// or https:// URL")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now()
    out = args.out or (HERE / "results" / started.strftime("%Y%m%d-%H%M%S"))
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    command = shlex.join([Path(sys.executable).name] + sys.argv)
    log(f"output: {out}")

    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="jwtgate-load-"))
    # Ctrl-C stops a run even when started from a shell that ignores SIGINT in
    # background jobs; SIGHUP is left alone under nohup.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_on_signal)
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
        signal.signal(signal.SIGHUP, _raise_on_signal)
    try:
        if args.scale:
            import scale  # the --scale mode, kept in its own module

            return scale.run(args, out, tmp, procs, started, command)
        return _run(args, out, tmp, procs, started, command)
    except HarnessError as exc:
        log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted; stopping everything this harness started")
        return 130
    except SystemExit as exc:
        log(f"stopped by a signal; stopping everything this harness started")
        return int(exc.code) if isinstance(exc.code, int) else 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run_meta(args, out: Path, started: dt.datetime, command: str, mode: str) -> dict:
    """What every results.json starts with: the run, its options and the machine."""
    meta = {
        "started_at": started.isoformat(timespec="seconds"),
        "command": command,
        "cwd": os.getcwd(),
        "mode": mode,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            "cores": os.cpu_count(),
            "cpu_model": cpu_model(),
            "kernel": platform.release(),
            "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        },
        "wrk_timeout": WRK_TIMEOUT,
        "versions": {"wrk": tool_version(["wrk", "-v"])},
    }
    meta["options"]["out"] = str(out)
    return meta


def _run(args, out: Path, tmp: Path, procs: Processes, started: dt.datetime, command: str) -> int:
    local = not args.target
    compare_proxies = local and not args.no_compare
    ensure_packages(need_nginx=local, need_haproxy=compare_proxies, need_h2load=args.https)
    meta = run_meta(args, out, started, command, "local" if local else "target")

    others: dict = {}
    workloads: list[Workload] = []
    tls: dict = {}  # proxy name -> its TLS address, with --https
    opaque_endpoint = None  # the introspection workload's endpoint, local mode only
    if local:
        binary = build_jwtgate(args.skip_build, bare_proxy=compare_proxies)
        nginx = find_nginx()
        meta["versions"].update(
            jwtgate=tool_version([str(binary), "--version"]), git=git_revision(), nginx=tool_version([nginx, "-v"])
        )
        valid_file, invalid_file = tmp / "tokens.txt", tmp / "invalid-tokens.txt"
        log(f"minting {args.tokens} RS256 tokens and {INVALID_TOKEN_COUNT} bad-signature tokens")
        mint(binary, DEMO_KEY, args.tokens, valid_file)
        mint(binary, IMPOSTOR_KEY, INVALID_TOKEN_COUNT, invalid_file)
        one_file = tmp / "one-token.txt"
        one_file.write_text(valid_file.read_text().split("\n", 1)[0] + "\n")
        meta["invalid_tokens"] = INVALID_TOKEN_COUNT

        (nginx_proc, upstream) = start_nginx(procs, nginx, tmp, out, free_ports(1)[0])
        others["nginx"] = nginx_proc
        log(f"nginx upstream on {upstream}")
        authz_on = f"127.0.0.1:{free_ports(1)[0]}"
        if args.https:
            import https  # the HTTPS workloads, kept in their own module

            cert = https.make_certificate(tmp)
            tls["jwtgate"] = f"127.0.0.1:{free_ports(1)[0]}"
        gw_on, listen_on, admin_on = start_gateway(
            procs, binary, out, "cache-on", upstream, args.gateway_threads, cache=True, authz=authz_on,
            https=(tls["jwtgate"], cert.cert, cert.key) if tls else None)
        gw_off, listen_off, admin_off = start_gateway(procs, binary, out, "cache-off", upstream,
                                                      args.gateway_threads, cache=False)
        log(f"jwtgate cache on: {listen_on} (admin {admin_on}); cache off: {listen_off} (admin {admin_off})")
        meta["endpoints"] = {"nginx": upstream, "gateway_cache_on": listen_on, "gateway_cache_off": listen_off,
                             "gateway_authz": authz_on}
        log_tags = {id(gw_on): "cache-on", id(gw_off): "cache-off"}  # each gateway's stderr log
        workloads = [
            Workload("direct", "wrk → nginx, no gateway (baseline)", f"http://{upstream}/api", "2xx"),
            Workload("auth-off", "wrk → jwtgate `/off` (auth mode off) → nginx", f"http://{listen_on}/off", "2xx",
                     gateway=gw_on, admin=admin_on),
            Workload("one-token", "one RS256 token reused → `/api`, cache on (cache hits)",
                     f"http://{listen_on}/api", "2xx", one_file, gw_on, admin_on),
            Workload("authz",
                     "the same token → the authorization listener (`listen.authz`, envoy convention): "
                     "a decision request for `/api`, answered 200 with X-User-Id, nothing proxied",
                     f"http://{authz_on}/api", "2xx", one_file, gw_on, admin_on),
            Workload("distinct-tokens",
                     f"{args.tokens} distinct RS256 tokens round-robin → `/api`, cache DISABLED "
                     "(every request is a full signature verification)",
                     f"http://{listen_off}/api", "2xx", valid_file, gw_off, admin_off),
            Workload("distinct-tokens-cached",
                     f"the same {args.tokens} tokens → `/api`, cache on (misses until each token was seen once)",
                     f"http://{listen_on}/api", "2xx", valid_file, gw_on, admin_on),
            Workload("invalid-tokens",
                     f"{INVALID_TOKEN_COUNT} distinct bad-signature tokens (impostor key, kid demo-rs256) "
                     "→ `/api`, cache on",
                     f"http://{listen_on}/api", "401", invalid_file, gw_on, admin_on),
        ]
        if args.baseline_binary:
            baseline = args.baseline_binary.resolve()
            meta["versions"]["baseline"] = tool_version([str(baseline), "--version"])
            if tls:
                tls["jwtgate-baseline"] = f"127.0.0.1:{free_ports(1)[0]}"
            gw_base, listen_base, admin_base = start_gateway(
                procs, baseline, out, "baseline", upstream, args.gateway_threads, cache=True,
                https=(tls["jwtgate-baseline"], cert.cert, cert.key) if tls else None)
            log(f"baseline jwtgate ({baseline}): {listen_base} (admin {admin_base})")
            meta["endpoints"]["gateway_baseline"] = listen_base
            log_tags[id(gw_base)] = "baseline"
            # Each baseline workload runs right after its counterpart, so both see the same machine.
            workloads.insert(2, Workload("auth-off-baseline", "the same as auth-off, against --baseline-binary",
                                         f"http://{listen_base}/off", "2xx", gateway=gw_base, admin=admin_base))
            workloads.insert(4, Workload("one-token-baseline", "the same as one-token, against --baseline-binary",
                                         f"http://{listen_base}/api", "2xx", one_file, gw_base, admin_base))
        if compare_proxies:
            threads = args.gateway_threads
            haproxy = find_haproxy()
            meta["versions"]["pingora-bare"] = "bare Pingora proxy (examples/bare_proxy.rs, release build)"
            meta["versions"]["haproxy"] = tool_version([haproxy, "-v"])
            bare_args, nginx_listen, hap_bind, hap_global = (), "", "", ""
            if tls:
                for name in (BARE, NGINX_PROXY, "haproxy"):
                    tls[name] = f"127.0.0.1:{free_ports(1)[0]}"
                bare_args = ("--tls", tls[BARE], "--cert", cert.cert, "--key", cert.key)
                nginx_listen = https.nginx_listen(cert, None, int(tls[NGINX_PROXY].rsplit(":", 1)[1]))
                hap_bind, hap_global = https.haproxy_bind(cert, int(tls["haproxy"].rsplit(":", 1)[1]))
            bare, listen_bare = start_bare_pingora(procs, out, upstream, threads, bare_args)
            nginx_proxy, listen_nginx_proxy = start_nginx_proxy(procs, nginx, tmp, out, upstream, threads,
                                                                extra_listen=nginx_listen)
            hap, listen_hap = start_haproxy(procs, haproxy, tmp, out, upstream, threads, hap_bind, hap_global)
            check_haproxy_rejects(binary, listen_hap, tmp)
            log(f"bare Pingora: {listen_bare}; nginx proxy_pass: {listen_nginx_proxy}; haproxy jwt_verify: {listen_hap}")
            meta["endpoints"].update({BARE: listen_bare, NGINX_PROXY: listen_nginx_proxy, "haproxy": listen_hap})
            # Each runs right after the jwtgate workload it is compared with.
            def after(name, *new):
                i = next(i for i, w in enumerate(workloads) if w.name == name)
                workloads[i + 1:i + 1] = list(new)
            after("auth-off",
                  Workload(BARE, "wrk → bare Pingora proxy (examples/bare_proxy.rs, no auth) → nginx",
                           f"http://{listen_bare}/off", "2xx", gateway=bare, proxy=BARE),
                  Workload(NGINX_PROXY, "wrk → nginx `proxy_pass` (no auth, keep-alive upstream) → nginx",
                           f"http://{listen_nginx_proxy}/off", "2xx", gateway=nginx_proxy, proxy=NGINX_PROXY))
            after("one-token",
                  Workload(BARE_TOKEN, "one RS256 token reused → bare Pingora proxy (no auth: the token is "
                           "forwarded untouched) → nginx", f"http://{listen_bare}/api", "2xx", one_file,
                           gateway=bare, proxy=BARE),
                  Workload(HAPROXY_ONE, "one RS256 token reused → HAProxy `jwt_verify` (verifies every request: "
                           "signature, iss, aud, exp) → nginx", f"http://{listen_hap}/api", "2xx", one_file,
                           gateway=hap, proxy="haproxy"))
            after("distinct-tokens",
                  Workload(HAPROXY_DISTINCT, f"the same {args.tokens} distinct RS256 tokens round-robin → HAProxy "
                           "`jwt_verify` (every request verified) → nginx", f"http://{listen_hap}/api", "2xx",
                           valid_file, gateway=hap, proxy="haproxy"))
        import introspection  # the opaque-token workload, kept in its own module

        opaque_endpoint, opaque = introspection.start(procs, binary, out, tmp, upstream, args.gateway_threads,
                                                      one_file)
        meta["endpoints"]["gateway_introspection"] = opaque[0].url
        log_tags[id(opaque[0].gateway)] = introspection.NAME
        # Right after the JWT workload they are compared with.
        i = next(i for i, w in enumerate(workloads) if w.name == introspection.COMPARED_WITH)
        workloads[i + 1:i + 1] = opaque
        preflight(workloads, strict=True)
        introspection.check_refusals(opaque[0])
    else:
        tokens = [t.strip() for t in args.token_file.read_text().splitlines() if t.strip()]
        if not tokens:
            raise HarnessError(f"{args.token_file}: no tokens")
        valid_file, invalid_file, one_file = tmp / "tokens.txt", tmp / "invalid-tokens.txt", tmp / "one-token.txt"
        valid_file.write_text("\n".join(tokens) + "\n")
        one_file.write_text(tokens[0] + "\n")
        bad = corrupt_signatures(tokens, INVALID_TOKEN_COUNT)
        invalid_file.write_text("\n".join(bad) + "\n")
        meta.update(target=args.target, valid_tokens=len(tokens), invalid_tokens=len(bad))
        log(f"target mode: load goes to {args.target}" + (f" and {args.direct_url}" if args.direct_url else ""))
        if args.direct_url:
            workloads.append(Workload("direct", "wrk → the upstream, without the gateway (baseline)",
                                      args.direct_url, "2xx"))
        workloads += [
            Workload("one-token", "the first token of the file, reused", args.target, "2xx", one_file),
            Workload("distinct-tokens", f"{len(tokens)} tokens from the file, round-robin", args.target, "2xx",
                     valid_file),
            Workload("invalid-tokens", f"{len(bad)} bad-signature variants of those tokens (one signature byte "
                     "flipped)", args.target, "401", invalid_file),
        ]
        preflight(workloads, strict=False)

    meta["workloads"] = [w.as_json() for w in workloads]
    records: list[dict] = []
    results_path = out / "results.json"

    def save(summary=None, comparison=None):
        results_path.write_text(json.dumps({"meta": meta, "rounds": records, "summary": summary,
                                            "comparison": comparison}, indent=2) + "\n")

    total = args.rounds * len(workloads)
    log(f"{args.rounds} rounds × {len(workloads)} workloads × {args.duration}s "
        f"(≈{total * (args.duration + COOLDOWN_S + 1):.0f}s)")
    run_rounds(args.rounds, workloads, lambda w, label: run_wrk(args, procs, w, others, out, label), wrk_line,
               records, save, others, out)

    summary = summarize(workloads, records)
    if opaque_endpoint is not None:
        meta["introspection"] = introspection.results(records, opaque_endpoint)
        opaque_endpoint.stop()
    https_rows: list[dict] = []
    if tls:
        gateways = {"jwtgate": gw_on}
        if args.baseline_binary:
            gateways["jwtgate-baseline"] = gw_base
        if compare_proxies:
            gateways.update({BARE: bare, NGINX_PROXY: nginx_proxy, "haproxy": hap})
        https_workloads = https.workloads(tls, one_file, gateways)
        meta["https_workloads"] = [w.description for w in https_workloads]

        def save_https(https_records):
            meta["https"] = {"rounds": https_records, "table": https_rows}
            save(summary)

        https_records = https.run_https(args, procs, https_workloads, others, out, save_https)
        https_rows = https.https_table(https_workloads, https_records)
        save_https(https_records)
        meta["versions"]["h2load"] = tool_version([https.h2load_path(), "--version"])
    if local:
        bounds: dict = {}
        for w in workloads:
            if w.gateway is not None and w.proxy == "jwtgate":
                name = f"gateway-{log_tags[id(w.gateway)]}.stderr.log"
                bounds[name] = bounds.get(name, 0) + args.connections * args.rounds
        meta["log_findings"] = gateway_log_findings(out, bounds)
    comparison = compare(summary, records) if local and not args.no_compare else []
    meta["finished_at"] = dt.datetime.now().isoformat(timespec="seconds")
    save(summary, comparison)
    write_summary_md(out / "summary.md", meta, workloads, summary, comparison)
    if opaque_endpoint is not None:
        with open(out / "summary.md", "a") as f:
            f.write("\n" + "\n".join(introspection.summary_md(summary, meta["introspection"])))
    if https_rows:
        with open(out / "summary.md", "a") as f:
            f.write("\n" + "\n".join(https.https_md(https_rows, args, meta["versions"]["h2load"])))
    o = args
    write_svg(
        out / "latency.svg",
        summary,
        "jwtgate latency by workload" + ("" if local else f" ({urllib.parse.urlsplit(args.target).netloc})"),
        f"median of {o.rounds} round{'s' if o.rounds != 1 else ''} × {o.duration}s; wrk {o.wrk_threads} threads, {o.connections} connections; "
        f"{meta['machine']['cores']} cores ({meta['machine']['cpu_model']})"
        + (f"; gateway threads {o.gateway_threads}" if local else ""),
    )
    if shutil.which("rsvg-convert"):
        subprocess.run(["rsvg-convert", "-o", str(out / "latency.png"), str(out / "latency.svg")], check=False)
    print((out / "summary.md").read_text())
    log(f"results in {out}")
    return 1 if any(s["total_errors"] for s in summary) else 0


if __name__ == "__main__":
    sys.exit(main())
