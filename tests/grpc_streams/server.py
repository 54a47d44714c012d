"""Test-only: the gRPC upstream behind jwtgate (grpcio, over TLS, since
jwtgate speaks HTTP/2 to an upstream only when ALPN offers it).

Usage: server.py CERT KEY

Serves jwtgate.test.Streams (proto/) on a loopback port the OS picks, and
writes one JSON line per event to stdout:
  {"event": "listening", "port": N}
  {"event": "start", "method": M, "headers": [names of the call metadata]}
  {"event": "end", "method": M, "how": "completed" | "cancelled"}
Values of the metadata are never written: they carry the client's token.
"""

import os
import sys
import threading
import time
from concurrent import futures

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "common"))
import grpc_stubs  # noqa: E402
from grpc_stubs import report  # noqa: E402


def main():
    cert_path, key_path = sys.argv[1], sys.argv[2]
    _keep = grpc_stubs.importable(os.path.join(HERE, "proto"))
    import grpc
    from jwtgate.test import streams_pb2 as pb
    from jwtgate.test import streams_pb2_grpc as pb_grpc

    class Call:
        """One call's end, reported by grpcio's termination callback: a
        handler cut off by a reset may never run again (grpcio stops
        iterating it), so only the callback is sure to see every end."""

        def __init__(self, method, context):
            names = sorted({key for key, _ in context.invocation_metadata()})
            report(event="start", method=method, headers=names)
            self.method = method
            self.completed = False
            self.ended = threading.Event()
            context.add_callback(self._on_end)

        def _on_end(self):
            how = "completed" if self.completed else "cancelled"
            report(event="end", method=self.method, how=how)
            self.ended.set()

    class Streams(pb_grpc.StreamsServicer):
        def Unary(self, request, context):
            Call("Unary", context).completed = True
            return pb.Note(text=request.text)

        def Ticks(self, request, context):
            call = Call("Ticks", context)
            seq = 0
            while request.count == 0 or seq < request.count:
                if call.ended.wait(request.interval_ms / 1000):
                    return
                seq += 1
                yield pb.Tick(seq=seq)
            call.completed = True

        def Echo(self, request_iterator, context):
            call = Call("Echo", context)
            try:
                for note in request_iterator:
                    yield pb.Note(text=note.text)
            except grpc.RpcError:
                return
            # A reset can end the request stream as its end would; the call
            # has then terminated already, while a completed one terminates
            # only once this returns.
            call.completed = not call.ended.wait(0.2)

    with open(cert_path, "rb") as f:
        cert = f.read()
    with open(key_path, "rb") as f:
        key = f.read()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    pb_grpc.add_StreamsServicer_to_server(Streams(), server)
    credentials = grpc.ssl_server_credentials([(key, cert)])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    report(event="listening", port=port)
    # Runs until the test kills it.
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
