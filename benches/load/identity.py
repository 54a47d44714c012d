#!/usr/bin/env python3
"""CPU per request of identity tokens for backends, beside plain identity headers.

From the repository root, with a release build:

    cargo build --release --locked --bin jwtgate
    python3 benches/load/identity.py            # 3 rounds × 10 s
    python3 benches/load/identity.py --quick    # 3 rounds × 3 s

On 127.0.0.1: nginx answering "ok" as the upstream (run.py's) and one jwtgate
process per variant, each with one worker thread and run.py's config (the demo
issuer from deploy/dev-keys/jwks.json), plus an `/idt` route sending the
backend an identity token (`forward.identity_token`, ES256, a P-256 key made
with openssl):

- headers-one: `/api` (`sub` as `X-User-Id`), one token, token cache on;
- identity-one: `/idt`, one token, token cache on: the identity token signed
  for it is reused;
- headers-distinct: `/api`, distinct tokens round-robin, token cache off: every
  request is a full RS256 verification;
- identity-distinct: `/idt`, the same, so every request also signs a new
  identity token (the cache of signed tokens is keyed by the verified token,
  new on every request without the token cache): the signing cost.

wrk drives each in turn, in interleaved rounds (run.py's run_rounds, run_wrk and
CPU accounting by process group); any request not answered 200 fails the run.
The result: each variant's CPU µs per request, and per round what the identity
token adds over headers (µs), reused and signed anew. It writes results.json,
summary.md and the wrk outputs to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

import run as h

DISTINCT_TOKENS = 1000

VARIANTS = [
    # name, path, token cache, distinct tokens
    ("headers-one", "/api/orders", True, False),
    ("identity-one", "/idt/orders", True, False),
    ("headers-distinct", "/api/orders", False, True),
    ("identity-distinct", "/idt/orders", False, True),
]
DESCRIPTIONS = {
    "headers-one": "`sub` as a header, one token (cache hit)",
    "identity-one": "an identity token, one token (cache hit, identity token reused)",
    "headers-distinct": f"`sub` as a header, {DISTINCT_TOKENS} tokens, cache off (RS256 verify per request)",
    "identity-distinct": f"an identity token, {DISTINCT_TOKENS} tokens, cache off (verify and ES256 sign per request)",
}


def identity_route(upstream: str) -> str:
    """The `/idt` route, a `routes` list item."""
    return f"""\
  - name: idt
    match: {{ path_prefix: /idt }}
    upstream: {{ addrs: [{json.dumps(upstream)}] }}
    auth: {{ mode: required, issuers: [demo] }}
    forward:
      identity_token: {{ audience: orders, ttl: 5m }}
"""


def identity_keys(key: Path) -> str:
    """The top-level `identity_tokens` block."""
    return f"""\
identity_tokens:
  issuer: https://gateway.bench
  keys:
    - {{ kid: bench, file: {json.dumps(str(key))} }}
"""


def added(rounds: list[dict], over: str, name: str) -> list[float]:
    return [r["us"][name] - r["us"][over] for r in rounds if name in r["us"] and over in r["us"]]


def per_round(records: list[dict]) -> list[dict]:
    by_round: dict = {}
    for r in records:
        by_round.setdefault(r["round"], {})[r["workload"]] = r["gateway_cpu_us_per_request"]
    return [{"round": rnd, "us": us} for rnd, us in sorted(by_round.items())]


def report(summary: list[dict], rounds: list[dict], meta: dict) -> str:
    lines = [f"# Identity tokens ({meta['jwtgate']}, git {meta['git']}, 1 worker thread, "
             f"{meta['rounds']} rounds × {meta['duration']} s)", "",
             "| variant | req/s | p50 ms | p99 ms | jwtgate CPU µs/request |", "|---|--:|--:|--:|--:|"]
    for s in summary:
        lines.append(f"| {s['workload']} | {h.fmt_rps(s['rps_median'])} | {s['p50_ms']:.3f} | {s['p99_ms']:.3f} "
                     f"| {s['gateway_cpu_us_per_request']:.1f} ({s['gateway_cpu_us_min']:.1f}–"
                     f"{s['gateway_cpu_us_max']:.1f}) |")
    reused = added(rounds, "headers-one", "identity-one")
    signed = added(rounds, "headers-distinct", "identity-distinct")
    lines += ["", "What the identity token adds over headers, per round (µs per request):",
              f"- reused (cache hit): median {h.med(reused):+.1f} ({min(reused):+.1f} to {max(reused):+.1f})",
              f"- signed anew (ES256): median {h.med(signed):+.1f} ({min(signed):+.1f} to {max(signed):+.1f})",
              f"load average {meta['loadavg_start'][0]:.1f} at the start, {meta['loadavg_end'][0]:.1f} at the end"]
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    h.standalone_arguments(p)
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 3, 3
    if not args.binary.exists():
        raise h.HarnessError(f"--binary {args.binary} is missing: cargo build --release --locked --bin jwtgate")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    binary = args.binary.resolve()
    with h.Standalone("identity", args.out) as run:
        key = run.tmp / "identity.pem"
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-out", str(key)], check=True, capture_output=True, timeout=30)
        one, many = run.tmp / "one.txt", run.tmp / "many.txt"
        h.mint(binary, h.DEMO_KEY, 1, one)
        h.mint(binary, h.DEMO_KEY, DISTINCT_TOKENS, many)
        workloads = []
        for name, path, cache, distinct in VARIANTS:
            gateway, listen, admin = h.start_gateway(run.procs, binary, run.out, name, run.upstream, 1,
                                                     cache=cache, extra_config=identity_keys(key),
                                                     extra_routes=identity_route(run.upstream))
            workloads.append(h.Workload(name, DESCRIPTIONS[name], f"http://{listen}{path}", "2xx",
                                        many if distinct else one, gateway, admin))
        for w in workloads:
            token = w.token_file.read_text().split()[0]
            status, _ = h.http_get(w.url, {"Authorization": f"Bearer {token}"})
            if status != 200:
                raise h.HarnessError(f"preflight {w.name}: GET {w.url} answered {status}, expected 200")
        run.meta.update({"jwtgate": h.tool_version([str(binary), "--version"]), "git": h.git_revision(),
                         "cores": os.cpu_count(), "loadavg_start": os.getloadavg(), "rounds": args.rounds,
                         "duration": args.duration, "connections": args.connections,
                         "wrk_threads": args.wrk_threads, "variants": {w.name: w.description for w in workloads}})

        def measure(w, label):
            rec = h.run_wrk(args, run.procs, w, {"nginx": run.nginx}, run.out, label)
            r = rec["wrk"]
            if r["errors"] or r["status_2xx"] != r["requests"]:
                raise h.HarnessError(f"{w.name}: {r['errors']} requests failed ({r['status_2xx']:,} of "
                                     f"{r['requests']:,} answered 2xx); see {rec['wrk_output']}")
            return rec

        run.run_rounds(args, workloads, measure, h.wrk_line, {"nginx": run.nginx})
    summary = h.summarize(workloads, run.records)
    rounds = per_round(run.records)
    run.meta["loadavg_end"] = os.getloadavg()
    run.save(summary, rounds)
    return h.publish(run.out, report(summary, rounds, run.meta))


if __name__ == "__main__":
    h.exit_with(main)
