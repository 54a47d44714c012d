"""Test-only: an OpenTelemetry trace receiver, decoding what jwtgate exports
with the official OTLP protobuf definitions (opentelemetry-proto) as a real
collector does.

Usage: receiver.py [--delay SECONDS] [--fail]

Listens on three loopback ports the OS picks:
  - OTLP/gRPC: opentelemetry.proto.collector.trace.v1.TraceService/Export;
  - OTLP/HTTP: POST /v1/traces, Content-Type application/x-protobuf (gzip
    accepted), answered with an empty ExportTraceServiceResponse;
  - a query port: GET /spans answers {"spans": [...], "exports": [...]}.
and then writes one JSON line to stdout:
  {"event": "listening", "grpc": PORT, "http": PORT, "query": PORT}

--delay SECONDS: every export waits that long before it is answered (a slow
collector). --fail: every export is refused, UNAVAILABLE over gRPC and 503
over HTTP (a collector that is down behind its load balancer); its spans are
not stored, the export itself is.

Each stored span is a plain JSON object: its resource's attributes, its
scope, ids as lowercase hex ("" for no parent), the kind and status code as
their protobuf names ("SPAN_KIND_SERVER", "STATUS_CODE_ERROR"), attributes
as an object of plain values, start and end in Unix nanoseconds, and which
transport brought it. Each export records its transport, its request
headers or gRPC metadata (lowercase names), how many spans it carried and
whether it was accepted.
"""

import argparse
import gzip
import json
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.proto.trace.v1 import trace_pb2

LOOPBACK = "127.0.0.1"
PROTOBUF = "application/x-protobuf"


class Store:
    """Everything received, shared by the listeners' threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.spans = []
        self.exports = []

    def add(self, transport, headers, request, accepted):
        spans = list(flatten(request, transport)) if accepted else []
        count = sum(
            len(scope_spans.spans)
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
        )
        export = {
            "transport": transport,
            "headers": headers,
            "spans": count,
            "accepted": accepted,
        }
        with self.lock:
            self.spans.extend(spans)
            self.exports.append(export)

    def snapshot(self):
        with self.lock:
            return {"spans": list(self.spans), "exports": list(self.exports)}


def plain(value):
    """An OTLP AnyValue as the JSON value it stands for."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [plain(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def attributes(key_values):
    return {kv.key: plain(kv.value) for kv in key_values}


def flatten(request, transport):
    """One JSON object per span of an ExportTraceServiceRequest."""
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = {
                "name": scope_spans.scope.name,
                "version": scope_spans.scope.version,
            }
            for span in scope_spans.spans:
                yield {
                    "transport": transport,
                    "resource": resource,
                    "scope": scope,
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "trace_state": span.trace_state,
                    "name": span.name,
                    "kind": trace_pb2.Span.SpanKind.Name(span.kind),
                    "attributes": attributes(span.attributes),
                    "status": {
                        "code": trace_pb2.Status.StatusCode.Name(span.status.code),
                        "message": span.status.message,
                    },
                    "start_unix_nano": span.start_time_unix_nano,
                    "end_unix_nano": span.end_time_unix_nano,
                }


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, store, options):
        self.store = store
        self.options = options

    def Export(self, request, context):
        metadata = {}
        for key, value in context.invocation_metadata():
            metadata[key.lower()] = value if isinstance(value, str) else value.hex()
        time.sleep(self.options.delay)
        self.store.add("grpc", metadata, request, not self.options.fail)
        if self.options.fail:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the receiver refuses (--fail)")
        return trace_service_pb2.ExportTraceServiceResponse()


class Handler(BaseHTTPRequestHandler):
    """The base of both HTTP listeners: HTTP/1.1 with keep-alive, as an
    exporter's connection pool expects, and no request log on stderr."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def answer(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length)
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            data = gzip.decompress(data)
        return data


def otlp_http_handler(store, options):
    class OtlpHttp(Handler):
        def do_POST(self):
            data = self.body()
            if self.path.split("?")[0] != "/v1/traces":
                return self.answer(404, "text/plain", b"only /v1/traces\n")
            content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
            if content_type != PROTOBUF:
                return self.answer(415, "text/plain", b"only application/x-protobuf\n")
            request = trace_service_pb2.ExportTraceServiceRequest()
            try:
                request.ParseFromString(data)
            except Exception as error:  # a body that is not the message
                return self.answer(400, "text/plain", f"{error}\n".encode())
            headers = {name.lower(): value for name, value in self.headers.items()}
            time.sleep(options.delay)
            store.add("http", headers, request, not options.fail)
            if options.fail:
                return self.answer(503, "text/plain", b"the receiver refuses (--fail)\n")
            response = trace_service_pb2.ExportTraceServiceResponse()
            self.answer(200, PROTOBUF, response.SerializeToString())

    return OtlpHttp


def query_handler(store):
    class Query(Handler):
        def do_GET(self):
            if self.path.split("?")[0] != "/spans":
                return self.answer(404, "text/plain", b"only /spans\n")
            body = json.dumps(store.snapshot()).encode()
            self.answer(200, "application/json", body)

    return Query


def serve_http(handler):
    server = ThreadingHTTPServer((LOOPBACK, 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--fail", action="store_true")
    options = parser.parse_args()

    store = Store()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
        TraceService(store, options), server
    )
    grpc_port = server.add_insecure_port(f"{LOOPBACK}:0")
    server.start()
    http_port = serve_http(otlp_http_handler(store, options))
    query_port = serve_http(query_handler(store))
    line = {"event": "listening", "grpc": grpc_port, "http": http_port, "query": query_port}
    print(json.dumps(line), flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    sys.exit(main())
