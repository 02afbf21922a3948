"""A worker's stdout or stderr, as the raylet reads it.

Each stream is a pipe the raylet makes itself and reads with a protocol (not
asyncio's subprocess readers), so that a driver about to stop can be told
when everything its workers wrote has been read: the transport hands each
read straight to ``data_received``, which files whole lines and publishes
them at once and counts the bytes; a drain asks the pipe how many bytes it
holds unread (``FIONREAD``) and waits for the count to pass them.
"""

from __future__ import annotations

import asyncio
import fcntl
import struct
import termios
from collections.abc import Callable

from .._private import process, worker_logs
from ..protocol.rt import LogBatch

#: A line longer than this is published in pieces, so that one endless line
#: can not grow a buffer without bound.
_MAX_LINE = 64 * 1024


class WorkerOutput(asyncio.Protocol):
    """One output stream of one worker. Invariants: ``_partial`` holds no
    newline (the start of a line still being written), under ``_MAX_LINE``;
    every byte counted in ``received`` is filed and its whole lines published;
    ``_drains`` holds only targets above ``received`` while the pipe is open."""

    def __init__(
        self,
        *,
        fd: int,
        log_path: str,
        make_batch: Callable[[list[str], str], LogBatch],
        publish: Callable[[LogBatch], None],
    ) -> None:
        self.fd = fd
        self._log = process.open_log(log_path, buffering=0)  # closed with the pipe
        self._make_batch = make_batch
        self._publish = publish
        self._partial = b""
        self.received = 0
        # Waiters for ``received`` to reach a count: (count, future).
        self._drains: list[tuple[int, asyncio.Future[None]]] = []
        # The name of the task printing now ("" for none), from its marker.
        self._task_name = ""
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        buffered = self._partial + data if self._partial else data
        end = buffered.rfind(b"\n") + 1
        if len(buffered) - end >= _MAX_LINE:  # an endless line: published in pieces
            end = len(buffered)
        self._partial = buffered[end:]
        if end:
            self._lines(buffered[:end])
        self.received += len(data)
        if self._drains:
            self._wake(self.received)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._partial:  # the last line, with no newline after it
            self._lines(self._partial)
            self._partial = b""
        self._log.close()
        if not self.closed.done():
            self.closed.set_result(None)
        self._wake(None)

    def _lines(self, chunk: bytes) -> None:
        """Whole lines (a piece, for one too long): kept in the log file, then
        published in runs of one task's lines (markers name it, unshown)."""
        self._log.write(chunk)
        run: list[str] = []
        text = chunk.decode("utf-8", errors="replace")
        # Lines end at "\n" only (``splitlines`` would also cut at the marker's
        # record separator, and at the form feeds users print).
        for line in text.removesuffix("\n").split("\n"):
            line = line.removesuffix("\r")
            marker = worker_logs.parse_marker(line)
            if marker is None:
                run.append(line)
                continue
            if run:
                self._publish(self._make_batch(run, self._task_name))
                run = []
            self._task_name = marker[1]
        if run:
            self._publish(self._make_batch(run, self._task_name))

    async def drained(self) -> None:
        """Returns once everything the pipe holds now has been read, filed and
        its whole lines published (at once if it holds nothing, or is closed).
        What is written after the call is not waited for: an endless printer
        can not hold it up."""
        target = self.received + self.unread()
        if target > self.received:
            waiter = asyncio.get_running_loop().create_future()
            self._drains.append((target, waiter))
            await waiter

    def _wake(self, received: int | None) -> None:
        """Ends the drains whose count ``received`` reached (all of them: None)."""
        still = []
        for target, waiter in self._drains:
            if received is None or target <= received:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still.append((target, waiter))
        self._drains = still

    def unread(self) -> int:
        """Bytes written to the pipe and not read yet (0 once it is closed)."""
        if self.closed.done():
            return 0
        try:
            raw = fcntl.ioctl(self.fd, termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return 0
        return int(struct.unpack("i", raw)[0])

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def read_output(
    read_fd: int,
    log_path: str,
    make_batch: Callable[[list[str], str], LogBatch],
    publish: Callable[[LogBatch], None],
) -> WorkerOutput:
    """Starts reading ``read_fd`` (a pipe's read end, taken over: closed by the
    reader, or here if it can not start) into ``log_path``."""
    pipe = open(read_fd, "rb", buffering=0)  # noqa: ASYNC230, SIM115 (wraps an fd: no I/O)
    try:
        output = WorkerOutput(fd=read_fd, log_path=log_path, make_batch=make_batch, publish=publish)
    except BaseException:
        pipe.close()
        raise
    try:
        await asyncio.get_running_loop().connect_read_pipe(lambda: output, pipe)
    except BaseException:
        pipe.close()
        output.connection_lost(None)  # closes its log file
        raise
    return output
