#!/usr/bin/env python3
"""An HTTP/2 client (the `h2` library, not jwtgate's) over h2c, for what a
connection does as a whole. Prints one JSON line per event.

  connection.py drain ADDR PATH
      Sends GET PATH and prints {"status": N}; then waits, sending
      nothing, for the server to end the connection and prints
      {"goaway": ERROR_CODE, "last_stream_id": N} or {"closed": true}.

  connection.py requests ADDR PATH COUNT
      Sends GET PATH COUNT times one after the other on one connection and
      prints {"status": N, "headers": {...}, "never_indexed": [...]} for
      each: the response's headers, and the names of those HPACK sent as
      never to be indexed.

  connection.py malformed ADDR PATH COUNT
      Sends GET PATH, then COUNT requests one at a time whose :authority
      carries userinfo (a malformed request the server must refuse), and
      prints {"status": N} or {"reset": ERROR_CODE} for each answered one,
      and {"closed": true} or {"goaway": ...} when the server ends the
      connection.
"""
import json
import socket
import sys

import h2.config
import h2.connection
import h2.events
import hpack
import hyperframe.frame


def report(**event):
    print(json.dumps(event), flush=True)


def connect(addr):
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=60)
    config = h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
    )
    conn = h2.connection.H2Connection(config)
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def wait_for(sock, conn, stream_id):
    """Reads until stream_id is answered (True) or the connection ends (False)."""
    while True:
        data = sock.recv(65536)
        if not data:
            report(closed=True)
            return False
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
                headers = {name.decode(): value.decode() for name, value in event.headers}
                never_indexed = [
                    name.decode()
                    for name, _ in (h for h in event.headers if isinstance(h, hpack.NeverIndexedHeaderTuple))
                ]
                report(status=int(headers[":status"]), headers=headers, never_indexed=never_indexed)
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
                sock.sendall(conn.data_to_send())
                return True
            elif isinstance(event, h2.events.StreamReset) and event.stream_id == stream_id:
                report(reset=int(event.error_code))
                return True
            elif isinstance(event, h2.events.ConnectionTerminated):
                report(goaway=int(event.error_code), last_stream_id=event.last_stream_id)
                return False
        sock.sendall(conn.data_to_send())


def wait_for_goaway(sock):
    """Reads frames, answering none, until a GOAWAY or the close. Frames
    are parsed here rather than by `h2`, which refuses the PING that
    follows a graceful GOAWAY once it has seen the GOAWAY."""
    buffered = b""
    while True:
        data = sock.recv(65536)
        if not data:
            report(closed=True)
            return
        buffered += data
        while len(buffered) >= 9:
            frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(buffered[:9]))
            if len(buffered) < 9 + length:
                break
            frame.parse_body(memoryview(buffered[9 : 9 + length]))
            buffered = buffered[9 + length :]
            if isinstance(frame, hyperframe.frame.GoAwayFrame):
                report(goaway=frame.error_code, last_stream_id=frame.last_stream_id)
                return


def request(sock, conn, stream_id, path, authority):
    headers = [(":method", "GET"), (":scheme", "http"), (":authority", authority), (":path", path)]
    conn.send_headers(stream_id, headers, end_stream=True)
    sock.sendall(conn.data_to_send())
    return wait_for(sock, conn, stream_id)


def main():
    mode, addr, path = sys.argv[1:4]
    sock, conn = connect(addr)
    if not request(sock, conn, 1, path, addr):
        sys.exit("the connection ended before the first answer")
    if mode == "drain":
        wait_for_goaway(sock)
    elif mode == "requests":
        for n in range(1, int(sys.argv[4])):
            if not request(sock, conn, 1 + 2 * n, path, addr):
                sys.exit("the connection ended before every answer")
    elif mode == "malformed":
        for n in range(int(sys.argv[4])):
            if not request(sock, conn, 3 + 2 * n, path, "user@" + addr):
                break
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
