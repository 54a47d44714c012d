#!/usr/bin/env python3
"""CPU per request of a bearer request with tracing off and on, at three sampling ratios.

From the repository root, with a release build and the OTLP receiver of the
tracing tests (tests/otlp/receiver.py, which needs `grpcio` and
`opentelemetry-proto` in the Python that runs it: scripts/test installs both
into .tools/venv):

    cargo build --release --locked --bin jwtgate
    python3 benches/load/tracing.py                 # 3 rounds × 10 s
    python3 benches/load/tracing.py --baseline-binary /tmp/jwtgate-before

On 127.0.0.1: nginx answering "ok" as the upstream (run.py's), the OTLP
receiver, and one jwtgate process per variant, each with one worker thread
and run.py's `/api` route (`required`, the demo issuer from
deploy/dev-keys/jwks.json, `sub` forwarded):

- off: no `telemetry` block;
- ratio-0: tracing on, `sampling_ratio: 0.0` (ids and `traceparent` only);
- ratio-1pct: `sampling_ratio: 0.01`;
- ratio-100pct: `sampling_ratio: 1.0` (a server and a client span per request);
- baseline (with --baseline-binary): another jwtgate, e.g. one from before
  tracing, with the same config as off.

The tracing variants export over OTLP/gRPC to the receiver, with
`incoming_context: never`, `batch_interval: 1s` and the default queue and
batch sizes. wrk sends one RS256 token (every request a token-cache hit) to
each in turn, in interleaved rounds (run.py's run_rounds, run_wrk and CPU
accounting by process group). After each variant's load the harness waits
until its export queue has drained (the span counters stop moving) and adds
the gateway's CPU over that wait to the round's, so every span of the round
is paid for in it; every variant waits the same way. Any request not answered
200 fails the run.

The result, per variant: the gateway's CPU µs per request (median and range
over rounds), its ratio to off in the same round (median and range of the
per-round ratios), and the spans exported and dropped per round
(`jwtgate_trace_spans_exported_total`, `jwtgate_trace_spans_dropped_total`);
whether ratio-1pct is within 3 % of off. It writes results.json, summary.md
and the wrk outputs to --out.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import time
from pathlib import Path

import run as h

PATH = "/api/orders"
WARMUP_S = 3
BATCH_INTERVAL_S = 1.0
# The export loop has drained once no span was exported or dropped for this
# long: longer than a batch waits to fill.
SETTLE_QUIET_S = BATCH_INTERVAL_S + 0.5
SETTLE_MAX_S = 20.0
ONE_PCT_LIMIT = 1.03  # the target: sampling 1 % adds at most 3 %

# name -> sampling_ratio (None: no telemetry block)
VARIANTS = [("off", None), ("ratio-0", 0.0), ("ratio-1pct", 0.01), ("ratio-100pct", 1.0)]
DESCRIPTIONS = {
    "baseline": "--baseline-binary, no telemetry block",
    "off": "no telemetry block",
    "ratio-0": "tracing on, sampling_ratio 0.0: ids and traceparent only",
    "ratio-1pct": "tracing on, sampling_ratio 0.01",
    "ratio-100pct": "tracing on, sampling_ratio 1.0: a server and a client span per request",
}


# --------------------------------------------------------------------------
# the receiver and the gateways


def start_receiver(procs, python: Path, receiver: Path, out: Path):
    """The OTLP receiver; returns its process and its ports ({"grpc": …, "query": …}). `python` is not
    resolved: a virtualenv's interpreter is a symlink, and only its own path finds the venv's packages."""
    log_path = out / "otlp-receiver.log"
    proc = procs.start("OTLP receiver", [python, receiver], stop_signal=signal.SIGTERM, log_path=log_path)
    ports: dict = {}

    def listening() -> bool:
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("event") == "listening":
                    ports.update(event)
                    return True
        return False

    h.wait_until(listening, f"OTLP receiver ({python} {receiver})", proc, log_path, 60)
    return proc, ports


def telemetry_yaml(endpoint: str, ratio: float) -> str:
    return f"""\
