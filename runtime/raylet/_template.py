"""The raylet's side of the worker template (see ``_private.worker_template``):
asking it for workers, and following the workers it forked. Whoever starts the
raylet starts its template beside it and hands the raylet its end of their
socket pair; a raylet with none starts every worker as a new interpreter.

A worker the template forked (going on as the template, or running a new
interpreter for a runtime environment only a start takes in) is the
template's child, not the raylet's: the raylet holds a
pidfd of it (to kill it, safe from pid reuse) and learns of its end from the
template's report, or, should the template itself be gone, from the pidfd
(its exit code then unknown). When the template is down or refuses, the pool
starts workers itself (a new interpreter); nothing waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import signal
import socket
from collections import deque
from collections.abc import Mapping

from .._private import framing
from .._private import worker_template as wire

logger = logging.getLogger(__name__)


class TemplateUnavailable(Exception):
    """The template is down (never up, ended, or closing) or refused a fork."""


class ForkedWorker:
    """A worker forked by the template: the little of a process the pool uses.

    Invariant: ``_pidfd`` is open exactly until the worker's end is known."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self._pidfd = pidfd
        self._ended: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._watching = False

    def running(self) -> bool:
        """Whether its process has not ended (its pidfd turns readable then)."""
        if self._ended.done():
            return False
        readable, _, _ = select.select([self._pidfd], [], [], 0)
        return not readable

    def kill(self) -> None:
        if not self._ended.done():
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    async def wait(self) -> int | None:
        """Its exit code (None if the template was gone and could not tell)."""
        return await asyncio.shield(self._ended)

    def end(self, code: int | None) -> None:
        if self._ended.done():
            return
        self._ended.set_result(code)
        if self._watching:
            asyncio.get_running_loop().remove_reader(self._pidfd)
        with contextlib.suppress(OSError):
            os.close(self._pidfd)

    def watch_pidfd(self) -> None:
        """The template is gone: the pidfd turns readable when the worker ends."""
        if self._ended.done() or self._watching:
            return
        self._watching = True
        asyncio.get_running_loop().add_reader(self._pidfd, self.end, None)


