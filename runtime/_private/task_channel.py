"""The task channel: a thin framed stream for task pushes, actor calls and replies.

Task traffic needs none of HTTP/2's features (one peer, one stream, no
headers), and framing it through grpclib and h2 cost a third of a caller's
loop time. So an owner and a worker speak this instead, over one TCP
connection (TLS when the cluster has it), with plain asyncio protocols: no
coroutine, no future per message.

Frame layout (both directions)::

    +----------------+--------+-------------------+
    | length: u32 BE | kind:u8| payload (length)  |
    +----------------+--------+-------------------+

Kinds:

- ``HELLO`` (client to server, exactly once, first): ``MAGIC`` then the
  cluster's token (ASCII; empty when authentication is disabled).
- ``BATCH``: a pickled list of items (``task_wire``'s tasks and controls from
  owner to worker; replies and generator items back).
- ``REFUSED`` (server to client, then the server closes): why, in UTF-8.

Invariants: the server reads nothing but a ``HELLO`` of at most
``MAX_HELLO`` bytes until the token checks out (in constant time), and
closes a connection that has not said it within ``HELLO_TIMEOUT_S``; a frame
longer than ``MAX_FRAME``, or of an unknown kind, ends the connection.
Items sent during one loop iteration leave as one batch, or as batches of
``FLUSH_AT`` while more are queued; while the peer reads slower than we
write (the transport paused us) they wait and join the next batch.
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

from . import auth

HEADER = struct.Struct(">IB")
HELLO, BATCH, REFUSED = 1, 2, 3
MAGIC = b"rt-tasks/1 "
MAX_HELLO = 4096
MAX_FRAME = 1 << 31
HELLO_TIMEOUT_S = 10.0
#: A batch leaves once this many items are queued, not only at the end of the
#: loop's iteration: a burst of 1,000 calls (or replies) reaches the peer in
#: pieces it works on while the rest are made, instead of all at the end.
FLUSH_AT = 64

#: Called with each batch of items that arrives.
OnItems = Callable[[list[Any]], None]
#: Called once when the connection ends: None for a clean close, else why.
OnLost = Callable[[BaseException | None], None]


class ChannelError(ConnectionError):
    """The peer broke the channel's rules, or refused us."""


def encode(kind: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload), kind) + payload


