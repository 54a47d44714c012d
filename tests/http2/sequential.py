#!/usr/bin/env python3
"""An HTTP/2 client (the `h2` library, not jwtgate's) that sends requests
one after the other on a single connection, idling GAP seconds before each
but the first, and writes each response body to OUT_DIR/response-N.

Each request is "GET PATH" or "POST PATH FILE" (the body is FILE's bytes).
Prints one JSON line per request: {"status": 200, "length": N}. Exits
non-zero if the connection ends or resets a stream before the last answer.

usage: sequential.py [--tls CA_FILE SERVER_NAME] ADDR GAP OUT_DIR REQUEST...
"""
import json
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events


def connect(addr, tls):
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    if tls is None:
        return sock, "http", addr
    ca_file, server_name = tls
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.set_alpn_protocols(["h2"])
    sock = ctx.wrap_socket(sock, server_hostname=server_name)
    if sock.selected_alpn_protocol() != "h2":
        sys.exit("ALPN did not select h2")
    return sock, "https", f"{server_name}:{port}"


def exchange(sock, conn, stream_id, headers, body):
    """Sends one request and reads its whole response: (status, body)."""
    conn.send_headers(stream_id, headers, end_stream=not body)
    sock.sendall(conn.data_to_send())
    pending = memoryview(body)
    status, received, ended = None, bytearray(), False
    while not ended:
        # Send what the windows allow; the rest after WINDOW_UPDATEs.
        while pending:
            window = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
            if window <= 0:
                break
            chunk, pending = pending[:window], pending[window:]
            conn.send_data(stream_id, bytes(chunk), end_stream=not pending)
        sock.sendall(conn.data_to_send())
        data = sock.recv(65536)
        if not data:
            sys.exit(f"the connection closed during stream {stream_id}")
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                received += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                ended = True
            elif isinstance(event, h2.events.StreamReset):
                sys.exit(f"stream {stream_id} reset: {event.error_code}")
            elif isinstance(event, h2.events.ConnectionTerminated):
                sys.exit(f"GOAWAY during stream {stream_id}: {event.error_code}")
        sock.sendall(conn.data_to_send())
    return status, bytes(received)


def main():
    args = sys.argv[1:]
    tls = None
    if args[0] == "--tls":
        tls, args = (args[1], args[2]), args[3:]
    addr, gap, out_dir, requests = args[0], float(args[1]), args[2], args[3:]
    sock, scheme, authority = connect(addr, tls)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    for n, request in enumerate(requests):
        if n:
            time.sleep(gap)
        method, path, *body_file = request.split(" ")
        body = open(body_file[0], "rb").read() if body_file else b""
        headers = [(":method", method), (":scheme", scheme), (":authority", authority), (":path", path)]
        if body:
            headers.append(("content-length", str(len(body))))
        status, received = exchange(sock, conn, 2 * n + 1, headers, body)
        with open(f"{out_dir}/response-{n}", "wb") as out:
            out.write(received)
        print(json.dumps({"status": status, "length": len(received)}), flush=True)
    sock.close()


if __name__ == "__main__":
    main()
