"""The load harness's --scale mode: latency and scale.

    python3 benches/load/run.py --scale

On loopback, for jwtgate (a route with `auth.mode: off`, and one RS256 token
served from the verified-token cache) beside a bare Pingora proxy and nginx
`proxy_pass`, all in front of the same nginx upstream:

1. maximum rate: wrk (closed loop) at 1 and at 2 worker threads, interleaved
   rounds, req/s and CPU µs per request;
2. latency added at a fixed rate: oha (open loop, `-q`, coordinated omission
   corrected) at half of jwtgate's 1-thread maximum, straight to the upstream
   and through each proxy at the same rate and connection count, interleaved
   rounds;
3. memory: RSS idle, while N keep-alive client connections that each made one
   request sit idle, and a few seconds after the client closed them: over
   HTTP/1.1, and over HTTP/2 with prior knowledge (h2c) and over TLS (ALPN
   h2), whose client is idle_h2_client.py (the pinned `h2` package, in the
   tools virtualenv); jwtgate's HTTP/2 listeners beside nginx's `http2` ones
   and bare Pingora's, with the same client and counts.

Process start and stop, ports, the upstream and the proxies, wrk, CPU
accounting and the interleaved rounds are run.py's; this module only adds what
the three measurements need. See README.md, "Latency and scale".
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import resource
import shutil
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import https
import run as h

THREADS = (1, 2)
RATE_SHARE = 0.5  # the fixed rate, as a share of jwtgate's 1-thread maximum

# oha is not packaged by Debian: installed from crates.io into a cache outside
# the repository, at a version whose flags and JSON output this module reads.
OHA_VERSION = "1.16.0"
OHA_ROOT = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jwtgate-load"

# Open files a proxy needs beside its client sockets: listeners, upstream
# connections, logs, the runtime's own descriptors.
FD_HEADROOM = 1024
# Client connections being opened at once: stays well under the listen
# backlogs, so no SYN is dropped and retried (which would take a second).
OPEN_CONCURRENCY = 200
OPEN_TIMEOUT_S = 30.0
QUIET_S = 1.0  # no traffic for this long before an RSS reading
AFTER_CLOSE_S = 3.0  # from the proxy closing its last client socket to the after-close reading
RELEASE_TIMEOUT_S = 60.0

# jwtgate's performance goals, reported beside the numbers, never pass/fail.
TARGET_ADDED_P99_MS = 1.0
TARGET_IDLE_MIB = 30.0
TARGET_KIB_PER_CONNECTION = 8.0
# "Memory returned after close": at most this share of what the idle
# connections added is still resident after they closed.
TARGET_KEPT_SHARE = 0.10

LATENCY_PERCENTILES = ("p50", "p90", "p99", "p99.9")  # keys of oha's latencyPercentiles


@dataclass
class Route:
    workload: str  # its name in the tables
    path: str
    token_file: Path | None
    description: str


@dataclass
class Proxy:
    name: str  # jwtgate, jwtgate-baseline, pingora-bare, nginx-proxy
    start: object  # (threads, out_dir, tmp_dir, max_connections) -> (Popen, listen, admin or None)
    routes: list[Route]
    log_file: str | None = None  # jwtgate's stderr log, whose warnings the findings list


@dataclass
class Instance:
    proxy: Proxy
    threads: int
    proc: subprocess.Popen
    listen: str
    admin: str | None


# The HTTP/2 memory readings: each proxy's listener for that protocol.
H2_PROTOCOLS = {"h2c": "HTTP/2, prior knowledge (h2c)", "h2": "HTTP/2 over TLS (ALPN h2)"}
H2_CLIENT = h.HERE / "idle_h2_client.py"
H2_REQUIREMENT = "h2==4.4.1"  # as scripts/test installs it


# --------------------------------------------------------------------------
# tools and limits


def raise_open_files_limit(connections: int) -> None:
    """Lets this harness and the proxies it starts (they inherit it) hold `connections` sockets each."""
    need = connections + FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        raise h.HarnessError(
            f"--idle-connections {connections} needs {need} open files per process, but the hard limit "
            f"(ulimit -Hn) is {hard}: raise it (as root: `ulimit -Hn {need}` in the shell that starts the "
            f"harness, or LimitNOFILE= for a service) or lower --idle-connections"
        )
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
        h.log(f"open files limit raised from {soft} to {need} for the harness and the proxies it starts")


def ensure_oha() -> str:
    """The pinned oha from the cache, or one on PATH, or install the pinned one there."""
    cached = OHA_ROOT / "bin" / "oha"
    if os.access(cached, os.X_OK):
        return str(cached)
    found = shutil.which("oha")
    if found:
        return found
    if not shutil.which("cargo"):
        raise h.HarnessError("oha is missing and there is no cargo to install it with; install oha yourself")
    argv = ["cargo", "install", "oha", "--locked", "--version", OHA_VERSION, "--root", str(OHA_ROOT)]
    h.log(f"installing oha (takes a few minutes, once): {' '.join(argv)}")
    OHA_ROOT.mkdir(parents=True, exist_ok=True)
    # From outside the repository, so no cargo config of the repository applies to oha's build.
    r = subprocess.run(argv, cwd=OHA_ROOT)
    if r.returncode != 0 or not os.access(cached, os.X_OK):
        raise h.HarnessError(f"`{' '.join(argv)}` failed (exit {r.returncode}); see its output above")
    return str(cached)


# --------------------------------------------------------------------------
# the proxies


def proxy_set(args, procs, binary: Path, nginx: str, upstream: str, one_token: Path) -> list[Proxy]:
    """jwtgate (and --baseline-binary's), then unless --no-compare bare Pingora and nginx proxy_pass."""

    def jwtgate(name, label, gateway_binary, suffix, tag):
        def start(threads, out, tmp, max_connections):
            return h.start_gateway(procs, gateway_binary, out, tag, upstream, threads, cache=True)

        return Proxy(name, start, [
            Route(f"auth-off{suffix}", "/off", None, f"{label}, route with auth off"),
            Route(f"one-token{suffix}", "/api", one_token, f"{label}, one RS256 token (cache hits)"),
        ], log_file=f"gateway-{tag}.stderr.log")

    def bare(threads, out, tmp, max_connections):
        proc, listen = h.start_bare_pingora(procs, out, upstream, threads)
        return proc, listen, None

    def nginx_proxy(threads, out, tmp, max_connections):
        proc, listen = h.start_nginx_proxy(procs, nginx, tmp, out, upstream, threads,
                                           worker_connections=max_connections)
        return proc, listen, None

    proxies = [jwtgate("jwtgate", "jwtgate", binary, "", "cache-on")]
    if args.baseline_binary:
        proxies.append(jwtgate("jwtgate-baseline", "baseline jwtgate", args.baseline_binary.resolve(),
                               "-baseline", "baseline"))
    if not args.no_compare:
        proxies += [
            Proxy(h.BARE, bare, [Route(h.BARE, "/off", None, "bare Pingora proxy, no auth")]),
            Proxy(h.NGINX_PROXY, nginx_proxy,
                  [Route(h.NGINX_PROXY, "/off", None, "nginx proxy_pass, no auth")]),
        ]
    return proxies


def h2_starters(args, procs, binary: Path, nginx: str, upstream: str, cert: https.Certificate) -> dict:
    """Per proxy name, (threads, out, tmp, max_connections, protocol) -> (Popen, the protocol's address, admin).

    jwtgate with `listen.http.h2c` and `listen.https`; nginx with `listen … http2` and `listen … ssl http2`;
    bare Pingora with `--h2c` and `--tls`: each measured on one listener, the other idle.
    """

    def jwtgate(gateway_binary, tag):
        def start(threads, out, tmp, max_connections, protocol):
            tls = f"127.0.0.1:{h.free_ports(1)[0]}"
            proc, listen, admin = h.start_gateway(procs, gateway_binary, out, f"{tag}-{protocol}", upstream, threads,
                                                  cache=True, h2c=True, https=(tls, cert.cert, cert.key))
            return proc, listen if protocol == "h2c" else tls, admin

        return start

    def nginx_proxy(threads, out, tmp, max_connections, protocol):
        h2c_port, tls_port = h.free_ports(2)
        proc, _ = h.start_nginx_proxy(procs, nginx, tmp, out, upstream, threads, worker_connections=max_connections,
                                      extra_listen=https.nginx_listen(cert, h2c_port, tls_port))
        return proc, f"127.0.0.1:{h2c_port if protocol == 'h2c' else tls_port}", None

    def bare(settings: tuple = ()):
        def start(threads, out, tmp, max_connections, protocol):
            tls = f"127.0.0.1:{h.free_ports(1)[0]}"
            proc, listen = h.start_bare_pingora(procs, out, upstream, threads, (
                "--h2c", "--tls", tls, "--cert", cert.cert, "--key", cert.key, *settings))
            return proc, listen if protocol == "h2c" else tls, None

        return start

    starters = {"jwtgate": jwtgate(binary, "cache-on")}
    if args.baseline_binary:
        starters["jwtgate-baseline"] = jwtgate(args.baseline_binary.resolve(), "baseline")
    if not args.no_compare:
        starters[h.BARE] = bare()
        starters[h.NGINX_PROXY] = nginx_proxy
    for variant in args.bare_h2:
        starters[f"{h.BARE} {variant}"] = bare(tuple(variant.split()))
    return starters


def tools_python() -> str:
    """The tools virtualenv's Python, which has the pinned `h2` for idle_h2_client.py."""
    tools = Path(os.environ.get("JWTGATE_TOOLS") or h.REPO / ".tools")
    python = tools / "venv" / "bin" / "python"
    if not os.access(python, os.X_OK) or subprocess.run([str(python), "-c", "import h2"],
                                                        capture_output=True).returncode != 0:
        raise h.HarnessError(f"the HTTP/2 memory readings need Python's h2 in {tools}/venv: "
                             f"scripts/setup pymod:h2={H2_REQUIREMENT} (scripts/test installs it)")
    return str(python)


def start_instance(proxy: Proxy, threads: int, out: Path, tmp: Path, max_connections: int) -> Instance:
    """Each instance gets directories of its own, so its config and logs don't clash with the others'."""
    out.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    proc, listen, admin = proxy.start(threads, out, tmp, max_connections)
    return Instance(proxy, threads, proc, listen, admin)


def bearer(token_file: Path) -> str:
    """The Authorization value for the first token of `token_file`."""
    return f"Bearer {token_file.read_text().split(chr(10), 1)[0].strip()}"


def workload_for(inst: Instance, route: Route, name: str) -> h.Workload:
    return h.Workload(name, f"{route.description}, {inst.threads} worker thread{'s' if inst.threads != 1 else ''}",
                      f"http://{inst.listen}{route.path}", "2xx", route.token_file, gateway=inst.proc,
                      admin=inst.admin, proxy=inst.proxy.name)


# --------------------------------------------------------------------------
# 1. maximum rate at 1 and 2 worker threads (wrk, closed loop)


def throughput_table(proxies: list[Proxy], summary: list[dict], records: list[dict]) -> list[dict]:
    """One row per proxy route: req/s and CPU µs per request at each thread count, and 2 threads ÷ 1."""
    by_name = {s["workload"]: s for s in summary}
    rows = []
    for proxy in proxies:
        for route in proxy.routes:
            row = {"workload": route.workload, "proxy": proxy.name, "threads": {}}
            for t in THREADS:
                s = by_name.get(f"{route.workload}-{t}t")
                if not s:
                    continue
                row["threads"][str(t)] = {
                    "rps": {"median": s["rps_median"], "min": s["rps_min"], "max": s["rps_max"]},
                    "cpu_us_per_request": {"median": s["gateway_cpu_us_per_request"],
                                           "min": s["gateway_cpu_us_min"], "max": s["gateway_cpu_us_max"]},
                    "p99_ms": s["p99_ms"],
                    "errors": s["total_errors"],
                }
            one = {r["round"]: r["wrk"]["rps"] for r in records if r["workload"] == f"{route.workload}-1t"}
            two = {r["round"]: r["wrk"]["rps"] for r in records if r["workload"] == f"{route.workload}-2t"}
            ratios = [two[rnd] / one[rnd] for rnd in one if rnd in two and one[rnd]]
            row["rps_2_over_1"] = ({"median": h.med(ratios), "min": min(ratios), "max": max(ratios)}
                                   if ratios else None)
            rows.append(row)
    return rows


# --------------------------------------------------------------------------
# 2. latency at a fixed rate (oha, open loop)


def fixed_rate(args, throughput: list[dict]) -> tuple[float, str]:
    """--rate, or half of the lower of jwtgate's 1-thread maxima, so every jwtgate route runs at most at half load."""
    if args.rate is not None:
        return args.rate, "given with --rate"
    maxima = [(row["threads"]["1"]["rps"]["median"], row["workload"]) for row in throughput
              if row["proxy"] == "jwtgate" and "1" in row["threads"]]
    rps, workload = min(maxima)
    return round(rps * RATE_SHARE), f"{RATE_SHARE:.0%} of jwtgate's 1-thread maximum, {workload}'s {rps:,.0f} req/s"


def run_oha(oha: str, args, procs, w: h.Workload, rate: float, upstream_proc, out: Path, label: str) -> dict:
    """One fixed-rate run; its latency percentiles, statuses and the proxy's CPU per request."""
    result_path = out / "oha" / f"{label}.json"
    result_path.parent.mkdir(exist_ok=True)
    argv = [oha, "-z", f"{args.duration}s", "--wait-ongoing-requests-after-deadline", "-c", args.connections,
            "-q", rate, "--latency-correction", "--no-tui", "-t", h.WRK_TIMEOUT,
            "--output-format", "json", "--output", result_path, w.url]
    if w.token_file:
        argv[-1:-1] = ["-H", f"Authorization: {bearer(Path(w.token_file))}"]
    measured = w.gateway if w.gateway is not None else upstream_proc
    cpu_before = h.group_cpu_seconds(measured.pid)
    t0 = time.monotonic()
    log_path = out / "oha" / f"{label}.log"
    proc = procs.start(f"oha ({w.name})", argv, stop_signal=signal.SIGTERM, log_path=log_path)
    try:
        proc.wait(timeout=args.duration + 120)
    except subprocess.TimeoutExpired:
        procs.stop(proc)
        raise h.HarnessError(f"oha ({w.name}) did not finish in time{h._tail(log_path)}")
    procs.stop(proc)  # already exited: just forget it
    wall = time.monotonic() - t0
    cpu = h.group_cpu_seconds(measured.pid) - cpu_before
    if proc.returncode != 0 or not result_path.exists():
        raise h.HarnessError(f"oha ({w.name}) exited with {proc.returncode}{h._tail(log_path)}")
    res = json.loads(result_path.read_text())
    statuses = {k: int(v) for k, v in res.get("statusCodeDistribution", {}).items()}
    errors = {k: int(v) for k, v in res.get("errorDistribution", {}).items()}
    responses = sum(statuses.values())
    if not responses:
        raise h.HarnessError(f"oha ({w.name}) got no responses: {errors or 'no errors either'}{h._tail(log_path)}")
    pct = res["latencyPercentiles"]
    return {
        "oha": {
            "rate": rate,
            "rps": res["summary"]["requestsPerSec"],
            "responses": responses,
            "statuses": statuses,
            "errors": errors,
            "unexpected": responses - statuses.get("200", 0) + sum(errors.values()),
            **{f"{p}_ms": pct[p] * 1000 for p in LATENCY_PERCENTILES},
        },
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "cpu_us_per_request": round(cpu / responses * 1e6, 2),
        "measured_process": "proxy" if w.gateway is not None else "upstream nginx",
        "oha_output": f"oha/{label}.json",
    }


def oha_line(rec: dict) -> str:
    r = rec["oha"]
    return (f"{r['rps']:>10,.0f} req/s  p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
            f"p99.9 {r['p99.9_ms']:.3f} ms  not 200 {r['unexpected']:,}")


def latency_table(workloads: list[h.Workload], records: list[dict]) -> list[dict]:
    """Medians over rounds; "added" is through the proxy minus direct in the same round, then the median."""
    direct = {r["round"]: r["oha"] for r in records if r["workload"] == "direct"}
    rows = []
    for w in workloads:
        rs = [r for r in records if r["workload"] == w.name]
        if not rs:
            continue
        row = {"workload": w.name, "proxy": w.proxy, "rounds": len(rs),
               "rps": h.med([r["oha"]["rps"] for r in rs]),
               "cpu_us_per_request": h.med([r["cpu_us_per_request"] for r in rs]),
               "unexpected": sum(r["oha"]["unexpected"] for r in rs)}
        for p in LATENCY_PERCENTILES:
            row[f"{p}_ms"] = h.med([r["oha"][f"{p}_ms"] for r in rs])
        if w.name != "direct":
            for label in ("p50", "p99"):
                diffs = [r["oha"][f"{label}_ms"] - direct[r["round"]][f"{label}_ms"] for r in rs
                         if r["round"] in direct]
                row[f"added_{label}_ms"] = h.med(diffs)
                row[f"added_{label}_ms_range"] = [min(diffs), max(diffs)] if diffs else None
        if (w.proxy or "").startswith("jwtgate") and row.get("added_p99_ms") is not None:
            row["target"] = {"added_p99_ms_at_most": TARGET_ADDED_P99_MS,
                             "met": row["added_p99_ms"] <= TARGET_ADDED_P99_MS}
        rows.append(row)
    return rows


# --------------------------------------------------------------------------
# 3. memory: idle, with N idle keep-alive connections, after they close


async def read_response(reader: asyncio.StreamReader) -> int:
    """Reads one HTTP/1.1 response whole, so the connection is idle after it; returns its status."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    lines = head.split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip().lower()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        raise ConnectionError("response without Content-Length or chunked body: the connection can't stay open")
    if headers.get("connection") == "close":
        raise ConnectionError("the proxy answered Connection: close")
    return status


async def open_counted(count: int, attempt, errors: tuple, concurrency: int = OPEN_CONCURRENCY):
    """Runs `attempt()` `count` times, `concurrency` at a time: it returns (status, connection, writer) or raises
    one of `errors`. Returns the connections that got a 200, and the rest counted by reason (their writers closed)."""
    gate = asyncio.Semaphore(concurrency)
    failures: Counter = Counter()

    async def one():
        async with gate:
            writers = []
            try:
                status, conn, writer = await attempt(writers)
            except errors as exc:
                failures[type(exc).__name__ + (f": {exc}" if str(exc) else "")] += 1
                for w in writers:
                    w.close()
                return None
            if status != 200:
                failures[f"status {status}"] += 1
                writer.close()
                return None
            return conn

    opened = await asyncio.gather(*(one() for _ in range(count)))
    return [c for c in opened if c is not None], failures


async def open_idle_connections(host: str, port: int, request: bytes, count: int):
    """`count` connections that each sent `request` and read a 200; the rest closed and counted by reason."""

    async def attempt(writers):
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), OPEN_TIMEOUT_S)
        writers.append(writer)
        writer.write(request)
        status = await asyncio.wait_for(read_response(reader), OPEN_TIMEOUT_S)
        return status, (reader, writer), writer

    return await open_counted(count, attempt, (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                                               asyncio.LimitOverrunError, ValueError, IndexError))


def socket_inodes(pgid: int) -> set[str]:
    """Inodes of the sockets the processes of group `pgid` have open."""
    inodes = set()
    for pid in h.group_pids(pgid):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    return inodes


def client_connections_held(inst: Instance) -> int:
    """Accepted connections the proxy still has open: its sockets whose local port is its listening port.

    Matched by inode against /proc/net/tcp, so connections of other programs on
    this machine never count, and a socket counts until the proxy closes it.
    Counted as a set: the kernel writes that file in pieces, and a socket can
    appear twice when the table changes between two of them.
    """
    inodes = socket_inodes(inst.proc.pid)
    wanted = f":{port_of(inst):04X}"
    held = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            # fields: sl, local address, remote address, state (0A = LISTEN), ..., inode (index 9)
            if fields[1].endswith(wanted) and fields[3] != "0A" and fields[9] in inodes:
                held.add(fields[9])
    return len(held)


def memory_reading(inst: Instance) -> dict:
    return {"rss_kib": h.group_rss_kib(inst.proc.pid), "proxy_side_connections": client_connections_held(inst)}


def port_of(inst: Instance) -> int:
    return int(inst.listen.rsplit(":", 1)[1])


def hold_idle_connections(inst: Instance, route: Route, count: int) -> dict:
    """Opens `count` keep-alive connections (one request each), reads memory while they idle, closes them."""
    host, port = inst.listen.rsplit(":", 1)
    headers = [f"GET {route.path} HTTP/1.1", f"Host: {inst.listen}"]
    if route.token_file:
        headers.append(f"Authorization: {bearer(route.token_file)}")
    request = ("\r\n".join(headers) + "\r\n\r\n").encode()

    async def hold():
        t0 = time.monotonic()
        conns, failures = await open_idle_connections(host, int(port), request, count)
        open_s = time.monotonic() - t0
        await asyncio.sleep(QUIET_S)
        closed_by_proxy = sum(1 for reader, _ in conns if reader.at_eof())
        held = memory_reading(inst)
        for _, writer in conns:
            writer.close()
        await asyncio.gather(*(writer.wait_closed() for _, writer in conns), return_exceptions=True)
        return {"ok": len(conns), "failures": dict(failures), "open_s": round(open_s, 2),
                "closed_by_proxy_before_reading": closed_by_proxy, "held": held}

    return asyncio.run(hold())


def hold_idle_h2(python: str, inst: Instance, route: Route, count: int, protocol: str, log_path: Path) -> dict:
    """As hold_idle_connections, over HTTP/2: idle_h2_client.py holds them in a process of its own."""
    argv = [python, str(H2_CLIENT), "--addr", inst.listen, "--count", str(count), "--path", route.path,
            "--concurrency", str(OPEN_CONCURRENCY)]
    if protocol == "h2":
        argv.append("--tls")
    if route.token_file:
        argv += ["--authorization", bearer(route.token_file)]
    with open(log_path, "ab") as log:
        client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                                  start_new_session=True, preexec_fn=h._die_with_parent(signal.SIGTERM))
    try:
        line = client.stdout.readline()
        if not line:
            raise h.HarnessError(f"idle_h2_client.py exited with {client.wait()}{h._tail(log_path)}")
        opened = json.loads(line)
        time.sleep(QUIET_S)
        held = memory_reading(inst)
        client.stdin.write("close\n")
        client.stdin.flush()
        closed = json.loads(client.stdout.readline() or "{}")
        client.wait(timeout=OPEN_TIMEOUT_S)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    return {"ok": opened["ok"], "failures": opened["failures"], "open_s": opened["open_s"],
            "closed_by_proxy_before_reading": closed.get("closed_by_proxy_before_reading", 0), "held": held}


def wait_for_release(inst: Instance) -> float | None:
    """Seconds until the proxy closed every client connection, or None if it still held some at the timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < RELEASE_TIMEOUT_S:
        if client_connections_held(inst) == 0:
            return round(time.monotonic() - t0, 2)
        time.sleep(0.1)
    return None


def measure_memory(inst: Instance, route: Route, count: int, protocol: str = "http1", python: str | None = None,
                   client_log: Path | None = None) -> dict:
    """`protocol`: http1, or h2c / h2 (held by idle_h2_client.py, run with `python`)."""
    # The first request's one-time work belongs to "idle", not to a connection.
    if protocol == "http1":
        url = f"http://{inst.listen}{route.path}"
        auth = {"Authorization": bearer(route.token_file)} if route.token_file else {}
        status, _ = h.http_get(url, auth)
        if status != 200:
            raise h.HarnessError(f"memory ({inst.proxy.name}): GET {url} answered {status}, expected 200")
    else:
        first = hold_idle_h2(python, inst, route, 1, protocol, client_log)
        if first["ok"] != 1:
            raise h.HarnessError(f"memory ({inst.proxy.name}, {protocol}): the first request failed: "
                                 f"{first['failures']}")
    time.sleep(QUIET_S)
    idle = memory_reading(inst)
    h.log(f"memory {inst.proxy.name} ({protocol}): idle {idle['rss_kib'] / 1024:.1f} MiB; "
          f"opening {count:,} connections")
    held = (hold_idle_connections(inst, route, count) if protocol == "http1"
            else hold_idle_h2(python, inst, route, count, protocol, client_log))
    released_after_s = wait_for_release(inst)
    time.sleep(AFTER_CLOSE_S)
    after = memory_reading(inst)
    open_at_reading = held["ok"] - held["closed_by_proxy_before_reading"]
    growth = held["held"]["rss_kib"] - idle["rss_kib"]
    row = {
        "proxy": inst.proxy.name,
        "workload": route.workload,
        "protocol": protocol,
        "path": route.path,
        "threads": inst.threads,
        "connections": count,
        "connections_ok": held["ok"],
        "failures": held["failures"],
        "open_s": held["open_s"],
        "closed_by_proxy_before_reading": held["closed_by_proxy_before_reading"],
        "proxy_side_connections_at_reading": held["held"]["proxy_side_connections"],
        "idle_rss_kib": idle["rss_kib"],
        "held_rss_kib": held["held"]["rss_kib"],
        "after_close_rss_kib": after["rss_kib"],
        "kib_per_idle_connection": round(growth / open_at_reading, 2) if open_at_reading else None,
        "kept_after_close_share": round((after["rss_kib"] - idle["rss_kib"]) / growth, 3) if growth > 0 else None,
        "released_after_s": released_after_s,
    }
    if inst.proxy.name.startswith("jwtgate"):
        row["targets"] = memory_targets(row)
    h.log(f"memory {inst.proxy.name} ({protocol}): {held['ok']:,} connections held: {row['held_rss_kib'] / 1024:.1f} MiB "
          f"({row['kib_per_idle_connection']} KiB each); after close {row['after_close_rss_kib'] / 1024:.1f} MiB")
    return row


def memory_targets(row: dict) -> list[dict]:
    kept = row["kept_after_close_share"]
    return [
        {"target": f"idle ≤ {TARGET_IDLE_MIB:.0f} MiB", "met": row["idle_rss_kib"] / 1024 <= TARGET_IDLE_MIB},
        {"target": f"≤ {TARGET_KIB_PER_CONNECTION:.0f} KiB per idle connection",
         "met": None if row["kib_per_idle_connection"] is None
         else row["kib_per_idle_connection"] <= TARGET_KIB_PER_CONNECTION},
        {"target": "memory returned after close", "met": kept is None or kept <= TARGET_KEPT_SHARE},
    ]


# --------------------------------------------------------------------------
# summary.md


def _range(c, digits=0):
    if not c or c.get("median") is None:
        return "–"
    return f"{c['median']:,.{digits}f} ({c['min']:,.{digits}f}–{c['max']:,.{digits}f})"


def _rounds(n: int) -> str:
    return "1 round" if n == 1 else f"{n} interleaved rounds"


def _met(met) -> str:
    return "not measured" if met is None else ("met" if met else "**not met**")


def _mib(kib) -> str:
    return "–" if kib is None else f"{kib / 1024:.1f}"


def throughput_md(rows: list[dict], meta: dict) -> list[str]:
    o = meta["options"]
    lines = [
        "## Maximum rate at 1 and 2 worker threads",
        "",
        f"wrk -t{o['wrk_threads']} -c{o['connections']}, {o['duration']} s per workload per round, "
        f"{_rounds(o['rounds'])}; median (min–max) over rounds. The worker count is jwtgate's "
        "`server.threads`, bare Pingora's `threads` and nginx's `worker_processes`. CPU µs per request is the "
        "proxy's processes' user + system time ÷ requests. 2 ÷ 1 is req/s at 2 threads ÷ at 1 in the same "
        "round, median (min–max).",
        "",
        "| proxy, route | req/s, 1 thread | req/s, 2 threads | 2 ÷ 1 | CPU µs/request, 1 thread "
        "| CPU µs/request, 2 threads | errors |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        one, two = r["threads"].get("1", {}), r["threads"].get("2", {})
        lines.append(
            f"| {r['workload']} | {_range(one.get('rps'))} | {_range(two.get('rps'))} "
            f"| {_range(r['rps_2_over_1'], 2)} "
            f"| {_range(one.get('cpu_us_per_request'), 1)} | {_range(two.get('cpu_us_per_request'), 1)} "
            f"| {one.get('errors', 0) + two.get('errors', 0):,} |"
        )
    return lines + [""]


def latency_md(rows: list[dict], latency: dict, meta: dict) -> list[str]:
    o = meta["options"]
    lines = [
        "## Latency added at a fixed rate",
        "",
        f"oha at **{latency['rate']:,.0f} req/s** ({latency['rate_source']}), open loop with coordinated omission "
        f"corrected (`-q {latency['rate']:.0f} --latency-correction`), {o['connections']} connections, "
        f"{o['duration']} s per run, {_rounds(o['rounds'])}; proxies at 1 worker thread. Latency in ms, "
        "median over rounds; \"added\" is the run through the proxy minus the direct run in the same round, "
        f"median (min–max) over rounds. Target (jwtgate): added p99 ≤ {TARGET_ADDED_P99_MS:g} ms, reported "
        "only. CPU µs/request is the proxy's (the upstream's for direct).",
        "",
        "| path | achieved req/s | p50 | p90 | p99 | p99.9 | added p50 | added p99 | target | CPU µs/request "
        "| not 200 |",
        "|---|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|",
    ]

    def added(r, label):
        v, span = r.get(f"added_{label}_ms"), r.get(f"added_{label}_ms_range")
        return "–" if v is None else f"{v:+.3f} ({span[0]:+.3f}–{span[1]:+.3f})"

    for r in rows:
        target = r.get("target")
        lines.append(
            f"| {r['workload']} | {r['rps']:,.0f} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['p99_ms']:.3f} "
            f"| {r['p99.9_ms']:.3f} | {added(r, 'p50')} | {added(r, 'p99')} "
            f"| {'–' if not target else _met(target['met'])} | {r['cpu_us_per_request']:.1f} "
            f"| {r['unexpected']:,} |"
        )
    return lines + [""]


def memory_md(rows: list[dict], count: int) -> list[str]:
    lines = [
        "## Memory: idle, with idle keep-alive connections, after they close (HTTP/1.1, h2c, TLS h2)",
        "",
        f"RSS (VmRSS summed over the proxy's processes) of a freshly started proxy with 1 worker thread: idle "
        f"after one request; then with {count:,} keep-alive client connections that each made one request and "
        f"sat idle for {QUIET_S:g} s; then {AFTER_CLOSE_S:g} s after the proxy closed the last of them once the "
        "client had closed all. KiB per idle connection = (held − idle) ÷ connections open at the reading. "
        "Kept = (after − idle) ÷ (held − idle). Targets (jwtgate): idle ≤ "
        f"{TARGET_IDLE_MIB:g} MiB, ≤ {TARGET_KIB_PER_CONNECTION:g} KiB per idle connection, memory returned "
        f"after close (kept ≤ {TARGET_KEPT_SHARE:.0%}); reported only.",
        "",
        "| proxy (route) | protocol | idle MiB | held MiB | KiB per idle connection | after close MiB | kept "
        "| connections 200 / proxy-side at reading | targets |",
        "|---|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        kept, per_connection = r["kept_after_close_share"], r["kib_per_idle_connection"]
        targets = "; ".join(f"{t['target']}: {_met(t['met'])}" for t in r.get("targets", [])) or "–"
        name = r["proxy"] if r["proxy"] == r["workload"] else f"{r['proxy']} ({r['workload']})"
        protocol = {"http1": "HTTP/1.1", "h2c": "h2c", "h2": "TLS h2"}[r.get("protocol", "http1")]
        lines.append(
            f"| {name} | {protocol} | {_mib(r['idle_rss_kib'])} | {_mib(r['held_rss_kib'])} "
            f"| {'–' if per_connection is None else format(per_connection, '.1f')} "
            f"| {_mib(r['after_close_rss_kib'])} | {'–' if kept is None else format(kept, '.0%')} "
            f"| {r['connections_ok']:,} / {r['proxy_side_connections_at_reading']:,} | {targets} |"
        )
    return lines + [""]


def scale_findings(throughput_summary: list[dict], latency_rows: list[dict], memory_rows: list[dict],
                   count: int) -> list[str]:
    notes = h.findings(throughput_summary)
    for r in latency_rows:
        if r["unexpected"]:
            notes.append(f"**{r['workload']} at a fixed rate: {r['unexpected']:,} responses other than 200 or errors**")
    for r in latency_rows:
        if r["rps"] < 0.95 * r["rate"]:
            notes.append(f"{r['workload']}: achieved {r['rps']:,.0f} req/s, below the fixed rate: "
                         "it could not keep up")
    for r in memory_rows:
        if r["failures"]:
            notes.append(f"**memory, {r['workload']} ({r.get('protocol', 'http1')}): {count - r['connections_ok']:,} of {count:,} connections "
                         f"failed**: {r['failures']}")
        if r["closed_by_proxy_before_reading"]:
            notes.append(f"**memory, {r['workload']} ({r.get('protocol', 'http1')}): the proxy closed {r['closed_by_proxy_before_reading']:,} "
                         "idle connections before the reading**")
        if r["released_after_s"] is None:
            notes.append(f"memory, {r['workload']} ({r.get('protocol', 'http1')}): the proxy still held client connections "
                         f"{RELEASE_TIMEOUT_S:g} s after the client closed them")
    return notes


def write_summary(path: Path, meta: dict, throughput: list[dict], latency: dict, memory: list[dict],
                  notes: list[str]) -> None:
    v = meta["versions"]
    lines = [
        f"# jwtgate latency and scale, {meta['started_at']}",
        "",
        f"- Command: `{meta['command']}`",
        f"- Machine: {meta['machine']['cores']} cores, {meta['machine']['cpu_model']}, "
        f"Linux {meta['machine']['kernel']}; load average at start {meta['machine']['loadavg_start']}",
        f"- {v['jwtgate']} (release build of git {v['git']}), `RUST_LOG=warn`; upstream "
        f"{v['nginx'].replace('nginx version: ', '')}, 1 worker, `return 200 \"ok\\n\"`; all on 127.0.0.1",
        f"- {v['wrk']}; {v['oha']}; {v['h2']} (the HTTP/2 memory client, idle_h2_client.py)",
        "",
    ]
    if throughput:
        lines += throughput_md(throughput, meta)
    if latency:
        lines += latency_md(latency["rows"], latency, meta)
    lines += memory_md(memory, meta["options"]["idle_connections"])
    lines += ["## Findings", ""] + [f"- {n}" for n in notes]
    lines += ["", "Files: `results.json` (every run's raw numbers), `wrk/` and `oha/` (raw output), the configs "
              "and logs of each proxy under `threads-1/`, `threads-2/` and `memory/`.", ""]
    path.write_text("\n".join(lines))


# --------------------------------------------------------------------------
# the mode


def measure_all_memory(args, out: Path, tmp: Path, procs, proxies: list[Proxy], starters: dict, python: str,
                       save) -> list[dict]:
    """Each proxy freshly started and alone, over HTTP/1.1, then h2c, then TLS h2; one row each."""
    memory: list[dict] = []
    max_connections = args.idle_connections + FD_HEADROOM
    (out / "memory").mkdir(parents=True, exist_ok=True)
    for p in proxies:
        inst = start_instance(p, 1, out / "memory", tmp / f"memory-{p.name}", max_connections)
        memory.append(measure_memory(inst, p.routes[-1], args.idle_connections))
        procs.stop(inst.proc)
        save(memory)
    # --bare-h2 variants: bare Pingora's rows again, with those HTTP/2 settings
    bare = next((p for p in proxies if p.name == h.BARE), None)
    variants = [Proxy(name, None, bare.routes) for name in starters if bare and name.startswith(f"{h.BARE} ")]
    for protocol in H2_PROTOCOLS:
        for p in [p for p in proxies if p.name in starters] + variants:
            (tmp / f"memory-{p.name}-{protocol}").mkdir(parents=True)
            proc, listen, admin = starters[p.name](1, out / "memory", tmp / f"memory-{p.name}-{protocol}",
                                                   max_connections, protocol)
            inst = Instance(p, 1, proc, listen, admin)
            memory.append(measure_memory(inst, p.routes[-1], args.idle_connections, protocol, python,
                                         out / "memory" / "idle_h2_client.log"))
            procs.stop(inst.proc)
            save(memory)
    return memory


def run(args, out: Path, tmp: Path, procs, started, command: str) -> int:
    raise_open_files_limit(args.idle_connections)  # before any process starts, so all inherit it
    h.ensure_packages(need_nginx=True)
    python = tools_python()
    cert = https.make_certificate(tmp)
    oha = None if args.memory_only else ensure_oha()
    binary = h.build_jwtgate(args.skip_build, bare_proxy=not args.no_compare)
    nginx = h.find_nginx()
    meta = h.run_meta(args, out, started, command, "scale")
    meta["versions"].update(jwtgate=h.tool_version([str(binary), "--version"]), git=h.git_revision(),
                            nginx=h.tool_version([nginx, "-v"]),
                            oha=h.tool_version([oha, "--version"]) if oha else "not run (--memory-only)",
                            h2=h.tool_version([python, "-c", "import h2; print('Python h2', h2.__version__)"]))
    if args.baseline_binary:
        meta["versions"]["baseline"] = h.tool_version([str(args.baseline_binary), "--version"])

    one_token = tmp / "one-token.txt"
    h.mint(binary, h.DEMO_KEY, 1, one_token)
    upstream_proc, upstream = h.start_nginx(procs, nginx, tmp, out, h.free_ports(1)[0])
    others = {"nginx": upstream_proc}
    proxies = proxy_set(args, procs, binary, nginx, upstream, one_token)

    results = {"meta": meta, "throughput": None, "latency": None, "memory": None}
    results_path = out / "results.json"

    def save():
        results_path.write_text(json.dumps(results, indent=2, default=str) + "\n")

    wrk_summary, throughput, latency_rows = [], [], []
    if not args.memory_only:
        # 1. maximum rate
        instances = {(p.name, t): start_instance(p, t, out / f"threads-{t}", tmp / f"threads-{t}", 4096)
                     for t in THREADS for p in proxies}
        workloads = [workload_for(instances[(p.name, t)], route, f"{route.workload}-{t}t")
                     for t in THREADS for p in proxies for route in p.routes]
        h.preflight(workloads, strict=True)
        wrk_records: list[dict] = []
        results["throughput"] = {"rounds": wrk_records}
        h.log(f"maximum rate: {args.rounds} rounds × {len(workloads)} wrk runs × {args.duration}s")
        h.run_rounds(args.rounds, workloads, lambda w, label: h.run_wrk(args, procs, w, others, out, label),
                     h.wrk_line, wrk_records, save, others, out)
        wrk_summary = h.summarize(workloads, wrk_records)
        throughput = throughput_table(proxies, wrk_summary, wrk_records)
        results["throughput"].update(summary=wrk_summary, table=throughput)
        save()

        # 2. latency at a fixed rate, through the 1-thread instances
        rate, rate_source = fixed_rate(args, throughput)
        targets = [h.Workload("direct", "straight to the upstream nginx", f"http://{upstream}/api", "2xx")]
        targets += [workload_for(instances[(p.name, 1)], route, route.workload) for p in proxies
                    for route in p.routes]
        oha_records: list[dict] = []
        results["latency"] = {"rate": rate, "rate_source": rate_source, "rounds": oha_records}
        h.log(f"latency at {rate:,.0f} req/s ({rate_source}): {args.rounds} rounds × {len(targets)} oha runs")
        h.run_rounds(args.rounds, targets,
                     lambda w, label: run_oha(oha, args, procs, w, rate, upstream_proc, out, label),
                     oha_line, oha_records, save, others, out)
        latency_rows = latency_table(targets, oha_records)
        for row in latency_rows:
            row["rate"] = rate
        results["latency"]["rows"] = latency_rows
        save()
        for inst in instances.values():
            procs.stop(inst.proc)

    # 3. memory
    def save_memory(rows):
        results["memory"] = rows
        save()

    starters = h2_starters(args, procs, binary, nginx, upstream, cert)
    memory = measure_all_memory(args, out, tmp, procs, proxies, starters, python, save_memory)

    notes = scale_findings(wrk_summary, latency_rows, memory, args.idle_connections)
    # wrk closes its connections with requests in flight when a run ends, which
    # Pingora logs; oha waits for its last responses and the memory client
    # closes idle connections, so neither causes such lines.
    wrk_closes = {p.log_file: args.connections * args.rounds * len(p.routes) for p in proxies if p.log_file}
    subs = (("memory", {}),) if args.memory_only else (("threads-1", wrk_closes), ("threads-2", wrk_closes),
                                                       ("memory", {}))
    for sub, bounds in subs:
        notes += [f"{sub}: {n}" for n in h.gateway_log_findings(out / sub, bounds)]
    meta["finished_at"] = dt.datetime.now().isoformat(timespec="seconds")
    results["findings"] = notes
    save()
    write_summary(out / "summary.md", meta, throughput, results["latency"], memory, notes)
    print((out / "summary.md").read_text())
    h.log(f"results in {out}")
    failed = (any(s["total_errors"] for s in wrk_summary) or any(r["unexpected"] for r in latency_rows)
              or any(r["failures"] or r["connections_ok"] < args.idle_connections
                     or r["closed_by_proxy_before_reading"] for r in memory))
    return 1 if failed else 0