class Decoder:
    """Bytes in, whole frames out: a pure state machine."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes, first_only: bool = False) -> list[tuple[int, bytes]]:
        """The whole frames now buffered; only the first with ``first_only``
        (the rest stay buffered: a later call with no data reads them)."""
        if self._buffer:
            self._buffer += data
            view: bytes | bytearray = self._buffer
        else:
            view = data  # the common case: a read holds whole frames
        frames = []
        start, end = 0, len(view)
        while end - start >= HEADER.size:
            length, kind = HEADER.unpack_from(view, start)
            if length > self.max_frame:
                raise ChannelError(f"a frame of {length} bytes exceeds {self.max_frame}")
            if kind not in (HELLO, BATCH, REFUSED):
                raise ChannelError(f"unknown frame kind {kind}")
            stop = start + HEADER.size + length
            if stop > end:
                break
            frames.append((kind, bytes(view[start + HEADER.size : stop])))
            start = stop
            if first_only:
                break
        if view is self._buffer:
            del self._buffer[:start]
        elif start < end:
            self._buffer += view[start:]
        return frames


class Channel(asyncio.Protocol):
    """One end of a task channel: frames in, batches of items out.

    ``hello`` (the client) is sent first; ``expected_token`` (the server)
    is what the peer's hello must carry before anything else is read.
    """

    def __init__(
        self,
        on_items: OnItems,
        on_lost: OnLost,
        *,
        hello: str | None = None,
        expected_token: Callable[[], str] | None = None,
    ) -> None:
        self._on_items = on_items
        self._on_lost = on_lost
        self._hello = hello
        self._expected = expected_token
        self._authenticated = expected_token is None
        self._decoder = Decoder(MAX_HELLO if expected_token is not None else MAX_FRAME)
        self._transport: asyncio.Transport | None = None
        self._outbox: list[Any] = []
        self._flush_scheduled = False
        self._paused = False
        self._closed = False
        self._lost_told = False
        self._hello_timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    # -- sending ------------------------------------------------------------------------
    def send(self, item: Any) -> None:
        """Queues an item; it leaves with the others queued in this loop
        iteration, or at once with them when they make ``FLUSH_AT``."""
        outbox = self._outbox
        outbox.append(item)
        if len(outbox) >= FLUSH_AT:
            self._flush()
        else:
            self._schedule_flush()

    def send_all(self, items: list[Any]) -> None:
        self._outbox.extend(items)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and not self._paused:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._closed or self._paused or self._transport is None or not self._outbox:
            return
        batch, self._outbox = self._outbox, []
        self._transport.write(encode(BATCH, pickle.dumps(batch, protocol=5)))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._transport is not None:
                self._transport.close()

    def abort(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.abort()

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but are ones.
        channel: asyncio.Transport = transport  # type: ignore[assignment]
        self._transport = channel
        if self._hello is not None:
            channel.write(encode(HELLO, MAGIC + self._hello.encode("ascii")))
        if not self._authenticated:
            self._hello_timer = self._loop.call_later(
                HELLO_TIMEOUT_S, self._refuse, "no hello in time"
            )
        if self._outbox:
            self._schedule_flush()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            # Until the hello is checked, only it is read (with its small limit).
            frames = self._decoder.feed(data, first_only=not self._authenticated)
            if frames and frames[0][0] == HELLO and not self._authenticated:
                self._check_hello(frames[0][1])
                if not self._authenticated:
                    return
                frames = self._decoder.feed(b"")
        except ChannelError as e:
            self._refuse(str(e))
            return
        for kind, payload in frames:
            if self._closed:
                return
            if kind == BATCH and self._authenticated:
                try:
                    items = pickle.loads(payload)
                except Exception as e:
                    self._refuse(f"a batch that does not unpickle: {e!r}")
                    return
                if type(items) is not list:
                    self._refuse("a batch must be a list")
                    return
                self._on_items(items)
            elif kind == HELLO and not self._authenticated:
                self._check_hello(payload)
            elif kind == REFUSED and self._expected is None:
                reason = payload.decode("utf-8", "replace")
                self._lose(ChannelError(f"the worker refused the task channel: {reason}"))
                self.abort()
            else:
                self._refuse("unexpected frame")

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._outbox:
            self._schedule_flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        self._lose(exc)

    # -- internals -----------------------------------------------------------------------
    def _check_hello(self, payload: bytes) -> None:
        assert self._expected is not None
        wanted = self._expected()
        given = payload[len(MAGIC) :] if payload.startswith(MAGIC) else None
        if given is None:
            self._refuse("not a task channel client")
            return
        if not auth.token_matches(given, wanted):
            self._refuse(f"unauthenticated: {auth.HOW_TO}")
            return
        self._authenticated = True
        self._decoder.max_frame = MAX_FRAME
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None

    def _refuse(self, reason: str) -> None:
        if self._transport is not None and not self._closed:
            if self._expected is not None:
                self._transport.write(encode(REFUSED, reason.encode("utf-8")))
            self._lose(ChannelError(reason))
            self.close()

    def _lose(self, error: BaseException | None) -> None:
        if not self._lost_told:
            self._lost_told = True
            self._on_lost(error)


def local_name(worker_id: bytes) -> str:
    """The abstract Unix socket a worker also serves its task channel on: an
    owner on the same node connects there (cheaper than loopback TCP). Abstract
    (Linux): no file, gone with the process; the hello's token still guards it."""
    return f"\0runtime-tasks-{worker_id.hex()}"


async def connect(
    host: str,
    port: int,
    on_items: OnItems,
    on_lost: OnLost,
    token: str,
    ssl: Any = None,
    local: str | None = None,
) -> Channel:
    """A client's channel to a worker's task port (the hello already queued):
    through ``local`` (its abstract Unix socket) when given and it answers,
    else TCP."""
    loop = asyncio.get_running_loop()

    def factory() -> Channel:
        return Channel(on_items, on_lost, hello=token)

    if local is not None and ssl is None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, local)
        except OSError:
            sock.close()  # not served there (another machine, an old worker): TCP
        else:
            _, channel = await loop.create_unix_connection(factory, sock=sock)
            return channel
    _, channel = await loop.create_connection(factory, host, port, ssl=ssl)
    return channel


Accept = Callable[[], tuple[OnItems, OnLost, Callable[[Channel], None]]]


async def serve(
    sock: Any, accept: Accept, ssl: Any, local: str | None = None
) -> list[asyncio.AbstractServer]:
    """Serves the task channel on a bound listening socket (and on the abstract
    Unix socket ``local``, without TLS, if given and the system has them).

    ``accept`` is called per connection and returns its item and loss
    callbacks and a function given the channel (to send replies on).
    """
    loop = asyncio.get_running_loop()

    def factory() -> Channel:
        on_items, on_lost, bind = accept()
        channel = Channel(on_items, on_lost, expected_token=auth.token)
        bind(channel)
        return channel

    servers: list[asyncio.AbstractServer] = [await loop.create_server(factory, sock=sock, ssl=ssl)]
    if local is not None and ssl is None and sys.platform == "linux":
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            unix.bind(local)
            unix.listen(128)
            unix.setblocking(False)
        except OSError:
            unix.close()  # TCP serves alone
        else:
            servers.append(await loop.create_unix_server(factory, sock=unix))
    return servers
