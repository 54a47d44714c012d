#!/usr/bin/env python3
"""Holds N idle HTTP/2 connections to a proxy: one request each, then silence.

Run by scale.py (--scale's memory readings) with the tools virtualenv's
Python, which has the pinned `h2` package (scripts/test installs it):

    .tools/venv/bin/python benches/load/idle_h2_client.py --addr 127.0.0.1:8080 --tls --count 10000 --path /api

Over h2c (prior knowledge) or, with --tls, TLS with ALPN `h2` (the
certificate is not verified: the harness made it a moment ago). Each
connection sends the preface and SETTINGS, one GET, reads the whole
response and acknowledges the server's SETTINGS, then sends nothing more.
It prints one JSON line once every connection is open (or failed), waits
for a line on stdin, counts the connections the proxy closed meanwhile,
closes all, prints a second JSON line and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions

import scale  # the harness's connection opening, so both clients count failures alike

OPEN_TIMEOUT_S = scale.OPEN_TIMEOUT_S


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))

    async def get(self, authority: str, path: str, headers: list[tuple[str, str]]) -> int:
        self.h2.initiate_connection()
        self.h2.send_headers(1, [(":method", "GET"), (":scheme", "https" if self.tls() else "http"),
                                 (":authority", authority), (":path", path), *headers], end_stream=True)
        self.writer.write(self.h2.data_to_send())
        status, done = 0, False
        while not done:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("closed before the response ended")
            for event in self.h2.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[":status"])
                elif isinstance(event, h2.events.DataReceived):
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    done = True
                elif isinstance(event, h2.events.ConnectionTerminated):
                    raise ConnectionError(f"GOAWAY {event.error_code}")
            self.writer.write(self.h2.data_to_send())  # SETTINGS ACK, WINDOW_UPDATEs
        await self.writer.drain()
        return status

    def tls(self) -> bool:
        return self.writer.get_extra_info("ssl_object") is not None


async def open_all(host: str, port: int, tls: bool, path: str, headers, count: int, concurrency: int):
    ctx = None
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
    authority = f"{host}:{port}"

    async def attempt(writers):
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ctx, server_hostname="localhost" if tls else None),
            OPEN_TIMEOUT_S)
        writers.append(writer)
        if tls and writer.get_extra_info("ssl_object").selected_alpn_protocol() != "h2":
            raise ConnectionError("ALPN did not select h2")
        conn = Conn(reader, writer)
        return await asyncio.wait_for(conn.get(authority, path, headers), OPEN_TIMEOUT_S), conn, writer

    return await scale.open_counted(count, attempt, (OSError, asyncio.TimeoutError, ssl.SSLError,
                                                     h2.exceptions.ProtocolError, ValueError), concurrency)


async def main_async(args) -> None:
    host, port = args.addr.rsplit(":", 1)
    headers = [("authorization", args.authorization)] if args.authorization else []
    t0 = time.monotonic()
    conns, failures = await open_all(host, int(port), args.tls, args.path, headers, args.count, args.concurrency)
    print(json.dumps({"ok": len(conns), "failures": dict(failures), "open_s": round(time.monotonic() - t0, 2)}),
          flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    # Unread bytes (a GOAWAY) would keep at_eof() false: the FIN is what counts.
    closed_by_proxy = sum(1 for c in conns if c.reader._eof or c.writer.transport.is_closing())
    for c in conns:
        c.writer.close()
    await asyncio.gather(*(c.writer.wait_closed() for c in conns), return_exceptions=True)
    print(json.dumps({"closed_by_proxy_before_reading": closed_by_proxy}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--addr", required=True, help="host:port")
    p.add_argument("--tls", action="store_true", help="TLS with ALPN h2 (else h2c, prior knowledge)")
    p.add_argument("--path", default="/")
    p.add_argument("--authorization", default=None, help="the Authorization header of each request")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=200, help="connections being opened at once")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