telemetry:
  tracing:
    endpoint: {json.dumps(endpoint)}
    protocol: grpc
    sampling_ratio: {ratio}
    incoming_context: never
    batch_interval: {BATCH_INTERVAL_S:g}s
"""


def trace_counters(admin: str) -> dict | None:
    """The span counters of a gateway's /metrics; None when it has none (tracing off)."""
    status, body = h.http_get(f"http://{admin}/metrics")
    if status != 200:
        raise h.HarnessError(f"GET http://{admin}/metrics answered {status}")
    counters = {"exported": None, "queue_full": 0, "export_failed": 0}
    for line in body.decode("utf-8", "replace").splitlines():
        if line.startswith("jwtgate_trace_spans_exported_total "):
            counters["exported"] = int(float(line.split()[-1]))
        elif line.startswith("jwtgate_trace_spans_dropped_total{"):
            labels, _, value = line.rpartition(" ")
            reason = h._parse_labels(labels.partition("{")[2].rstrip("}")).get("reason")
            counters[reason] = int(float(value))
    return counters if counters["exported"] is not None else None


def settle(w) -> dict:
    """Waits until the gateway's export queue has drained (or, tracing off,
    the same quiet time); returns the gateway CPU seconds spent meanwhile and
    its span counters then."""
    cpu_before = h.group_cpu_seconds(w.gateway.pid)
    t0 = time.monotonic()
    last, quiet_since = trace_counters(w.admin), time.monotonic()
    while time.monotonic() - quiet_since < SETTLE_QUIET_S:
        if time.monotonic() - t0 > SETTLE_MAX_S:
            raise h.HarnessError(f"{w.name}: spans still being exported {SETTLE_MAX_S:.0f} s after the load")
        time.sleep(0.1)
        now = trace_counters(w.admin)
        if now != last:
            last, quiet_since = now, time.monotonic()
    return {"cpu_s": h.group_cpu_seconds(w.gateway.pid) - cpu_before, "wait_s": time.monotonic() - t0,
            "counters": last}


def counters_delta(before: dict | None, after: dict | None) -> dict | None:
    if before is None or after is None:
        return None
    return {k: after[k] - before[k] for k in after}


def preflight(workloads, receiver_query: str) -> None:
    """Every variant answers the token with 200; a sampled request's spans reach the receiver, decoded."""
    for w in workloads:
        headers = {"Authorization": f"Bearer {w.token_file.read_text().strip()}"}
        status, _ = h.http_get(w.url, headers)
        if status != 200:
            raise h.HarnessError(f"preflight {w.name}: GET {w.url} answered {status}, expected 200")
    want = {"GET api", "GET"}  # the server span and the upstream call's client span
    deadline = time.monotonic() + 15
    while True:
        status, body = h.http_get(f"http://127.0.0.1:{receiver_query}/spans")
        names = {s["name"] for s in json.loads(body)["spans"]} if status == 200 else set()
        if want <= names:
            break
        if time.monotonic() > deadline:
            raise h.HarnessError(f"preflight: the receiver has spans {sorted(names)} after the sampled request, "
                                 f"expected {sorted(want)}; see the gateway logs")
        time.sleep(0.2)
    h.log(f"preflight: {len(workloads)} variants answered 200; the receiver got the sampled request's spans")


# --------------------------------------------------------------------------
# the results


def per_round(records: list[dict], names: list[str]) -> list[dict]:
    """Each round's CPU µs per request by variant and each variant's ratio to off in that round."""
    by_round: dict = {}
    for r in records:
        by_round.setdefault(r["round"], {})[r["workload"]] = r["gateway_cpu_us_per_request"]
    rows = []
    for rnd, us in sorted(by_round.items()):
        if "off" not in us:
            continue
        rows.append({"round": rnd, "us": us,
                     "ratio_to_off": {n: round(us[n] / us["off"], 4) for n in names if n in us}})
    return rows


