#!/usr/bin/env python3
"""CPU per request of a DPoP request beside a bearer request on the same route.

From the repository root, with a release build and Python's `cryptography`
(scripts/test installs it into .tools/venv):

    cargo build --release --locked --bin jwtgate
    .tools/venv/bin/python benches/load/dpop.py            # 3 rounds × 10 s

On 127.0.0.1: nginx answering "ok" as the upstream (run.py's), and one
jwtgate (one worker thread) with one `required` route for the demo issuer
(deploy/dev-keys/jwks.json) whose DPoP proofs may be up to --iat-past old
(10 minutes by default instead of 60 s, so proofs made before a round are
still fresh at its end). Two workloads on that route, in interleaved rounds
(run.py's run_rounds, run_wrk and CPU accounting by process group):

- bearer: one RS256 token, `Authorization: Bearer`, every request a
  token-cache hit;
- dpop: one RS256 token bound to an ES256 client key (`cnf.jkt`), sent as
  `Authorization: DPoP` (also a cache hit after the first request) with a
  fresh ES256 proof per request: `typ: dpop+jwt`, the public key as `jwk`,
  `htm: GET`, `htu` the URL wrk requests, `iat` the time it was made, a
  unique `jti` and `ath`. The proofs are made with `cryptography` before each
  round, enough for the round at the rate measured (--margin times it), and
  wrk (dpop.lua) sends each once, each thread from its own slice.

Any request not answered 200 fails the run (a 401 would be a proof that was
reused or malformed), and so does a thread running out of proofs. Before the
load, single requests check that the route really verifies proofs: a proof
sent twice is refused the second time, and the bound token without a proof
is refused.

The result: the gateway's CPU µs per request for each (user + system of its
process group ÷ requests, median and range over rounds), their ratio and
their difference, per round: what the DPoP part costs. It writes
results.json and the wrk outputs to --out.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import copy
import hashlib
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import run as h

try:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
except ImportError:  # fail loudly: the proofs are made with it
    sys.exit(f"dpop.py needs the `cryptography` package: {sys.executable} has none "
             "(scripts/setup pymod:cryptography=cryptography==50.0.2 installs it into .tools/venv)")

LUA_SCRIPT = h.HERE / "dpop.lua"
PATH = "/api/orders"
WARMUP_S = 3


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact_json(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


# --------------------------------------------------------------------------
# the client's key and its proofs


class Client:
    """An ES256 key pair of the client's own, as a DPoP client holds one."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        numbers = self.key.public_key().public_numbers()
        self.jwk = {"crv": "P-256", "kty": "EC", "x": b64u(numbers.x.to_bytes(32, "big")),
                    "y": b64u(numbers.y.to_bytes(32, "big"))}
        # RFC 7638: the required members, sorted, no whitespace.
        self.jkt = b64u(hashlib.sha256(compact_json(self.jwk)).digest())
        self.pem = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())

    def proofs(self, count: int, htu: str, token: str) -> list[str]:
        """`count` proofs for GET `htu` with `token`, each with its own `jti`, made on every core."""
        header = b64u(compact_json({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk}))
        ath = b64u(hashlib.sha256(token.encode()).digest())
        # 22 characters, like a base64url jti of 128 random bits: a random
        # prefix of this batch, then the proof's number.
        claims = {"htm": "GET", "htu": htu, "iat": int(time.time()), "ath": ath,
                  "jti": secrets.token_hex(6) + "{:010d}"}
        workers = os.cpu_count() or 1
        bounds = [(count * i // workers, count * (i + 1) // workers) for i in range(workers)]
        with concurrent.futures.ProcessPoolExecutor(workers) as pool:
            parts = pool.map(_sign_range, [self.pem] * workers, [header] * workers, [claims] * workers,
                             bounds)
            return [proof for part in parts for proof in part]


def _sign_range(pem: bytes, header: str, claims: dict, bounds: tuple[int, int]) -> list[str]:
    key = serialization.load_pem_private_key(pem, password=None)
    jti = claims["jti"]
    out = []
    for n in range(*bounds):
        body = b64u(compact_json(dict(claims, jti=jti.format(n))))
        signing_input = f"{header}.{body}"
        r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        out.append(f"{signing_input}.{b64u(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}")
    return out


# --------------------------------------------------------------------------
# the gateway


def gateway_yaml(listen: str, admin: str, upstream: str, iat_past: str) -> str:
    """run.py's config (its `/api` route: `required`, the demo issuer, `sub` forwarded), one worker
    thread, with the proofs' window widened."""
    config = h.gateway_yaml(listen, admin, upstream, 1, cache=True)
    anchor = "      issuers: [demo]\n    forward:"
    if config.count(anchor) != 1:
        raise h.HarnessError("run.py's gateway config no longer has its /api route's `issuers: [demo]` "
                             "followed by `forward:`: update dpop.py's gateway_yaml")
    # Proofs are made before each round: they must still be fresh at its end.
    return config.replace(anchor, "      issuers: [demo]\n"
                                  f"      dpop: {{ iat_window: {{ past: {iat_past} }} }}\n    forward:")


def start_gateway(procs, binary: Path, out: Path, upstream: str, iat_past: str):
    listen_port, admin_port = h.free_ports(2)
    listen, admin = f"127.0.0.1:{listen_port}", f"127.0.0.1:{admin_port}"
    cfg = out / "gateway-dpop.yaml"
    cfg.write_text(gateway_yaml(listen, admin, upstream, iat_past))
    check = subprocess.run([str(binary), "check", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise h.HarnessError(f"jwtgate check -c {cfg} failed:\n{check.stdout}{check.stderr}")
    log_path = out / "gateway-dpop.stderr.log"
    proc = procs.start("jwtgate (dpop)", [binary, "run", "-c", cfg], stop_signal=signal.SIGINT,
                       log_path=log_path, env=dict(os.environ, RUST_LOG="warn", NO_COLOR="1"))
    h.wait_until(lambda: h.http_get(f"http://{admin}/readyz")[0] == 200, "jwtgate /readyz", proc, log_path, 60)
    return proc, listen, admin


def mint_bound(binary: Path, jkt: str, path: Path) -> str:
    argv = [str(binary), "token", "mint", "--key", str(h.DEMO_KEY), "--kid", h.DEMO_KID, "--iss", h.DEMO_ISSUER,
            "--aud", h.DEMO_AUDIENCE, "--sub", "load", "--scope", "echo:read", "--ttl", "2h",
            "--claim", "cnf=" + json.dumps({"jkt": jkt})]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise h.HarnessError(f"token mint (bound) failed: {r.stderr}")
    token = r.stdout.strip()
    path.write_text(token + "\n")
    return token


def preflight(url: str, client: Client, bearer: str, bound: str) -> None:
    """The route accepts both, and really checks proofs: a replay and a missing proof are refused."""
    proof = client.proofs(1, url, bound)[0]
    dpop = {"Authorization": f"DPoP {bound}", "DPoP": proof}
    for what, headers, expect in [
        ("bearer token", {"Authorization": f"Bearer {bearer}"}, 200),
        ("bound token with a proof", dpop, 200),
        ("the same proof again", dpop, 401),
        ("bound token without a proof", {"Authorization": f"Bearer {bound}"}, 401),
    ]:
        status, _ = h.http_get(url, headers)
        if status != expect:
            raise h.HarnessError(f"preflight: {what} answered {status}, expected {expect}")
    h.log("preflight: bearer and DPoP accepted; a replayed proof and a bound token without one refused")


# --------------------------------------------------------------------------
# the rounds


def check_record(w, rec: dict) -> None:
    r = rec["wrk"]
    if r.get("proofs_exhausted"):
        raise h.HarnessError(f"{w.name}: wrk ran out of proofs ({r['proofs_exhausted']} requests short): the "
                             "rate rose above the estimate; run again with a larger --margin")
    if r["errors"] or r["status_2xx"] != r["requests"]:
        raise h.HarnessError(f"{w.name}: {r['errors']} requests failed ({r['status_2xx']:,} of {r['requests']:,} "
                             f"answered 2xx, {r['status_401']:,} 401); decisions: "
                             f"{rec['metrics'].get('auth_decisions')}; see {rec['wrk_output']}")


def per_round(records: list[dict]) -> list[dict]:
    by_round: dict = {}
    for r in records:
        by_round.setdefault(r["round"], {})[r["workload"]] = r["gateway_cpu_us_per_request"]
    return [{"round": rnd, "bearer_us": v["bearer"], "dpop_us": v["dpop"],
             "ratio": round(v["dpop"] / v["bearer"], 3), "dpop_part_us": round(v["dpop"] - v["bearer"], 2)}
            for rnd, v in sorted(by_round.items()) if "bearer" in v and "dpop" in v]


def spread(xs: list[float], digits: int) -> str:
    return f"{h.med(xs):.{digits}f} ({min(xs):.{digits}f}–{max(xs):.{digits}f})"


def report(summary: list[dict], rounds: list[dict], meta: dict) -> str:
    by = {s["workload"]: s for s in summary}
    lines = [f"# DPoP beside bearer on one route ({meta['jwtgate']}, git {meta['git']}, 1 worker thread, "
             f"{meta['rounds']} rounds × {meta['duration']} s)", "",
             "| workload | req/s | p50 ms | p99 ms | jwtgate CPU µs/request |", "|---|--:|--:|--:|--:|"]
    for name in ("bearer", "dpop"):
        s = by[name]
        lines.append(f"| {name} | {h.fmt_rps(s['rps_median'])} | {s['p50_ms']:.3f} | {s['p99_ms']:.3f} "
                     f"| {s['gateway_cpu_us_per_request']:.1f} ({s['gateway_cpu_us_min']:.1f}–"
                     f"{s['gateway_cpu_us_max']:.1f}) |")
    lines += ["", f"DPoP ÷ bearer, per round: {spread([r['ratio'] for r in rounds], 2)}; "
                  f"the DPoP part (DPoP − bearer): {spread([r['dpop_part_us'] for r in rounds], 1)} µs per request",
              f"DPoP requests: {by['dpop']['total_status_2xx']:,} answered 200, every one with a fresh proof; "
              f"decisions: {by['dpop']['auth_decisions']}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    h.standalone_arguments(p, quick=False)
    p.add_argument("--margin", type=float, default=1.5,
                   help="proofs made per round: this times the highest rate seen (default 1.5)")
    p.add_argument("--iat-past", default="10m", help="the route's auth.dpop.iat_window.past (default 10m)")
    args = p.parse_args(argv)
    binary = args.binary.resolve()
    if not binary.exists():
        raise h.HarnessError(f"{binary} is missing: cargo build --release --locked --bin jwtgate")
    # run_wrk runs run.py's script; these workloads need this one (same arguments, same output lines).
    h.LUA_SCRIPT = LUA_SCRIPT
    with h.Standalone("dpop", args.out) as run:
        out, tmp, procs, nginx, upstream = run.out, run.tmp, run.procs, run.nginx, run.upstream
        gateway, listen, admin = start_gateway(procs, binary, out, upstream, args.iat_past)
        url = f"http://{listen}{PATH}"
        client = Client()
        bearer = h.mint(binary, h.DEMO_KEY, 1, tmp / "bearer-token.txt")[0]
        bound = mint_bound(binary, client.jkt, tmp / "bound-token.txt")
        preflight(url, client, bearer, bound)
        bearer_file, dpop_file = tmp / "bearer.txt", tmp / "dpop.txt"
        bearer_file.write_text(f"Bearer {bearer}\n")
        workloads = [
            h.Workload("bearer", "one RS256 token, Authorization: Bearer (token-cache hits)", url, "2xx",
                       bearer_file, gateway, admin),
            h.Workload("dpop", "one DPoP-bound RS256 token (cache hits), a fresh ES256 proof per request", url,
                       "2xx", dpop_file, gateway, admin),
        ]
        others = {"nginx": nginx}
        warmup = copy.copy(args)
        warmup.duration = WARMUP_S
        # A bearer request costs less than a DPoP one: its rate bounds the first round's proofs.
        best = {"bearer": h.run_wrk(warmup, procs, workloads[0], others, out, "warmup-bearer")["wrk"]["rps"]}
        h.log(f"warm-up: bearer {best['bearer']:,.0f} req/s")

        def measure(w, label):
            if w.name == "dpop":
                count = math.ceil(best.get("dpop", best["bearer"]) * args.duration * args.margin)
                t0 = time.monotonic()
                proofs = client.proofs(count, url, bound)
                dpop_file.write_text(f"DPoP {bound}\n" + "\n".join(proofs) + "\n")
                h.log(f"{label}: {count:,} proofs made in {time.monotonic() - t0:.1f} s")
            rec = h.run_wrk(args, procs, w, others, out, label)
            check_record(w, rec)
            if w.name == "dpop":
                best["dpop"] = max(best.get("dpop", 0.0), rec["wrk"]["rps"])
            return rec

        records, save = run.records, run.save
        meta = run.meta
        meta.update({"jwtgate": h.tool_version([str(binary), "--version"]), "git": h.git_revision(),
                       "cores": os.cpu_count(), "loadavg_start": os.getloadavg(), "rounds": args.rounds,
                       "duration": args.duration, "connections": args.connections, "wrk_threads": args.wrk_threads,
                       "iat_past": args.iat_past, "margin": args.margin})

        h.run_rounds(args.rounds, workloads, measure, h.wrk_line, records, save, others, out)
    summary = h.summarize(workloads, records)
    rounds = per_round(records)
    meta["loadavg_end"] = os.getloadavg()
    save(summary, rounds)
    return h.publish(out, report(summary, rounds, meta))


if __name__ == "__main__":
    h.exit_with(main)
