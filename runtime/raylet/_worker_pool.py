"""Worker processes: starting them, streaming their output, noticing deaths.

The pool does the I/O the scheduler asks for. Each worker is tied to the
raylet (see ``_process``), so a raylet that dies takes its workers along.
A worker is forked by the worker template (``_template``) when it is up and
the worker's runtime environment allows (see ``forkable``); any other runs a
new interpreter, still the template's child while it is up. Either way a
worker leads a process group of its own, killed once the worker has ended:
what its tasks started and did not detach ends with it.
A worker's stdout and stderr are read line by line: kept in the session's
``logs/`` and published to the gcs for the job's driver to print.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import sys
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from .._private import process, worker_logs
from .._private.tasks import TaskSet
from ..protocol.rt import LogBatch
from ._runtime_env import Setup
from ._template import TemplateUnavailable, WorkerTemplate
from ._worker_output import WorkerOutput, read_output

logger = logging.getLogger(__name__)

#: Ended workers whose exit is remembered (for the errors naming their deaths).
ENDS_KEPT = 1000

#: How long an ended worker's output is read for before it is closed: a
#: process the worker started and that left its group may hold the pipes.
OUTPUT_GRACE_S = 2.0


class Child(Protocol):
    """A worker's process: the template's child (``ForkedWorker``, forked or
    a new interpreter) or, with no template, the pool's (``StartedWorker``)."""

    @property
    def pid(self) -> int: ...

    def kill(self) -> None: ...

    def running(self) -> bool: ...

    async def wait(self) -> int | None: ...


