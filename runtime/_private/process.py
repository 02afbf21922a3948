"""Starting the runtime's processes, and making sure none outlives its parent.

Every child the runtime starts (gcs, raylet, worker) may be *tied* to its
parent: it inherits the read end of a pipe whose write end only the parent
holds. When the parent dies, however it dies (even SIGKILL), the kernel
closes the write end, the child's loop sees end-of-file and the child exits.
A parent stopping a child on purpose closes the pipe the same way. Unlike
``PR_SET_PDEATHSIG``, this follows the parent *process*, not the thread that
forked, and works on any POSIX system.

A child reports that it is ready (and where it listens) by writing one JSON
line to an inherited *ready* pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO

PARENT_FD_FLAG = "--parent-fd"
READY_FD_FLAG = "--ready-fd"


class ChildProcess:
    """A child started by :func:`spawn`; :meth:`stop` ends it."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        tie_fd: int | None,
        info: dict[str, Any],
        companions: Sequence[subprocess.Popen[bytes]] = (),
    ):
        self.popen = popen
        self.info = info
        self._tie_fd = tie_fd
        # Started beside it, ending when it ends (a raylet's worker template):
        # waited for (reaped) by stop.
        self.companions = list(companions)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def release_tie(self) -> None:
        """In a forked copy of the parent: lets go of this copy of the tie, so
        that the child still lives exactly as long as the parent."""
        if self._tie_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._tie_fd)
            self._tie_fd = None

    def stop(self, timeout: float = 3.0, graceful: bool = False) -> None:
        """Asks the child to exit (closes its tie, sends SIGTERM), then kills it.

        ``graceful``: SIGTERM first, with the tie kept, so that the child runs
        its own stop (a raylet unregisters its node) for up to ``timeout``;
        closing the tie makes it exit at once."""
        if graceful and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        if self._tie_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._tie_fd)
            self._tie_fd = None
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait()
        _end_companions(self.companions, timeout)


def _end_companions(companions: Sequence[subprocess.Popen[bytes]], timeout: float) -> None:
    """Waits for processes that end with their main one (killing any late)."""
    for companion in companions:
        try:
            companion.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                companion.kill()
            companion.wait()


def spawn(
    module: str,
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: str,
    tie_to_parent: bool,
    timeout: float,
) -> ChildProcess:
    """Starts ``python -m module args`` and waits until it reports ready.

    Its stdout and stderr go to ``log_path``. A tied child dies with this
    process (its end of a pipe closes); an untied one outlives it (a standing
    cluster). Either way it starts a session of its own, as do the workers it
    starts in turn: a terminal's Ctrl-C (SIGINT to its foreground process group)
    interrupts the driver, not the cluster it started.
    """
    launched = Launched(module, args, env=env, log_path=log_path, tie_to_parent=tie_to_parent)
    return launched.wait_ready(timeout)


def open_log(path: str, buffering: int = -1) -> BinaryIO:
    """A log file to append to, readable by its user only (made if missing)."""
    return open(
        os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab", buffering=buffering
    )


