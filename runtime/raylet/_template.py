"""The raylet's side of the worker template (see ``_private.worker_template``):
starting it, asking it for workers, and following the workers it forked.

A forked worker is the template's child, not the raylet's: the raylet holds a
pidfd of it (to kill it, safe from pid reuse) and learns of its end from the
template's report, or, should the template itself be gone, from the pidfd
(its exit code then unknown). When the template is down or refuses, the pool
starts workers as before (a new interpreter); nothing waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections import deque
from collections.abc import Mapping

from .._private import framing
from .._private import worker_template as wire

logger = logging.getLogger(__name__)

#: How long a closing raylet waits for the template to exit before killing it.
CLOSE_WAIT_S = 2.0


class TemplateUnavailable(Exception):
    """The template is down (never up, ended, or closing) or refused a fork."""


class ForkedWorker:
    """A worker forked by the template: the little of a process the pool uses.

    Invariant: ``_pidfd`` is open exactly until the worker's end is known."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self._pidfd = pidfd
        self.returncode: int | None = None
        self._ended: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._watching = False

    @property
    def ended(self) -> bool:
        return self._ended.done()

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
        self.returncode = code
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
    ``_up``, every live forked worker is in ``_children``."""

    def __init__(
        self, env: Mapping[str, str], session_dir: str, timeout: float, fd: int | None = None
    ) -> None:
        """``timeout``: how long a fork may take before the template is taken
        for hung (it answers in milliseconds once it has imported). ``fd``:
        the raylet's end of the socket pair of a template started beside it
        (None: the raylet starts one)."""
        self._env = dict(env)
        self._timeout = timeout
        self._session_dir = session_dir
        self._given_fd = fd
        self._proc: asyncio.subprocess.Process | None = None  # one it started
        self._pidfd: int | None = None  # the template's, from its hello
        self._sock: socket.socket | None = None
        self._up = False
        self._pending: deque[asyncio.Future[ForkedWorker]] = deque()
        self._children: dict[int, ForkedWorker] = {}
        self._decoder = framing.FrameDecoder()
        self._fds: list[int] = []  # received pidfds not yet taken by a message
        self._send_lock = asyncio.Lock()
        self._writable: asyncio.Future[None] | None = None  # a send waiting for room
        self.forked = 0  # workers forked (a figure for tests and metrics)

    @property
    def up(self) -> bool:
        return self._up

    async def start(self) -> None:
        """Takes the template started beside the raylet, or starts one; it
        takes requests once it has imported (they wait in the socket meanwhile)."""
        if self._given_fd is not None:
            ours = socket.socket(fileno=self._given_fd)
        else:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    *wire.command(theirs.fileno(), self._session_dir),
                    stdin=asyncio.subprocess.DEVNULL,
                    pass_fds=[theirs.fileno()],
                    env=self._env,
                )
            except OSError:
                logger.exception("could not start the worker template; workers start on their own")
                ours.close()
                return
            finally:
                theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._up = True
        asyncio.get_running_loop().add_reader(ours.fileno(), self._on_readable)

    async def fork(
        self,
        argv: list[str],
        fds: tuple[int, int, int],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        paths: tuple[str, ...] = (),
    ) -> ForkedWorker:
        """A worker with ``argv``, its stdout, stderr and tie ``fds`` (the
        caller keeps its copies) and, for a runtime environment's, its whole
        ``env``, folder and ``paths``. Raises TemplateUnavailable."""
        request: dict[str, object] = {"argv": argv}
        if env is not None:
            request["env"] = dict(env)
        if cwd is not None:
            request["cwd"] = cwd
        if paths:
            request["paths"] = list(paths)
        if not self._up or self._sock is None:
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

    async def close(self) -> None:
        """It ends at the socket's end; one the raylet started is waited for."""
        self._lost("the raylet is closing")
        if self._proc is not None:
            try:
                await asyncio.wait_for(self._proc.wait(), CLOSE_WAIT_S)
            except TimeoutError:
                self._kill()
                await self._proc.wait()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def _kill(self) -> None:
        with contextlib.suppress(OSError):
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            elif self._proc is not None and self._proc.returncode is None:
                self._proc.kill()

    async def _send(self, data: bytes, fds: list[int]) -> None:
        sock = self._sock
        assert sock is not None
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
        assert self._sock is not None
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
        except (ValueError, KeyError, TypeError) as e:
            self._lost(f"it broke the protocol: {e}")

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
            self.forked += 1
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
        if self._sock is not None:
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
