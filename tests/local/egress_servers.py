"""Servers the egress tests run on a namespaced test host: an HTTP server that records each request's
headers in a file (never in its answer), and beside it a SOCKS5 server that records each CONNECT.

Run as `python egress_servers.py ADDRESS HTTP_PORT SOCKS_PORT LOG_DIRECTORY`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread


def http_server(address: str, port: int, log: Path) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with log.open("a") as f:
                f.write(json.dumps({k.lower(): v for k, v in self.headers.items()}) + "\n")
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    return ThreadingHTTPServer((address, port), Handler)


async def socks_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: Path) -> None:
    # RFC 1928, no authentication, CONNECT to an IPv4 address only: what the tests need.
    try:
        _, count = await reader.readexactly(2)
        await reader.readexactly(count)
        writer.write(b"\x05\x00")
        _, command, _, kind = await reader.readexactly(4)
        if command != 1 or kind != 1:
            return
        host = socket.inet_ntoa(await reader.readexactly(4))
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        with log.open("a") as f:
            f.write(f"{host}:{port}\n")
        up_reader, up_writer = await asyncio.open_connection(host, port)
        writer.write(b"\x05\x00\x00\x01" + socket.inet_aton("0.0.0.0") + b"\x00\x00")

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main() -> None:
    address, http_port, socks_port, logs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    server = http_server(address, http_port, logs / "requests.jsonl")
    Thread(target=server.serve_forever, daemon=True).start()
    socks = await asyncio.start_server(lambda r, w: socks_session(r, w, logs / "socks.log"), address, socks_port)
    await socks.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
