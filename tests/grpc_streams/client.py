"""Test-only: a real gRPC client (grpcio) making calls of
jwtgate.test.Streams (proto/) through jwtgate.

Usage: client.py < plan.json

plan.json: {"target": "HOST:PORT", "ca": CA file or null (h2c),
"server_name": name the certificate is checked against, "calls": [...]},
each call {"method": "unary" | "ticks" | "echo", "token": bearer token or
null, "count": messages (ticks: asked of the server; echo: sent by the
client), "interval_ms": time between them, "idle": for echo, true to keep
the request stream open after the last note instead of ending it,
"timeout": seconds}. The calls run at once, on one channel (one HTTP/2
connection). stdout gets one JSON line per event, as it happens:
  {"call": I, "event": "message", "n": messages so far, "at": unix time}
  {"call": I, "event": "end", "code": status code name, "details": text,
   "trailers": {name: value}, "received": messages, "at": unix time}
"""

import json
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "common"))
import grpc_stubs  # noqa: E402
from grpc_stubs import report  # noqa: E402


def readable(metadata):
    """Trailing metadata as JSON: `-bin` values as hex."""
    return {
        key: value.hex() if isinstance(value, bytes) else value
        for key, value in (metadata or ())
    }


def channel_for(grpc, plan):
    if plan.get("ca") is None:
        return grpc.insecure_channel(plan["target"])
    with open(plan["ca"], "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    options = [("grpc.ssl_target_name_override", plan["server_name"])]
    return grpc.secure_channel(plan["target"], credentials, options=options)


def notes(pb, call, finished):
    """The request stream of an echo call: `count` notes, then either its
    end or, with `idle`, nothing more until the call has ended."""
    for i in range(call["count"]):
        if i > 0 and finished.wait(call["interval_ms"] / 1000):
            return
        yield pb.Note(text=f"note {i + 1}")
    if call.get("idle"):
        finished.wait()


def run(grpc, pb, stub, index, call):
    metadata = []
    if call.get("token"):
        metadata.append(("authorization", f"Bearer {call['token']}"))
    timeout = call.get("timeout", 30)
    finished = threading.Event()
    received = 0
    outcome = {"code": "OK", "details": "", "trailers": {}}
    try:
        if call["method"] == "unary":
            responses = [stub.Unary(pb.Note(text="one"), metadata=metadata, timeout=timeout)]
        elif call["method"] == "ticks":
            request = pb.TickRequest(count=call["count"], interval_ms=call["interval_ms"])
            responses = stub.Ticks(request, metadata=metadata, timeout=timeout)
        else:
            responses = stub.Echo(notes(pb, call, finished), metadata=metadata, timeout=timeout)
        for _ in responses:
            received += 1
            report(call=index, event="message", n=received, at=time.time())
        if hasattr(responses, "trailing_metadata"):
            outcome["trailers"] = readable(responses.trailing_metadata())
    except grpc.RpcError as error:
        outcome = {
            "code": error.code().name,
            "details": error.details() or "",
            "trailers": readable(error.trailing_metadata()),
        }
    finished.set()
    report(call=index, event="end", received=received, at=time.time(), **outcome)


def main():
    plan = json.load(sys.stdin)
    _keep = grpc_stubs.importable(os.path.join(HERE, "proto"))
    import grpc
    from jwtgate.test import streams_pb2 as pb
    from jwtgate.test import streams_pb2_grpc as pb_grpc

    with channel_for(grpc, plan) as channel:
        stub = pb_grpc.StreamsStub(channel)
        threads = [
            threading.Thread(target=run, args=(grpc, pb, stub, i, call))
            for i, call in enumerate(plan["calls"])
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


if __name__ == "__main__":
    main()
