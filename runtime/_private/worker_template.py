"""The worker template: a process that has imported the worker's code and forks
workers from itself, so that a new worker skips the interpreter's start and the
imports (about a third of a second of CPU each) and shares their memory with
its siblings until written.

One template serves each raylet (``python -m runtime.api.worker_process
--template FD``), started beside it by whoever starts the raylet (so that its
imports overlap the raylet's). They talk over a socket pair, in frames of
JSON (:mod:`framing`):

- raylet -> template: ``{"argv": [...], "env": {...}}``, a worker's
  command-line arguments and whole environment, with three descriptors
  attached (``SCM_RIGHTS``): the write ends of its stdout and stderr, and the
  read end of its tie to the raylet; for a worker of a runtime environment
  also ``"cwd"`` and ``"paths"`` (first on its ``sys.path``). The child takes
  these on before it runs the worker (only what takes effect after an
  interpreter's start: the raylet decides what may be forked); with
  ``"exec": true`` the child instead runs a new interpreter with them (a
  worker whose environment only a start takes in), the template still its
  parent, so that its end is reported and its process group ended as a
  forked worker's;
- template -> raylet, first: ``{"template": N}``, its own pid, with its pidfd
  attached (the raylet kills a hung template through it);
- template -> raylet, one per request, in order: ``{"pid": N}`` with a pidfd
  of the child attached (it names that process even once its pid is reused),
  or ``{"error": "..."}``; and ``{"exited": N, "code": C}`` when a child ends
  (``C`` as ``Popen.returncode``: negative for a signal).

Invariants: the template runs one thread and no event loop, so a fork copies
nothing half-done; a child leaves :func:`serve` with the worker's argv and
none of the template's descriptors, signal handlers or random state. The
template ends when the raylet's end of the socket closes (the raylet ended,
however it ended); its children are tied to the raylet, not to it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import random
import selectors
import signal
import socket
import sys
from typing import Any, NoReturn

from . import framing

#: The flag that makes ``runtime.api.worker_process`` a template.
TEMPLATE_FLAG = "--template"
#: Descriptors a request carries: stdout, stderr, tie.
REQUEST_FDS = 3
#: Descriptors a ``pid`` reply carries: the child's pidfd.
REPLY_FDS = 1
_RECV_BYTES = 1 << 16


def command(control_fd: int, session_dir: str) -> list[str]:
    """The template's command line (``control_fd``: its end of the socket pair)."""
    return [
        sys.executable,
        "-P",  # the current folder must not shadow the package (see process.spawn)
        "-m",
        "runtime.api.worker_process",
        TEMPLATE_FLAG,
        str(control_fd),
        "--session-dir",
        session_dir,
    ]


def encode(message: dict[str, Any]) -> bytes:
    return framing.frame(json.dumps(message, separators=(",", ":")).encode())


def decode(payload: bytes) -> dict[str, Any]:
    """A frame's message; a ValueError for anything but a JSON object."""
    message = json.loads(payload)
    if not isinstance(message, dict):
        raise ValueError("a template message is a JSON object")
    return message


def send_all(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    """Sends ``data`` with ``fds`` attached to its first byte (a blocking socket;
    a signal may cut a send short, so the rest goes after)."""
    sent = socket.send_fds(sock, [data], fds)
    if sent < len(data):
        sock.sendall(data[sent:])


@dataclasses.dataclass(frozen=True)
class Child:
    """What a forked child is to become: its command-line arguments (the tie's
    flag and descriptor appended) and, to take on once its process title is
    set (which needs the environment as the process started with it), its
    environment, folder and first ``sys.path`` entries."""

    argv: list[str]
    env: dict[str, str] | None
    cwd: str | None
    paths: list[str]
    #: The read end of its tie to the raylet (in ``argv`` too).
    tie_fd: int
    #: A new interpreter, not this one: see ``exec_worker``.
    exec: bool = False

    def exec_worker(self, module: str) -> NoReturn:
        """Replaces this process with a new interpreter running ``module`` as
        the worker (its environment reaches it through ``env``: ``paths`` are
        on its PYTHONPATH already)."""
        os.set_inheritable(self.tie_fd, True)
        if self.cwd is not None:
            os.chdir(self.cwd)
        argv = [sys.executable, "-P", "-m", module, *self.argv]
        try:
            os.execve(sys.executable, argv, self.env if self.env is not None else os.environ)
        except OSError as e:  # the raylet sees the worker end with this on its stderr
            print(f"could not start a worker: {e}", file=sys.stderr, flush=True)
            os._exit(1)

    def take_on(self) -> None:
        if self.env is not None:
            os.environ.clear()
            os.environ.update(self.env)
        if self.cwd is not None:
            os.chdir(self.cwd)
        sys.path[0:0] = self.paths


def serve(control_fd: int, parent_fd_flag: str) -> Child:
    """The template's loop. Returns only in a forked child: what it is to be."""
    sock = socket.socket(fileno=control_fd)
    sock.setblocking(True)
    own = os.pidfd_open(os.getpid())
    try:
        send_all(sock, encode({"template": os.getpid()}), [own])
    except OSError:
        return _exit_template(set())  # the raylet is gone already
    finally:
        os.close(own)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    # The raylet's terminal signals are not for the template: its end is the
    # socket's end (workers set their own handlers after the fork).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    decoder = framing.FrameDecoder()
    fds: list[int] = []  # received, not yet taken by a request (in order)
    workers: set[int] = set()  # forked and not yet reaped
    child: Child | None = None
    try:
        while child is None:
            for key, _ in selector.select():
                if key.fileobj is sock:
                    try:
                        data, new_fds, _flags, _addr = socket.recv_fds(sock, _RECV_BYTES, 16)
                    except ConnectionError:  # the raylet closed with our reports unread
                        return _exit_template(workers)
                    fds += new_fds
                    if not data:
                        return _exit_template(workers)
                    for payload in decoder.feed(data):
                        child = _handle(sock, payload, fds, parent_fd_flag, workers)
                        if child is not None:
                            break
                else:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 512)
                    _reap(sock, workers)
                if child is not None:
                    break
        return child
    finally:
        # In the child: none of this is the worker's (its own descriptors stay).
        selector.close()
        signal.set_wakeup_fd(-1)
        for fd in (wake_r, wake_w):
            os.close(fd)
        sock.close()
        if child is not None:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for fd in fds:
                os.close(fd)