class WorkerTemplate:
    """Invariant: ``_pending`` holds one future per request sent and not yet
    answered, in the order sent (the template answers in that order); while
    ``_up``, every live forked worker is in ``_children``. Made on the loop."""

    def __init__(self, fd: int, timeout: float) -> None:
        """``fd``: the raylet's end of the socket pair; ``timeout``: how long a
        fork may take before the template is taken for hung (it answers in
        milliseconds once it has imported)."""
        self._timeout = timeout
        self._pidfd: int | None = None  # the template's, from its hello
        self._pending: deque[asyncio.Future[ForkedWorker]] = deque()
        self._children: dict[int, ForkedWorker] = {}
        self._decoder = framing.FrameDecoder()
        self._fds: list[int] = []  # received pidfds not yet taken by a message
        self._send_lock = asyncio.Lock()
        self._writable: asyncio.Future[None] | None = None  # a send waiting for room
        self._sock = socket.socket(fileno=fd)
        self._sock.setblocking(False)
        self._up = True
        asyncio.get_running_loop().add_reader(fd, self._on_readable)

    @property
    def up(self) -> bool:
        return self._up

    async def fork(
        self,
        argv: list[str],
        fds: tuple[int, int, int],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        paths: tuple[str, ...] = (),
        new_interpreter: bool = False,
    ) -> ForkedWorker:
        """A worker with ``argv``, its stdout, stderr and tie ``fds`` (the
        caller keeps its copies) and, for a runtime environment's, its whole
        ``env``, folder and ``paths``; ``new_interpreter``: the child runs a
        new interpreter (from ``env``) rather than going on as the template.
        Raises TemplateUnavailable."""
        request: dict[str, object] = {"argv": argv}
        if new_interpreter:
            request["exec"] = True
        if env is not None:
            request["env"] = dict(env)
        if cwd is not None:
            request["cwd"] = cwd
        if paths:
            request["paths"] = list(paths)
        if not self._up:
            raise TemplateUnavailable("the worker template is down")
        reply: asyncio.Future[ForkedWorker] = asyncio.get_running_loop().create_future()
        async with self._send_lock:
            if not self._up:
                raise TemplateUnavailable("the worker template is down")
            self._pending.append(reply)
            try:
                await self._send(wire.encode(request), list(fds))
            except OSError as e:
                self._lost(f"writing to it failed: {e}")
        try:
            return await asyncio.wait_for(reply, self._timeout)
        except TimeoutError:
            self._lost(f"it did not answer in {self._timeout:g} s")
            self._kill()
            raise TemplateUnavailable("the worker template did not answer") from None

    def close(self) -> None:
        """The template ends at the socket's end (its starter reaps it)."""
        self._lost("the raylet is closing")
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def _kill(self) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    async def _send(self, data: bytes, fds: list[int]) -> None:
        sock = self._sock
        loop = asyncio.get_running_loop()
        fd = sock.fileno()
        while True:
            try:
                sent = socket.send_fds(sock, [data], fds)
                break
            except BlockingIOError:
                self._writable = writable = loop.create_future()
                loop.add_writer(fd, _resolve, writable)
                try:
                    await writable  # or the template is lost meanwhile (OSError)
                finally:
                    self._writable = None
                    if self._up:
                        loop.remove_writer(fd)
        if sent < len(data):
            await loop.sock_sendall(sock, data[sent:])

    def _on_readable(self) -> None:
        try:
            data, fds, _flags, _addr = socket.recv_fds(self._sock, 1 << 16, 16)
        except BlockingIOError:
            return
        except OSError as e:
            self._lost(f"reading from it failed: {e}")
            return
        self._fds += fds
        if not data:
            self._lost("it ended")
            return
        try:
            for payload in self._decoder.feed(data):
                self._on_message(wire.decode(payload))
        except (ValueError, KeyError, TypeError, IndexError) as e:  # IndexError: an unasked reply
            self._lost(f"it broke the protocol: {e!r}")

    def _on_message(self, message: dict[str, object]) -> None:
        if "template" in message:  # its hello
            if not self._fds or self._pidfd is not None:
                raise ValueError("a hello without its pidfd, or a second one")
            self._pidfd = self._fds.pop(0)
            return
        if "exited" in message:
            child = self._children.pop(int(message["exited"]), None)  # type: ignore[call-overload]
            if child is not None:
                code = message.get("code")
                child.end(code if isinstance(code, int) else None)
            return
        reply = self._pending.popleft()
        if "pid" in message:
            if not self._fds:
                raise ValueError("a pid came without its pidfd")
            pid = int(message["pid"])  # type: ignore[call-overload]
            child = ForkedWorker(pid, self._fds.pop(0))
            self._children[pid] = child
            if reply.done():  # its starter gave up (the raylet is closing)
                child.kill()
            else:
                reply.set_result(child)
        elif not reply.done():
            reply.set_exception(TemplateUnavailable(str(message.get("error", "refused"))))

    def _lost(self, why: str) -> None:
        """The template is no use from now on: requests fail (their workers
        start on their own) and live children are followed by their pidfds."""
        if not self._up:
            return
        self._up = False
        if why != "the raylet is closing":
            logger.warning("the worker template is gone (%s); workers start on their own", why)
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._sock.fileno())
        if self._writable is not None:
            loop.remove_writer(self._sock.fileno())
            if not self._writable.done():
                self._writable.set_exception(ConnectionResetError(why))
        self._sock.close()
        while self._pending:
            reply = self._pending.popleft()
            if not reply.done():
                reply.set_exception(TemplateUnavailable(f"the worker template is gone ({why})"))
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        for child in self._children.values():
            child.watch_pidfd()
        self._children.clear()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
