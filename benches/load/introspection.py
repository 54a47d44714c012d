"""The `introspection` workload of run.py: an opaque token on a route of an introspecting issuer.

One more jwtgate process, configured as run.py's cache-on gateway plus an
issuer `opaque` whose tokens are introspected (RFC 7662) and a route `/opaque`
that trusts it and requires the scope `echo:read`. Its introspection endpoint
is served by this module, on a loopback port, from a thread of the harness
(Python's http.server): it checks jwtgate's client credentials, answers
`active` for any token with claims like the demo tokens' (`exp` two hours
ahead) and counts the calls. wrk sends one opaque token, so after the first
request every request is a hit in the gateway's introspection cache.

It runs in the same interleaved rounds as `one-token` (one RS256 token, a
verified-token cache hit), beside `introspection-jwt`: that token sent to the
same process's `/api`. The two tokens differ by a few percent at most, and a
ratio across two processes also holds whatever sets the processes apart, so
the ratio to read first is the one within a process: `introspection` ÷
`introspection-jwt`; `introspection` ÷ `one-token` is reported too. The calls
the endpoint received are expected to be one (the first request's; the answer
is cached for an hour).

Python 3 standard library only.
"""

from __future__ import annotations

import base64
import http.server
import json
import secrets
import threading
import time
import urllib.parse
from pathlib import Path

import run as h

ISSUER = "https://opaque.jwtgate.example"
CLIENT_ID = "jwtgate-load"
SCOPE = "echo:read"
PATH = "/opaque"
NAME = "introspection"
SAME_PROCESS = "introspection-jwt"
COMPARED_WITH = "one-token"
# Longer than any run: every request after the first is a cache hit.
ACTIVE_TTL = "1h"


class Endpoint:
    """The issuer's introspection endpoint: answers active for any token from a client with the right
    credentials (401 otherwise), and counts both."""

    def __init__(self, secret: str) -> None:
        self.expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{secret}".encode()).decode()
        self.calls = 0
        self.refused = 0
        self.lock = threading.Lock()
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                form = urllib.parse.parse_qs(body.decode("ascii", "replace"))
                authorized = self.headers.get("Authorization") == endpoint.expected and "token" in form
                with endpoint.lock:
                    endpoint.calls += 1
                    endpoint.refused += not authorized
                answer = endpoint.answer() if authorized else {"error": "invalid_client"}
                payload = json.dumps(answer).encode()
                self.send_response(200 if authorized else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_args) -> None:  # the counts say what matters
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/introspect"
        self.thread = threading.Thread(target=self.server.serve_forever, name="introspection endpoint",
                                       daemon=True)
        self.thread.start()

    @staticmethod
    def answer() -> dict:
        """What an authorization server says of an active token minted as run.py's demo tokens are."""
        now = int(time.time())
        return {"active": True, "iss": ISSUER, "sub": "load", "aud": h.DEMO_AUDIENCE, "scope": SCOPE,
                "client_id": "load-client", "token_type": "Bearer", "iat": now, "exp": now + 7200}

    def counts(self) -> dict:
        with self.lock:
            return {"calls": self.calls, "refused": self.refused}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def issuer_yaml(endpoint: str, secret_file: Path) -> str:
    q = json.dumps
    return f"""\
  - name: opaque
    issuer: {q(ISSUER)}
    audiences: [{h.DEMO_AUDIENCE}]
    fetch: {{ allow_http: true }}
    introspection:
      endpoint: {q(endpoint)}
      client_id: {CLIENT_ID}
      client_secret_file: {q(str(secret_file))}
      active_ttl: {ACTIVE_TTL}
"""


def route_yaml(upstream: str) -> str:
    return f"""\
  - name: opaque
    match: {{ path_prefix: {PATH} }}
    upstream: {{ addrs: [{json.dumps(upstream)}] }}
    auth:
      mode: required
      issuers: [opaque]
      scopes: {{ all_of: [{SCOPE}] }}
    forward:
      claims: {{ sub: X-User-Id }}
"""


