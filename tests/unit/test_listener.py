"""The server's listening socket: connections accepted on it send small writes at once (no Nagle delay).

asyncio turns Nagle's algorithm off only on sockets whose protocol is TCP by name; a response written
in two parts (headers, then body) on a connection with Nagle on waits for the client's delayed ACK,
some 40 ms on Linux, on every request of a kept-alive connection.
"""

from __future__ import annotations

import asyncio
import socket

from e2b_local.cli import _bind


def test_accepted_connections_have_nagle_off() -> None:
    async def accepted_nodelay() -> int:
        listener = _bind(0)
        port = listener.getsockname()[1]
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        # As uvicorn serves on sockets it is handed.
        server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            value = await asyncio.wait_for(seen, 10)
            writer.close()
            return value
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(accepted_nodelay()) != 0
