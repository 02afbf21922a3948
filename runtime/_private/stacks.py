"""``runtime stack``: what every driver and worker of a cluster is doing now.

Each process answers ``GetStacks`` on its loop (:func:`this_process`): the
stack of each of its threads, from ``sys._current_frames()`` (a task stuck in
a blocking call shows where it waits; a busy one, where it is), and the stack
of each coroutine of user code suspended on the runtime's loop (async tasks
and async actors' methods: where each one awaits). :func:`collect` asks the
gcs for the nodes, each raylet for its drivers and workers, and each of those
for its stacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import sysconfig
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

from ..protocol.rt import CoreWorkerStub, Empty, StacksReply, ThreadStack, WorkerInfo
from . import memory, rpc

TIMEOUT_S = 5.0

#: Frames from these folders are not the user's: the runtime's, the standard
#: library's and installed packages' (a coroutine with only such frames is not
#: shown).
_NOT_USERS = tuple(
    {
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
        *(sysconfig.get_path(name) + os.sep for name in ("stdlib", "purelib", "platlib")),
    }
)


async def this_process() -> StacksReply:
    """This process's threads and user coroutines, as stacks: taken on its loop
    (no I/O), their source lines read on a thread (files, off the loop)."""
    me = threading.get_ident()
    by_ident = {t.ident: t for t in threading.enumerate()}
    threads = []
    for ident, frame in sys._current_frames().items():
        thread = by_ident.get(ident)
        summary = _summary(traceback.walk_stack(frame), reverse=True)
        if ident == me:  # the loop, answering this: its frames up to the request's
            summary = _until_serving(summary)
        name = thread.name if thread is not None else f"thread {ident}"
        threads.append((name, ident, bool(thread is not None and thread.daemon), summary))
    threads.sort(key=lambda t: (t[0] != "MainThread", t[0]))
    coroutines = _user_coroutines()

    def formatted() -> StacksReply:
        return StacksReply(
            pid=os.getpid(),
            threads=[
                ThreadStack(name=name, ident=ident, daemon=daemon, stack=_text(summary))
                for name, ident, daemon, summary in threads
            ],
            coroutines=[ThreadStack(name=n, stack=_text(summary)) for n, summary in coroutines],
        )

    return await asyncio.to_thread(formatted)


def _summary(
    frames: Iterator[tuple[FrameType, int]], reverse: bool = False
) -> traceback.StackSummary:
    """Where the frames are, without reading their source lines yet."""
    summary = traceback.StackSummary.extract(frames, lookup_lines=False)
    if reverse:  # (walk_stack goes from the innermost call out)
        summary.reverse()
    return summary


def _text(summary: traceback.StackSummary) -> str:
    return "".join(summary.format())


def _awaiting(coro: Any) -> list[FrameType]:
    """A suspended coroutine's frames, from it down to what it awaits now (a
    task's own stack shows only the outermost)."""
    frames: list[FrameType] = []
    while coro is not None and len(frames) < 200:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        frames.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return frames


def _until_serving(summary: traceback.StackSummary) -> traceback.StackSummary:
    for i, frame in enumerate(summary):
        if f"{os.sep}grpclib{os.sep}" in frame.filename:
            return traceback.StackSummary.from_list(summary[:i])
    return summary


def _user_coroutines() -> list[tuple[str, traceback.StackSummary]]:
    out = []
    with contextlib.suppress(RuntimeError):  # (no loop running here)
        current = asyncio.current_task()
        for task in asyncio.all_tasks():
            frames = _awaiting(task.get_coro())
            users = [f for f in frames if not f.f_code.co_filename.startswith(_NOT_USERS)]
            if task is current or not users:
                continue
            name = f"{users[0].f_code.co_name} ({task.get_name()})"
            out.append((name, _summary((f, f.f_lineno) for f in frames)))
    out.sort(key=lambda c: c[0])
    return out


@dataclass
class ProcessStacks:
    info: WorkerInfo
    host: str
    reply: StacksReply


async def collect(
    gcs_address: tuple[str, int], token: str | None = None, pid: int | None = None
) -> list[ProcessStacks]:
    """Every live driver's and worker's stacks (``pid``: that process's only);
    a process that does not answer in time is left out."""
    channels = rpc.ChannelPool(token)
    try:
        found = [
            (w, host)
            for w, host in await memory.live_workers(channels, gcs_address)
            if pid in (None, w.pid)
        ]

        async def ask(info: WorkerInfo, host: str) -> ProcessStacks | None:
            address = info.address
            if address is None or not address.port:
                return None
            stub = CoreWorkerStub(channels.get(address.host, address.port))
            try:
                reply = await asyncio.wait_for(stub.get_stacks(Empty()), TIMEOUT_S)
            except rpc.CONNECTION_ERRORS:  # (TimeoutError among them)
                return None
            return ProcessStacks(info, host, reply)

        answers = await asyncio.gather(*(ask(info, host) for info, host in found))
        return [a for a in answers if a is not None]
    finally:
        channels.close()


def render(processes: list[ProcessStacks]) -> str:
    out = []
    for p in sorted(processes, key=lambda p: (not p.info.is_driver, p.info.pid)):
        kind = "driver" if p.info.is_driver else "worker"
        out.append(f"=== {kind} pid={p.info.pid} on {p.host} (job {p.info.job_id}) ===")
        for thread in p.reply.threads:
            daemon = " (daemon)" if thread.daemon else ""
            out += [f"--- thread {thread.name}{daemon} ---", thread.stack.rstrip("\n")]
        for coroutine in p.reply.coroutines:
            out += [f"--- coroutine {coroutine.name} ---", coroutine.stack.rstrip("\n")]
        out.append("")
    return "\n".join(out)