def _handle(
    sock: socket.socket, payload: bytes, fds: list[int], flag: str, workers: set[int]
) -> Child | None:
    """Forks the worker a request asks for; returns what it is in the child."""
    if len(fds) < REQUEST_FDS:
        raise ValueError("a request came without its descriptors")
    out_w, err_w, tie_r = fds[:REQUEST_FDS]
    del fds[:REQUEST_FDS]
    try:
        request = decode(payload)
        argv = _strings(request.get("argv"), "argv")
        paths = _strings(request.get("paths", []), "paths")
        env = request.get("env")
        if env is not None and not (
            isinstance(env, dict) and all(isinstance(v, str) for v in env.values())
        ):
            raise ValueError("env is an object of strings")
        cwd = request.get("cwd")
        if cwd is not None and not isinstance(cwd, str):
            raise ValueError("cwd is a string")
        new_interpreter = request.get("exec", False)
        if not isinstance(new_interpreter, bool):
            raise ValueError("exec is a boolean")
        gc.freeze()  # what the template made so far is never collected in a child
        pid = os.fork()
    except (OSError, ValueError) as e:
        for fd in (out_w, err_w, tie_r):
            os.close(fd)
        send_all(sock, encode({"error": f"{type(e).__name__}: {e}"}), [])
        return None
    if pid == 0:
        _become_worker(out_w, err_w)
        return Child([*argv, flag, str(tie_r)], env, cwd, paths, tie_r, new_interpreter)
    workers.add(pid)
    for fd in (out_w, err_w, tie_r):
        os.close(fd)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError as e:  # cannot be: the child is not reaped before this
        send_all(sock, encode({"error": f"pidfd_open: {e}"}), [])
        return None
    try:
        send_all(sock, encode({"pid": pid}), [pidfd])
    finally:
        os.close(pidfd)
    return None


def _strings(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} is a list of strings")
    return value


def _become_worker(out_w: int, err_w: int) -> None:
    """In the child: the standard streams a started worker would have, and a
    process group of its own (what it starts ends with it: see ``_reap``)."""
    os.setpgid(0, 0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd, target in ((out_w, 1), (err_w, 2)):
        os.dup2(fd, target)
        os.close(fd)
    random.seed()  # not the template's sequence, nor a sibling's


def _reap(sock: socket.socket, workers: set[int]) -> None:
    """Reaps the children that ended; a worker's process group (what its tasks
    started and did not detach: a multiprocessing pool, a subprocess) is
    killed first, as Ray kills a worker's children when it exits. First, while
    the worker is unreaped: until then its group's id cannot be another's."""
    while True:
        try:
            ended = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if ended is None:
            return
        pid = ended.si_pid
        if pid in workers:
            _kill_group(pid)
        _, status = os.waitpid(pid, 0)
        if pid in workers:
            workers.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            with contextlib.suppress(OSError):
                send_all(sock, encode({"exited": pid, "code": code}), [])


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _exit_template(workers: set[int]) -> NoReturn:
    """The raylet is gone: so is the template, and its workers (which follow
    their ties anyway) with their process groups."""
    for pid in workers:
        _kill_group(pid)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)
