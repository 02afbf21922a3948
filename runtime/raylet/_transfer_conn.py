"""The connections object transfers ride: plain TCP, or TLS when configured.

Plain TCP reads straight into the destination's shared memory and sends
straight from the source's (``sock_recv_into``, ``sock_sendall``). TLS has to
encrypt and decrypt anyway, so it goes through asyncio's streams and copies
each chunk once.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Protocol

from .._private import tls

#: How much a TLS connection buffers before reading pauses.
_TLS_LIMIT = 8 * 1024 * 1024


class Conn(Protocol):
    async def recv_into(self, view: memoryview) -> int:
        """Reads up to ``len(view)`` bytes into ``view``; 0 at end of stream."""
        ...

    async def sendall(self, data: bytes | memoryview) -> None: ...

    def close(self) -> None: ...


class _Plain:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._loop = asyncio.get_running_loop()

    async def recv_into(self, view: memoryview) -> int:
        return await self._loop.sock_recv_into(self._sock, view)

    async def sendall(self, data: bytes | memoryview) -> None:
        await self._loop.sock_sendall(self._sock, data)

    def close(self) -> None:
        self._sock.close()


class _Tls:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def recv_into(self, view: memoryview) -> int:
        data = await self._reader.read(len(view))
        view[: len(data)] = data
        return len(data)

    async def sendall(self, data: bytes | memoryview) -> None:
        # A copy: the transport may keep what it is given past this call,
        # and a view of the store's mapping is released when we return.
        self._writer.write(bytes(data))
        await self._writer.drain()

    def close(self) -> None:
        self._writer.close()


async def accepted(sock: socket.socket) -> Conn:
    """The server's side of a connection just accepted (the TLS handshake done)."""
    context = tls.server_context()
    if context is None:
        return _Plain(sock)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_TLS_LIMIT)
    protocol = asyncio.StreamReaderProtocol(reader)
    transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock, ssl=context)
    return _Tls(reader, asyncio.StreamWriter(transport, protocol, reader, loop))


async def connect(host: str, port: int) -> Conn:
    """A connection to another node's transfer port."""
    context = tls.client_context()
    if context is not None:
        reader, writer = await asyncio.open_connection(host, port, ssl=context, limit=_TLS_LIMIT)
        return _Tls(reader, writer)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return _Plain(sock)