class StartedWorker:
    """A worker started by the pool itself (no template to ask): the leader of
    a session of its own, whose process group is killed once it has ended
    (the template does this for its children, before reaping them; here the
    group's id is free for reuse only once the group is empty)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self.pid = proc.pid

    def kill(self) -> None:
        self._proc.kill()

    def running(self) -> bool:
        try:  # (its parent: it may look without reaping)
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:
            return False

    async def wait(self) -> int | None:
        code = await self._proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        return code


@dataclass(frozen=True)
class WorkerEnd:
    """How a worker ended: its pid, exit code (None: unknown; negative: the
    signal), job, and whether the raylet ended it."""

    pid: int
    code: int | None
    job_id: int
    told: bool

    def exit_type(self) -> str:
        """Ray's exit type (the state API's ``exit_type``)."""
        if self.told:
            return "INTENDED_SYSTEM_EXIT"
        return "INTENDED_USER_EXIT" if self.code == 0 else "SYSTEM_ERROR"

    def exit_detail(self) -> str:
        how = f"its process {process.describe_exit(self.code, ours=self.told)}"
        return f"the raylet ended it; {how}" if self.told else how


class WorkerProcess:
    def __init__(
        self,
        worker_id: bytes,
        job_id: int,
        proc: Child,
        tie_fd: int,
        pipes: tuple[int, int],
    ):
        self.worker_id = worker_id
        self.job_id = job_id
        self.proc = proc
        self.tie_fd = tie_fd
        # The read ends of its stdout and stderr, until their readers take them.
        self.pipes = pipes
        # Their readers, once reading (``_watch``).
        self.outputs: list[WorkerOutput] = []
        # Its exit code (None: unknown), once its process has ended.
        self.ended: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.told_to_end = False  # the raylet killed it, or asked it to exit

    @property
    def pid(self) -> int:
        return self.proc.pid


#: How a worker learns its runtime environment (canonical JSON).
RUNTIME_ENV_VAR = "RUNTIME_WORKER_RUNTIME_ENV"
#: The folders of its environment, first on its sys.path (before its driver's).
PATHS_VAR = "RUNTIME_WORKER_PATHS"


#: Environment variables that take effect only as a process starts (the
#: interpreter's, the dynamic loader's, the C allocator's): a worker whose
#: environment sets one is not forked.
AT_START_PREFIXES = ("PYTHON", "LD_", "MALLOC_", "GLIBC_")


def forkable(runtime_env: str) -> bool:
    """Whether a worker of ``runtime_env`` (canonical JSON) may be forked by the
    template: not one with packages to install (they may be other versions of
    what the template imported), nor one setting what only a start reads."""
    if not runtime_env:
        return True
    env = json.loads(runtime_env)
    if env.get("pip"):
        return False
    names = env.get("env_vars") or {}
    return not any(name.startswith(AT_START_PREFIXES) for name in names)


class WorkerPool:
    def __init__(
        self,
        *,
        argv: Callable[[bytes, int], list[str]],
        env: Mapping[str, str],
        log_dir: str,
        host: str,
        publish_logs: Callable[[LogBatch], None],
        on_exit: Callable[[bytes, int | None], None],
        template_fd: int | None = None,
        template_timeout: float = 30.0,
    ) -> None:
        """``template_fd``: the raylet's end of the socket pair of the worker
        template started beside it (None: every worker starts a new
        interpreter)."""
        self._argv = argv
        self._env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self._log_dir = log_dir
        # The log files of every worker this pool started (alive or not):
        # name -> (worker id, pid, job id). What this node serves as logs.
        self.log_files: dict[str, tuple[bytes, int, int]] = {}
        self.started = 0  # worker processes started (a metric)
        self._host = host
        self._publish_logs = publish_logs
        self._on_exit = on_exit
        self.processes: dict[bytes, WorkerProcess] = {}
        # The latest ended workers, oldest first.
        self.ends: OrderedDict[bytes, WorkerEnd] = OrderedDict()
        self._tasks = TaskSet()
        self._template_fd = template_fd
        self._template_timeout = template_timeout
        self.template: WorkerTemplate | None = None

    def open(self) -> None:
        """Takes the worker template (if any) on this loop."""
        if self._template_fd is not None:
            self.template = WorkerTemplate(self._template_fd, self._template_timeout)

    async def start(
        self, worker_id: bytes, job_id: int, runtime_env: str = "", setup: Setup | None = None
    ) -> None:
        """Starts a worker of ``job_id`` in ``runtime_env`` (canonical JSON): its
        ``env_vars`` over the node's environment; the worker reads the whole
        environment from ``RUNTIME_WORKER_RUNTIME_ENV``."""
        tie_r, tie_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        args = self._argv(worker_id, job_id)
        argv = [
            sys.executable,
            "-P",  # see process.spawn: the current folder must not shadow the package
            "-m",
            "runtime.api.worker_process",
            *args,
            process.PARENT_FD_FLAG,
            str(tie_r),
        ]
        try:
            proc: Child | None = None
            env = self._worker_env(runtime_env, setup)
            cwd = setup.cwd if setup is not None else None
            template = self.template
            if template is not None and template.up:
                # Its whole environment, always: the template may have been
                # started by another process than this raylet.
                with contextlib.suppress(TemplateUnavailable):
                    proc = await template.fork(
                        args,
                        (out_w, err_w, tie_r),
                        env=env,
                        cwd=cwd,
                        paths=setup.paths if setup is not None else (),
                        new_interpreter=not forkable(runtime_env),
                    )
            if proc is None:
                started = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out_w,
                    stderr=err_w,
                    pass_fds=[tie_r],
                    env=env,
                    cwd=cwd,
                    start_new_session=True,  # its group: see StartedWorker
                )
                proc = StartedWorker(started)
        except OSError:
            for fd in (tie_w, out_r, err_r):
                os.close(fd)
            logger.exception("could not start a worker")
            self._on_exit(worker_id, None)
            return
        finally:
            for fd in (tie_r, out_w, err_w):
                os.close(fd)
        worker = WorkerProcess(worker_id, job_id, proc, tie_w, (out_r, err_r))
        self.processes[worker_id] = worker
        self.started += 1
        self._tasks.spawn(self._watch(worker))

    def _worker_env(self, runtime_env: str, setup: Setup | None) -> dict[str, str]:
        if not runtime_env:
            return self._env
        env_vars = json.loads(runtime_env).get("env_vars") or {}
        env = {**self._env, **env_vars, RUNTIME_ENV_VAR: runtime_env}
        if setup is not None and setup.paths:
            first = os.pathsep.join(setup.paths)
            rest = env.get("PYTHONPATH", "")
            env["PYTHONPATH"] = f"{first}{os.pathsep}{rest}" if rest else first
            env[PATHS_VAR] = first
        return env

    def kill(self, worker_id: bytes) -> None:
        worker = self.processes.get(worker_id)
        if worker is not None:
            # (A worker that died on its own first is not the raylet's doing.)
            worker.told_to_end = worker.told_to_end or worker.proc.running()
            with contextlib.suppress(ProcessLookupError):
                worker.proc.kill()

    def told_to_exit(self, worker_id: bytes) -> None:
        """The raylet asked the worker to exit (idle) and it agreed."""
        worker = self.processes.get(worker_id)
        if worker is not None:
            worker.told_to_end = True

    async def close(self) -> None:
        for worker in list(self.processes.values()):
            self.kill(worker.worker_id)
        await self._tasks.close()
        if self.template is not None:
            self.template.close()

    async def exit_status(self, worker_id: bytes, wait: float) -> tuple[int, int | None] | None:
        """How a worker ended: its pid and exit code (None: unknown; negative:
        the signal that killed it). A worker still running is waited for up to
        ``wait`` seconds; None if it runs on, or this pool does not know it."""
        ended = self.ends.get(worker_id)
        if ended is not None:
            return ended.pid, ended.code
        worker = self.processes.get(worker_id)
        if worker is None:
            return None
        try:
            return worker.pid, await asyncio.wait_for(asyncio.shield(worker.ended), wait)
        except TimeoutError:
            return None

    async def drain_output(self, job_id: int) -> None:
        """Returns once every line the job's workers wrote so far is read and
        published (not what they write after the call)."""
        outputs = [o for w in self.processes.values() if w.job_id == job_id for o in w.outputs]
        await asyncio.gather(*(output.drained() for output in outputs))

    async def _watch(self, worker: WorkerProcess) -> None:
        """Reads the worker's output until it ends (and its pipes close, or
        ``OUTPUT_GRACE_S`` passes), then tells of its exit."""
        taken = 0  # the pipes handed to a reader (which closes them, even if it fails)
        try:
            for fd, err in zip(worker.pipes, (False, True), strict=True):
                name = worker_logs.worker_log_name(worker.worker_id, worker.pid, err=err)
                self.log_files[name] = (worker.worker_id, worker.pid, worker.job_id)
                batch = functools.partial(self._batch, worker, err)
                path = os.path.join(self._log_dir, name)
                taken += 1
                worker.outputs.append(await read_output(fd, path, batch, self._publish_logs))
            code = await worker.proc.wait()
            self._remember_end(worker, code)
            await asyncio.wait([output.closed for output in worker.outputs], timeout=OUTPUT_GRACE_S)
        finally:
            for output in worker.outputs:
                output.close()
            for fd in worker.pipes[taken:]:
                os.close(fd)
            os.close(worker.tie_fd)
            self.processes.pop(worker.worker_id, None)
        self._on_exit(worker.worker_id, code)

    def _remember_end(self, worker: WorkerProcess, code: int | None) -> None:
        worker.ended.set_result(code)
        # The raylet's doing only if the end is what it asked for (an exit
        # with code 3 may overtake its kill: the process was ending already).
        told = worker.told_to_end and code in (0, -signal.SIGKILL)
        end = WorkerEnd(worker.pid, code, worker.job_id, told)
        self.ends[worker.worker_id] = end
        if len(self.ends) > ENDS_KEPT:
            self.ends.popitem(last=False)

    def _batch(self, worker: WorkerProcess, is_err: bool, lines: list[str], task: str) -> LogBatch:
        return LogBatch(
            job_id=worker.job_id,
            pid=worker.pid,
            host=self._host,
            is_err=is_err,
            lines=lines,
            prefix=f"{task} pid={worker.pid}" if task else "",
        )