def spread(xs: list[float], digits: int) -> str:
    return f"{h.med(xs):.{digits}f} ({min(xs):.{digits}f}–{max(xs):.{digits}f})"


def spans_cell(records: list[dict]) -> str:
    deltas = [r["spans"] for r in records if r.get("spans")]
    if not deltas:
        return "–"
    exported = sum(d["exported"] for d in deltas)
    full = sum(d["queue_full"] for d in deltas)
    failed = sum(d["export_failed"] for d in deltas)
    requests = sum(r["wrk"]["requests"] for r in records)
    return (f"{exported:,} exported ({exported / requests:.3f} per request); dropped: {full:,} queue full, "
            f"{failed:,} export failed")


def report(summary: list[dict], rounds: list[dict], records: list[dict], names: list[str], meta: dict) -> str:
    by = {s["workload"]: s for s in summary}
    lines = [f"# Tracing off and on ({meta['jwtgate']}, git {meta['git']}, 1 worker thread, "
             f"{meta['rounds']} rounds × {meta['duration']} s)", "",
             "| variant | req/s | p50 ms | p99 ms | jwtgate CPU µs/request | ÷ off, per round | spans |",
             "|---|--:|--:|--:|--:|--:|---|"]
    for name in names:
        s = by[name]
        ratios = [r["ratio_to_off"][name] for r in rounds if name in r["ratio_to_off"]]
        mine = [r for r in records if r["workload"] == name]
        lines.append(f"| {name} | {h.fmt_rps(s['rps_median'])} | {s['p50_ms']:.3f} | {s['p99_ms']:.3f} "
                     f"| {s['gateway_cpu_us_per_request']:.1f} ({s['gateway_cpu_us_min']:.1f}–"
                     f"{s['gateway_cpu_us_max']:.1f}) | {spread(ratios, 3)} | {spans_cell(mine)} |")
    one = h.med([r["ratio_to_off"]["ratio-1pct"] for r in rounds])
    lines += ["", f"sampling 1 % ÷ off: {one:.3f}, {'within' if one <= ONE_PCT_LIMIT else 'MORE than'} "
                  f"+{(ONE_PCT_LIMIT - 1) * 100:.0f} % (the target)"]
    full = [r for r in records if r["workload"] == "ratio-100pct" and r.get("spans")]
    if any(r["spans"]["queue_full"] or r["spans"]["export_failed"] for r in full):
        lines.append("sampling 100 %: spans were dropped (the receiver did not keep up); the CPU per request "
                     "counts what jwtgate did, a dropped span costing less than an exported one")
    rcv = [r["cpu_s"]["receiver"] / r["wall_s"] for r in full]
    if rcv:
        lines.append(f"the OTLP receiver used {h.med(rcv):.2f} of a core during the 100 % rounds")
    lines.append(f"load average {meta['loadavg_start'][0]:.1f} at the start, {meta['loadavg_end'][0]:.1f} at the end")
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    h.standalone_arguments(p)
    p.add_argument("--baseline-binary", type=Path, default=None,
                   help="another jwtgate (e.g. one without tracing), measured as `baseline` with off's config")
    p.add_argument("--receiver", type=Path, default=h.REPO / "tests" / "otlp" / "receiver.py",
                   help="the OTLP receiver script (default tests/otlp/receiver.py)")
    p.add_argument("--receiver-python", type=Path, default=h.REPO / ".tools" / "venv" / "bin" / "python",
                   help="the Python that runs it, with grpcio and opentelemetry-proto (default .tools/venv)")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 3, 3
    for what, path in (("--binary", args.binary), ("--receiver", args.receiver),
                       ("--receiver-python", args.receiver_python), ("--baseline-binary", args.baseline_binary)):
        if path is not None and not path.exists():
            hint = {"--binary": ": cargo build --release --locked --bin jwtgate",
                    "--receiver-python": ": scripts/test installs grpcio and opentelemetry-proto into .tools/venv"}
            raise h.HarnessError(f"{what} {path} is missing{hint.get(what, '')}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    binary = args.binary.resolve()
    with h.Standalone("tracing", args.out) as run:
        out, tmp, procs, nginx, upstream = run.out, run.tmp, run.procs, run.nginx, run.upstream
        receiver, ports = start_receiver(procs, args.receiver_python.absolute(), args.receiver.resolve(), out)
        endpoint = f"http://127.0.0.1:{ports['grpc']}"
        token_file = tmp / "token.txt"
        h.mint(binary, h.DEMO_KEY, 1, token_file)
        variants = [("baseline", args.baseline_binary.resolve(), None)] if args.baseline_binary else []
        variants += [(name, binary, ratio) for name, ratio in VARIANTS]
        workloads = []
        for name, exe, ratio in variants:
            extra = "" if ratio is None else telemetry_yaml(endpoint, ratio)
            gateway, listen, admin = h.start_gateway(procs, exe, out, name, upstream, 1, cache=True,
                                                     extra_config=extra)
            workloads.append(h.Workload(name, DESCRIPTIONS[name], f"http://{listen}{PATH}", "2xx", token_file,
                                        gateway, admin))
        names = [w.name for w in workloads]
        h.log(f"variants: {', '.join(names)}; OTLP receiver on {endpoint}")
        preflight(workloads, ports["query"])
        others = {"nginx": nginx, "receiver": receiver}
        warmup = copy.copy(args)
        warmup.duration = WARMUP_S
        for w in workloads:
            h.run_wrk(warmup, procs, w, others, out, f"warmup-{w.name}")
            settle(w)

        def measure(w, label):
            before = trace_counters(w.admin)
            rec = h.run_wrk(args, procs, w, others, out, label)
            r = rec["wrk"]
            if r["errors"] or r["status_2xx"] != r["requests"]:
                raise h.HarnessError(f"{w.name}: {r['errors']} requests failed ({r['status_2xx']:,} of "
                                     f"{r['requests']:,} answered 2xx); see {rec['wrk_output']}")
            drained = settle(w)
            # The spans of this round were exported (or dropped) during the load or the drain: both are its cost.
            rec["cpu_s"]["gateway_drain"] = round(drained["cpu_s"], 3)
            rec["drain_s"] = round(drained["wait_s"], 2)
            rec["gateway_cpu_us_per_request"] = round(
                (rec["cpu_s"]["gateway"] + drained["cpu_s"]) / r["requests"] * 1e6, 2)
            rec["spans"] = counters_delta(before, drained["counters"])
            rec["receiver_rss_kib"] = h.group_rss_kib(receiver.pid)
            return rec

        def describe(rec):
            spans = rec["spans"]
            text = f"{h.wrk_line(rec)}  {rec['gateway_cpu_us_per_request']:.1f} µs/req"
            if spans:
                text += f"  spans {spans['exported']:,} exported, {spans['queue_full'] + spans['export_failed']:,} dropped"
            return text

        records, save = run.records, run.save
        meta = run.meta
        meta.update({"jwtgate": h.tool_version([str(binary), "--version"]), "git": h.git_revision(),
                       "baseline": h.tool_version([str(args.baseline_binary), "--version"]) if args.baseline_binary else None,
                       "cores": os.cpu_count(), "loadavg_start": os.getloadavg(), "rounds": args.rounds,
                       "duration": args.duration, "connections": args.connections, "wrk_threads": args.wrk_threads,
                       "variants": {w.name: w.description for w in workloads}, "endpoint": endpoint,
                       "batch_interval_s": BATCH_INTERVAL_S})

        h.run_rounds(args.rounds, workloads, measure, describe, records, save, others, out)
    summary = h.summarize(workloads, records)
    rounds = per_round(records, names)
    meta["loadavg_end"] = os.getloadavg()
    save(summary, rounds)
    return h.publish(out, report(summary, rounds, records, names, meta))


if __name__ == "__main__":
    h.exit_with(main)
