"""RPC plumbing shared by every component: channels and servers.

Channels are created lazily on the loop that uses them and cached per
address; a process has one channel per peer, and every call to that peer
multiplexes over its one HTTP/2 connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from grpclib.client import Channel
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.protocol import Connection, H2Protocol
from grpclib.server import Server

from . import auth, tls

__all__ = [
    "CONNECTION_ERRORS",
    "ChannelPool",
    "GRPCError",
    "bind_socket",
    "start_server_on",
    "stop_server",
]

#: What a failed call to a peer that is gone looks like.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    OSError,
    GRPCError,
    StreamTerminatedError,
    EOFError,
)


class _ClosedSafeConnection(Connection):
    """grpclib's connection, made safe to use once closed.

    Closing a connection deletes its transport, and two paths still reached for
    it with ``AttributeError``: a stream reading a reply that had arrived
    acknowledges the bytes it reads (the flush), and a call that found the
    connection up just before the peer reset it opens a stream on it (the
    handshake raced the peer's death). A closed connection has nowhere to
    write, so its flush drops the bytes, and a stream is refused with a
    connection error, which callers already treat as a peer that is gone.
    """

    def flush(self) -> None:
        if not self.is_closing():
            super().flush()

    def create_stream(self, *, stream_id: int | None = None, wrapper: Any = None) -> Any:
        if self.is_closing():
            raise ConnectionResetError("the connection to the peer closed as the call began")
        return super().create_stream(stream_id=stream_id, wrapper=wrapper)


class _Protocol(H2Protocol):
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        # Same state, safer flush: the subclass adds no fields.
        self.connection.__class__ = _ClosedSafeConnection


class _Channel(Channel):
    def _protocol_factory(self) -> H2Protocol:
        base = super()._protocol_factory()
        return _Protocol(base.handler, base.config, base.h2_config)


class _Server(Server):
    def _protocol_factory(self) -> H2Protocol:
        base = super()._protocol_factory()
        return _Protocol(base.handler, base.config, base.h2_config)


class ChannelPool:
    """One grpclib channel per peer address; all used from one loop. Every call
    carries the cluster's token (``token``, else the process's)."""

    def __init__(self, token: str | None = None) -> None:
        self._channels: dict[tuple[str, int], Channel] = {}
        self._token = token

    def get(self, host: str, port: int) -> Channel:
        key = (host, port)
        channel = self._channels.get(key)
        if channel is None:
            channel = _Channel(host, port, ssl=tls.client_context())
            auth.sign_channel(channel, auth.token() if self._token is None else self._token)
            self._channels[key] = channel
        return channel

    def drop(self, host: str, port: int) -> None:
        channel = self._channels.pop((host, port), None)
        if channel is not None:
            channel.close()

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()


async def stop_server(server: Server) -> None:
    server.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.wait_closed(), 2.0)


def bind_socket(host: str, port: int = 0) -> Any:
    """A listening TCP socket, bound now so its port is known before serving."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def start_server_on(handlers: Sequence[Any], sock: Any) -> Server:
    """Serves ``handlers`` on ``sock``, refusing calls without the cluster's token."""
    server = _Server(list(handlers))
    auth.protect_server(server)
    await server.start(sock=sock, ssl=tls.server_context())
    return server
