"""The node's log files, served to ``runtime logs``, the state API and the
dashboard; and a stopping driver's flush of its workers' output.

A mixin of :class:`~._server.Raylet`. It serves only the files it knows:
the logs of the workers its pool started and its components' own logs (the
raylet's, and the gcs's on the head node); a name is looked up, never
joined to a path, so no request reaches another file.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections import deque
from collections.abc import AsyncIterator, Iterator

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from .._private import worker_logs
from ..protocol.rt import (
    Empty,
    FlushLogsRequest,
    GetLogRequest,
    ListLogsReply,
    LogChunk,
    LogFile,
)
from ._reports import GcsReports
from ._worker_pool import WorkerPool

#: Lines per streamed chunk, and how often a followed file is looked at.
CHUNK_LINES = 1000
FOLLOW_POLL_S = 0.2
FOLLOW_READ = 1 << 20
MAX_TAIL = 1_000_000


def own_log_names() -> list[str]:
    """The names of this process's own log files (where its stdout and stderr go)."""
    names = []
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            names.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
    return names


class LogHandlers:
    _pool: WorkerPool | None
    reports: GcsReports
    session_dir: str
    is_head: bool
    # The raylet's own log and, on the head, the gcs's (set by the raylet).
    component_logs: list[str]

    def _log_dir(self) -> str:
        return os.path.join(self.session_dir, "logs")

    def _served(self) -> dict[str, tuple[bytes, int, int]]:
        files = {name: (b"", 0, 0) for name in self.component_logs}
        if self._pool is not None:
            files.update(self._pool.log_files)
        return files

    async def flush_logs(self, message: FlushLogsRequest) -> Empty:
        """A driver about to stop: what its workers here printed so far is read
        and published before the reply (it then closes its flush via the gcs)."""
        if message.job_id <= 0:
            raise GRPCError(Status.INVALID_ARGUMENT, "flush_logs needs a job id")
        if self._pool is not None:
            await self._pool.drain_output(message.job_id)
        await self.reports.flush_logs()
        return Empty()

    async def list_logs(self, message: Empty) -> ListLogsReply:
        out = []
        for name, (worker_id, pid, job_id) in sorted(self._served().items()):
            try:
                st = os.stat(os.path.join(self._log_dir(), name))
            except OSError:
                continue  # not written yet, or removed with its session
            out.append(
                LogFile(
                    name=name,
                    size=st.st_size,
                    mtime=st.st_mtime,
                    worker_id=worker_id,
                    pid=pid,
                    job_id=job_id,
                )
            )
        return ListLogsReply(files=out)

    async def get_log(self, message: GetLogRequest) -> AsyncIterator[LogChunk]:
        if message.name not in self._served():
            raise GRPCError(Status.NOT_FOUND, f"this node has no log file {message.name!r}")
        if not 0 <= message.tail <= MAX_TAIL:
            raise GRPCError(Status.INVALID_ARGUMENT, f"tail must be 0..{MAX_TAIL}")
        path = os.path.join(self._log_dir(), message.name)
        try:
            f = open(path, "rb")  # noqa: ASYNC230, SIM115 -- read in slices, off the loop
        except OSError as e:
            raise GRPCError(Status.NOT_FOUND, f"cannot read {message.name}: {e}") from None
        with f:
            shown = worker_logs.LineFilter(message.task_id)
            lines = (line for line in _read_lines(f) if shown.shown(line))
            if message.tail:
                last = await asyncio.to_thread(lambda: list(deque(lines, maxlen=message.tail)))
                for i in range(0, len(last), CHUNK_LINES):
                    yield LogChunk(lines=last[i : i + CHUNK_LINES])
            else:
                while chunk := await asyncio.to_thread(_take, lines, CHUNK_LINES):
                    yield LogChunk(lines=chunk)
            if not message.follow:
                return
            partial = b""
            while True:
                data = f.read(FOLLOW_READ)
                if not data:
                    await asyncio.sleep(FOLLOW_POLL_S)
                    continue
                raw = (partial + data).split(b"\n")
                partial = raw.pop()  # an unfinished last line waits for its end
                text = (r.decode("utf-8", errors="replace") for r in raw)
                new = [line for line in text if shown.shown(line)]
                if new:
                    yield LogChunk(lines=new)


def _read_lines(f: object) -> Iterator[str]:
    for raw in f:  # type: ignore[attr-defined]
        yield raw.decode("utf-8", errors="replace").rstrip("\n")


def _take(lines: Iterator[str], n: int) -> list[str]:
    return list(itertools.islice(lines, n))
