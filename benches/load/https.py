"""TLS and HTTP/2 for the load harness: certificates, listeners, h2load runs.

Used by run.py's `--https` workloads and by scale.py's HTTP/2 memory readings.
Every proxy gets the same certificate: ECDSA P-256, self-signed for
`localhost`, made with openssl at run time in the temporary directory. Session
resumption is off wherever the server lets it be turned off (nginx: no cache,
no tickets; HAProxy: no cache, no tickets; jwtgate has no setting), and the
client, h2load, never resumes a session, so each new connection is a full
handshake everywhere.

h2load (Debian's nghttp2-client, whose version the summary names) drives the
HTTPS workloads:

- keep-alive: `h2load --h1 -t T -c C -D S`, HTTP/1.1 over TLS, connections
  kept open, as wrk does over clear text;
- keep-alive HTTP/2: the same without `--h1` (ALPN h2, one stream at a time
  per connection), the workload HTTP/2 CPU per request is read from;
- new connection per request: `h2load --h1 -r R -c N -n N`, N connections
  opened at R per second (open loop), each making one request and closing:
  a full TLS handshake per request.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import run as h

H2LOAD_TIMEOUT_S = 120.0


@dataclass
class Certificate:
    cert: Path
    key: Path
    bundle: Path  # cert then key, as HAProxy's `crt` takes them


def make_certificate(tmp: Path) -> Certificate:
    """An ECDSA P-256 certificate for localhost, self-signed, valid a year (jwtgate warns of certificates that expire soon)."""
    cert, key, bundle = tmp / "localhost.crt", tmp / "localhost.key", tmp / "localhost.pem"
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "365", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise h.HarnessError(f"openssl req (the test certificate) failed: {r.stderr}")
    bundle.write_text(cert.read_text() + key.read_text())
    return Certificate(cert, key, bundle)


def nginx_listen(cert: Certificate, h2c_port: int | None, tls_port: int | None) -> str:
    """Directives for nginx's proxy server block: h2c (prior knowledge) and TLS with ALPN h2 listeners."""
    lines = []
    if h2c_port:
        lines.append(f"        listen 127.0.0.1:{h2c_port} http2;")
    if tls_port:
        lines += [f"        listen 127.0.0.1:{tls_port} ssl http2;",
                  f"        ssl_certificate {cert.cert};",
                  f"        ssl_certificate_key {cert.key};",
                  # nginx 1.22 leaves TLS 1.3 out unless asked; the others offer it.
                  "        ssl_protocols TLSv1.2 TLSv1.3;",
                  "        ssl_session_cache off;",
                  "        ssl_session_tickets off;"]
    return "".join(line + "\n" for line in lines)


def haproxy_bind(cert: Certificate, tls_port: int) -> tuple[str, str]:
    """(bind line, global lines) for HAProxy's TLS listener in front of the same jwt_verify checks."""
    return (f"    bind 127.0.0.1:{tls_port} ssl crt {cert.bundle} alpn h2,http/1.1 no-tls-tickets\n",
            "    tune.ssl.cachesize 0\n")


def h2load_path() -> str:
    found = shutil.which("h2load")
    if not found:
        raise h.HarnessError("h2load is missing (Debian: apt-get install nghttp2-client)")
    return found


# --------------------------------------------------------------------------
# h2load runs


_REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                       r"(\d+) errored, (\d+) timeout")
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
_PROTOCOL = re.compile(r"Application protocol: (\S+)")


def parse_h2load(text: str) -> dict:
    req, status, fin = _REQUESTS.search(text), _STATUS.search(text), _FINISHED.search(text)
    if not (req and status and fin):
        raise ValueError("no summary in h2load's output")
    total, _, done, ok, failed, errored, timeout = (int(x) for x in req.groups())
    s2, s3, s4, s5 = (int(x) for x in status.groups())
    proto = _PROTOCOL.search(text)
    return {"requests": done, "succeeded": ok, "failed": failed, "errored": errored, "timeout": timeout,
            "status_2xx": s2, "status_other": s3 + s4 + s5, "rps": float(fin.group(3)),
            "seconds": float(fin.group(1)) / (1000 if fin.group(2) == "ms" else 1),
            "protocol": proto.group(1) if proto else None}