def start(procs, binary: Path, out: Path, tmp: Path, upstream: str, threads: int, jwt_file: Path):
    """The endpoint and its gateway; returns (endpoint, [the opaque token's workload, `jwt_file`'s on the same
    gateway]), the endpoint not yet called."""
    secret = secrets.token_urlsafe(24)
    secret_file = tmp / "introspection-secret"
    secret_file.write_text(secret + "\n")
    endpoint = Endpoint(secret)
    gateway, listen, admin = h.start_gateway(
        procs, binary, out, NAME, upstream, threads, cache=True,
        extra_issuers=issuer_yaml(endpoint.url, secret_file), extra_routes=route_yaml(upstream))
    token_file = tmp / "opaque-token.txt"
    # An opaque token as authorization servers issue them: 32 random bytes, base64url.
    token_file.write_text(secrets.token_urlsafe(32) + "\n")
    h.log(f"jwtgate (introspection): {listen} (admin {admin}); introspection endpoint {endpoint.url}")
    workload = h.Workload(NAME, f"one opaque token reused → `{PATH}` (scope {SCOPE} required) of an issuer "
                          "whose tokens are introspected (RFC 7662) at a local endpoint: one call, then "
                          "introspection-cache hits", f"http://{listen}{PATH}", "2xx", token_file, gateway, admin)
    beside = h.Workload(SAME_PROCESS, f"the `{COMPARED_WITH}` token → `/api` of the `{NAME}` workload's gateway "
                        "(cache hits): the JWT beside the opaque token in one process", f"http://{listen}/api",
                        "2xx", jwt_file, gateway, admin)
    return endpoint, [workload, beside]


def check_refusals(w: h.Workload) -> None:
    """The route really checks what the endpoint answers: without a token, 401 (and no call is made)."""
    status, _ = h.http_get(w.url)
    if status != 401:
        raise h.HarnessError(f"{w.name}: a request without a token answered {status}, expected 401")


def per_round(records: list[dict]) -> list[dict]:
    """Per round, the opaque token's CPU µs per request against each JWT workload's: ratio and difference."""
    by_round: dict = {}
    for r in records:
        if r["workload"] in (NAME, SAME_PROCESS, COMPARED_WITH):
            by_round.setdefault(r["round"], {})[r["workload"]] = r["gateway_cpu_us_per_request"]
    rows = []
    for rnd, v in sorted(by_round.items()):
        if len(v) == 3:
            rows.append({"round": rnd, "us": v, **{
                jwt: {"ratio": round(v[NAME] / v[jwt], 3), "difference_us": round(v[NAME] - v[jwt], 2)}
                for jwt in (SAME_PROCESS, COMPARED_WITH)}})
    return rows


def results(records: list[dict], endpoint: Endpoint) -> dict:
    return {"per_round": per_round(records), "endpoint": endpoint.counts()}


def summary_md(summary: list[dict], result: dict) -> list[str]:
    by = {s["workload"]: s for s in summary}
    rounds, counts = result["per_round"], result["endpoint"]
    if not rounds:
        return []

    def spread(xs, digits):
        return f"{h.med(xs):.{digits}f} ({min(xs):.{digits}f}–{max(xs):.{digits}f})"

    lines = ["## Opaque tokens (introspection)", "",
             "jwtgate CPU µs per request (median, min–max over rounds) for one reused opaque token whose "
             "introspection answer is cached, beside one reused RS256 token whose verification is cached: "
             f"in the same process (`{SAME_PROCESS}`) and in the cache-on gateway (`{COMPARED_WITH}`), whose "
             "config lacks only the introspecting issuer and its route. Ratio and difference per round, "
             "median (min–max).", "",
             "| workload | req/s | jwtgate CPU µs/request |", "|---|--:|--:|"]
    for name in (COMPARED_WITH, SAME_PROCESS, NAME):
        s = by[name]
        lines.append(f"| {name} | {h.fmt_rps(s['rps_median'])} | {s['gateway_cpu_us_per_request']:.1f} "
                     f"({s['gateway_cpu_us_min']:.1f}–{s['gateway_cpu_us_max']:.1f}) |")
    lines.append("")
    for jwt in (SAME_PROCESS, COMPARED_WITH):
        lines.append(f"{NAME} ÷ {jwt}: {spread([r[jwt]['ratio'] for r in rounds], 3)}; difference: "
                     f"{spread([r[jwt]['difference_us'] for r in rounds], 2)} µs per request")
    lines += [f"introspection calls the endpoint received: {counts['calls']} ({counts['refused']} with wrong "
              f"client credentials) for {by[NAME]['total_requests']:,} requests", ""]
    return lines