def child_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment a child started by this module runs in."""
    return {**os.environ, **env, "PYTHONUNBUFFERED": "1"}


class Launched:
    """A child of :func:`spawn` started and not yet ready: what starts several
    children side by side (each one's interpreter and imports overlap the
    others') uses it; ``pass_fds``: more descriptors the child inherits."""

    def __init__(
        self,
        module: str,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: str,
        tie_to_parent: bool,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.module = module
        self.log_path = log_path
        self.companions: list[subprocess.Popen[bytes]] = []  # see ChildProcess
        ready_r, ready_w = os.pipe()
        self._ready_r: int | None = ready_r
        fds = [ready_w, *pass_fds]
        # -P: the current folder is not put on the child's path, so nothing in it
        # (a folder named like the package) shadows the installed runtime.
        argv = [sys.executable, "-P", "-m", module, *args, READY_FD_FLAG, str(ready_w)]
        tie_r = None
        self._tie_w: int | None = None
        if tie_to_parent:
            tie_r, self._tie_w = os.pipe()
            fds.append(tie_r)
            argv += [PARENT_FD_FLAG, str(tie_r)]
        full_env = child_env(env)
        try:
            with open_log(log_path) as log:
                self.popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=fds,
                    env=full_env,
                    start_new_session=True,
                )
        except BaseException:
            self._close_ready()
            if self._tie_w is not None:
                os.close(self._tie_w)
            raise
        finally:
            os.close(ready_w)
            if tie_r is not None:
                os.close(tie_r)

    def wait_ready(self, timeout: float) -> ChildProcess:
        """Waits until it reports ready; kills it if it does not."""
        assert self._ready_r is not None, "waited for once"
        try:
            info = _read_ready(self._ready_r, self.popen, timeout, self.module, self.log_path)
        except BaseException:
            self.kill()
            raise
        finally:
            self._close_ready()
        return ChildProcess(self.popen, self._tie_w, info, self.companions)

    def _close_ready(self) -> None:
        if self._ready_r is not None:
            os.close(self._ready_r)
            self._ready_r = None

    def kill(self) -> None:
        """Ends it at once (it failed to start, or a sibling did)."""
        self._close_ready()
        if self._tie_w is not None:
            os.close(self._tie_w)
            self._tie_w = None
        with contextlib.suppress(ProcessLookupError):
            self.popen.kill()
        self.popen.wait()
        _end_companions(self.companions, 3.0)


def _read_ready(
    fd: int, popen: subprocess.Popen[bytes], timeout: float, module: str, log_path: str
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{module} did not start within {timeout:.0f}s; see {log_path}")
        readable, _, _ = select.select([fd], [], [], min(remaining, 0.5))
        if readable:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
        elif popen.poll() is not None:
            break
    if b"\n" not in buf:
        popen.wait()
        tail = _tail(log_path)
        raise RuntimeError(
            f"{module} exited with code {popen.returncode} before it was ready; "
            f"see {log_path}:\n{tail}"
        )
    info: dict[str, Any] = json.loads(buf.split(b"\n", 1)[0])
    return info


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


# -- the child's side -------------------------------------------------------


def report_ready(fd: int | None, info: Mapping[str, Any]) -> None:
    """Tells the parent this process is ready, and what it should know."""
    if fd is None:
        return
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(dict(info)) + "\n")


#: Files this process made that must not outlive it (a raylet's store
#: socket): removed by an abrupt exit too.
_own_files: list[str] = []


def remove_at_exit(path: str) -> None:
    """``path`` is removed even when this process ends at once (its tie closed)."""
    _own_files.append(path)


def exit_with_parent(loop: asyncio.AbstractEventLoop, fd: int | None, code: int = 0) -> None:
    """Ends this process at once when the parent's end of the tie closes.

    Exiting at once is right: this process's own children are tied to it
    the same way and follow it. Only the files registered with
    :func:`remove_at_exit` are removed first.
    """
    if fd is None:
        return

    def on_readable() -> None:
        try:
            data = os.read(fd, 1)
        except OSError:
            data = b""
        if not data:
            for path in _own_files:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            os._exit(code)

    loop.add_reader(fd, on_readable)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_runtime_process(pid: int) -> bool:
    """Whether ``pid`` is (still) one of this package's processes."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return False
    return (
        b"runtime.gcs" in cmdline
        or b"runtime.raylet" in cmdline
        or b"runtime.api.worker_process" in cmdline
        or b"runtime.dashboard" in cmdline
    )


def describe_exit(code: int | None, *, ours: bool = False) -> str:
    """How a process ended, as the end of a sentence about it ("... exited
    with code 3"); ``code`` as ``Popen.returncode`` (negative for a signal),
    None when unknown; ``ours``: the runtime ended it, so a SIGKILL needs no
    guess at who sent it."""
    if code is None:
        return "ended"
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    if -code == signal.SIGKILL and not ours:
        name += " (as kill -9 or the kernel's out-of-memory killer sends it)"
    return f"was killed by {name}"