@dataclass
class TlsWorkload:
    name: str  # e.g. "tls-keepalive-jwtgate"
    kind: str  # "keepalive", "keepalive-h2" or "new-connection"
    proxy: str  # jwtgate, pingora-bare, nginx-proxy, haproxy
    url: str
    token_file: Path | None
    gateway: subprocess.Popen
    description: str


def h2load_argv(h2load: str, w: TlsWorkload, args) -> list[str]:
    argv = [h2load, "-t", str(args.wrk_threads)]
    if w.kind != "keepalive-h2":
        argv.append("--h1")
    if w.kind == "new-connection":
        n = args.new_connections
        argv += ["-c", str(n), "-n", str(n), "-r", str(min(args.handshake_rate, n))]  # h2load wants r ≤ c
    else:
        argv += ["-c", str(args.connections), "-m", "1", "-D", str(args.duration)]
    if w.token_file:
        argv += ["-H", f"authorization: Bearer {w.token_file.read_text().split(chr(10), 1)[0].strip()}"]
    return argv + [w.url]


def run_h2load(h2load: str, args, procs, w: TlsWorkload, out: Path, label: str) -> dict:
    """One h2load run; the proxy's CPU per request (its process group's user + system time)."""
    log_path = out / "h2load" / f"{label}.txt"
    log_path.parent.mkdir(exist_ok=True)
    cpu_before = h.group_cpu_seconds(w.gateway.pid)
    busy_before = h.machine_busy_seconds()
    t0 = time.monotonic()
    proc = procs.start(f"h2load ({w.name})", h2load_argv(h2load, w, args), stop_signal=signal.SIGTERM,
                       log_path=log_path)
    try:
        proc.wait(timeout=H2LOAD_TIMEOUT_S + args.duration)
    except subprocess.TimeoutExpired:
        procs.stop(proc)
        raise h.HarnessError(f"h2load ({w.name}) did not finish in time{h._tail(log_path)}")
    procs.stop(proc)  # already exited: just forget it
    wall = time.monotonic() - t0
    cpu = h.group_cpu_seconds(w.gateway.pid) - cpu_before
    busy = h.machine_busy_seconds() - busy_before
    text = log_path.read_text(errors="replace")
    try:
        res = parse_h2load(text)
    except ValueError as exc:
        raise h.HarnessError(f"h2load ({w.name}) exited with {proc.returncode}: {exc}{h._tail(log_path)}")
    expected = "h2" if w.kind == "keepalive-h2" else "http/1.1"
    if res["protocol"] != expected:
        raise h.HarnessError(f"h2load ({w.name}) negotiated {res['protocol']}, expected {expected}"
                             f"{h._tail(log_path)}")
    res["errors"] = res["requests"] - res["status_2xx"] + res["failed"] + res["errored"] + res["timeout"]
    return {"h2load": res, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "machine_busy_s": round(busy, 3),
            "cpu_us_per_request": round(cpu / res["status_2xx"] * 1e6, 2) if res["status_2xx"] else None,
            "h2load_output": f"h2load/{label}.txt"}


def h2load_line(rec: dict) -> str:
    r = rec["h2load"]
    us = rec["cpu_us_per_request"]
    return (f"{r['rps']:>10,.0f} req/s  {'–' if us is None else f'{us:.1f}'} CPU µs/request  "
            f"2xx {r['status_2xx']:,} errors {r['errors']:,}")


# --------------------------------------------------------------------------
# the HTTPS workloads of run.py --https


KINDS = {
    "keepalive": "TLS keep-alive, HTTP/1.1",
    "keepalive-h2": "TLS keep-alive, HTTP/2",
    "new-connection": "a new TLS connection per request (HTTP/1.1, full handshake)",
}


def workloads(endpoints: dict, one_file: Path, gateways: dict) -> list[TlsWorkload]:
    """Per kind, jwtgate (one token, cache hits) then each proxy it is compared with, side by side.

    `endpoints` maps a proxy's name to its TLS address (jwtgate's first, then --baseline-binary's, then the
    others); `gateways` to its Popen.
    """
    out = []
    for kind, what in KINDS.items():
        for proxy, addr in endpoints.items():
            token = one_file if proxy in ("jwtgate", "jwtgate-baseline", "haproxy") else None
            path = "/api" if token else "/off"
            out.append(TlsWorkload(f"tls-{kind}-{proxy}", kind, proxy, f"https://localhost:{addr.rsplit(':', 1)[1]}"
                                   f"{path}", token, gateways[proxy],
                                   f"{what}: {proxy}" + (", one RS256 token" if token else ", no auth")))
    return out


def run_https(args, procs, ws: list[TlsWorkload], others: dict, out: Path, save) -> list[dict]:
    """The HTTPS workloads in interleaved rounds, as run.py runs wrk's."""
    h2load = h2load_path()
    records: list[dict] = []
    h.log(f"HTTPS: {args.rounds} rounds × {len(ws)} h2load runs")
    h.run_rounds(args.rounds, ws, lambda w, label: run_h2load(h2load, args, procs, w, out, label),
                 h2load_line, records, lambda: save(records), others, out)
    return records


def https_table(ws: list[TlsWorkload], records: list[dict]) -> list[dict]:
    """Per workload: CPU µs per request and req/s, median (min–max) over rounds; jwtgate ÷ the other, same round."""
    rows = []
    for w in ws:
        rs = [r for r in records if r["workload"] == w.name]
        us = [r["cpu_us_per_request"] for r in rs if r["cpu_us_per_request"] is not None]
        row = {"workload": w.name, "kind": w.kind, "proxy": w.proxy, "description": w.description,
               "cpu_us_per_request": {"median": h.med(us), "min": min(us, default=None), "max": max(us, default=None)},
               "rps": h.med([r["h2load"]["rps"] for r in rs]),
               "errors": sum(r["h2load"]["errors"] for r in rs)}
        if w.proxy != "jwtgate":
            ours = {r["round"]: r["cpu_us_per_request"] for r in records
                    if r["workload"] == f"tls-{w.kind}-jwtgate"}
            ratios = [ours[r["round"]] / r["cpu_us_per_request"] for r in rs
                      if ours.get(r["round"]) and r["cpu_us_per_request"]]
            row["jwtgate_over_this"] = ({"median": h.med(ratios), "min": min(ratios), "max": max(ratios)}
                                        if ratios else None)
        rows.append(row)
    return rows


def https_md(rows: list[dict], args, version: str) -> list[str]:
    lines = [
        "## HTTPS: CPU per request over TLS",
        "",
        f"{version}; ECDSA P-256 certificate, no session resumption. Keep-alive: `h2load [--h1] -t"
        f"{args.wrk_threads} -c{args.connections} -m1 -D{args.duration}`; new connection per request: "
        f"`h2load --h1 -t{args.wrk_threads} -r{min(args.handshake_rate, args.new_connections)} "
        f"-c{args.new_connections} "
        f"-n{args.new_connections}` (each connection one request, then closed). {_rounds(args.rounds)}; "
        "median (min–max) over rounds. jwtgate serves one RS256 token from its cache; HAProxy verifies the same "
        "token on every request; nginx and bare Pingora proxy without auth. jwtgate ÷ other is per round, then "
        "the median.",
        "",
        "| workload | proxy | CPU µs/request | req/s | jwtgate ÷ this | errors |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for r in rows:
        c, ratio = r["cpu_us_per_request"], r.get("jwtgate_over_this")
        lines.append(f"| {KINDS[r['kind']]} | {r['proxy']} | {_span(c, 1)} | {r['rps']:,.0f} "
                     f"| {'–' if not ratio else _span(ratio, 2)} | {r['errors']:,} |")
    return lines + [""]


def _rounds(n: int) -> str:
    return "1 round" if n == 1 else f"{n} interleaved rounds"


def _span(c: dict, digits: int) -> str:
    if not c or c.get("median") is None:
        return "–"
    return f"{c['median']:,.{digits}f} ({c['min']:,.{digits}f}–{c['max']:,.{digits}f})"
