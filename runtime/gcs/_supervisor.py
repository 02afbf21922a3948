"""``python -m runtime.gcs --supervise ...``: a standing cluster's gcs, restarted when it dies.

``runtime start --head`` starts this small process rather than the gcs
itself when the gcs's storage outlives it. It starts the gcs (tied to it),
passes on its readiness, and whenever the gcs exits without being asked,
starts it again on the same address and storage (waiting a little longer
after each quick death, up to ``MAX_BACKOFF_S``). Raylets and core workers
ride through the gap (``gcs_reconnect_timeout_s``). SIGTERM stops the gcs,
then this process. Each gcs's pid is added to the session's ``pids`` file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

from .._private import process
from .._private.session import Session

logger = logging.getLogger("runtime.gcs.supervisor")

FIRST_BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0
#: A gcs that ran this long is healthy again: the next restart is immediate.
HEALTHY_AFTER_S = 60.0
START_TIMEOUT_S = 30.0


def supervise(argv: Sequence[str], session_dir: str, ready_fd: int | None) -> int:
    """Runs the gcs with ``argv`` (its own flags) until SIGTERM."""
    session = Session(session_dir) if session_dir else None
    log_path = os.path.join(session_dir, "logs", "gcs.log") if session_dir else os.devnull
    stopping = threading.Event()
    args = list(argv)
    child = _start(args, log_path, session)
    # Later gcs processes take the same address, whatever port the first chose.
    args = _with_port(args, int(child.info["port"]))
    process.report_ready(ready_fd, child.info)
    current = [child]

    def stop(signum: int, frame: object) -> None:
        # Only asks: the loop below is waiting for the gcs, and stops it fully.
        stopping.set()
        with contextlib.suppress(ProcessLookupError):
            os.kill(current[0].pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    backoff = FIRST_BACKOFF_S
    while True:
        started = time.monotonic()
        code = current[0].popen.wait()
        if stopping.is_set():
            current[0].stop()
            return 0
        ran = time.monotonic() - started
        backoff = FIRST_BACKOFF_S if ran > HEALTHY_AFTER_S else min(backoff * 2, MAX_BACKOFF_S)
        logger.warning("the gcs exited (code %s) after %.1f s; starting it again", code, ran)
        if stopping.wait(backoff):
            return 0
        try:
            current[0] = _start(args, log_path, session)
        except (RuntimeError, TimeoutError, OSError) as e:
            logger.error("the gcs did not start again: %s", e)
            continue  # the next attempt waits longer
        if stopping.is_set():  # a SIGTERM while it started
            current[0].stop()
            return 0


def _start(args: list[str], log_path: str, session: Session | None) -> process.ChildProcess:
    child = process.spawn(
        "runtime.gcs",
        args,
        env={},
        log_path=log_path,
        tie_to_parent=True,  # a supervisor that dies takes its gcs with it
        timeout=START_TIMEOUT_S,
    )
    if session is not None:
        session.record_pid(child.pid, "gcs")
    return child


def _with_port(args: list[str], port: int) -> list[str]:
    out = list(args)
    if "--port" in out:
        out[out.index("--port") + 1] = str(port)
    else:
        out += ["--port", str(port)]
    return out


def main(argv: list[str]) -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s gcs-supervisor %(levelname)s %(name)s: %(message)s",
    )
    ready_fd, argv = _take_flag(argv, process.READY_FD_FLAG)
    parent_fd, argv = _take_flag(argv, process.PARENT_FD_FLAG)
    if parent_fd is not None:
        # Tied to a driver (a private cluster): go, with the gcs, when it goes.
        threading.Thread(target=_exit_with_parent, args=(parent_fd,), daemon=True).start()
    session_dir = argv[argv.index("--session-dir") + 1] if "--session-dir" in argv else ""
    sys.exit(supervise(argv, session_dir, ready_fd))


def _take_flag(argv: list[str], flag: str) -> tuple[int | None, list[str]]:
    if flag not in argv:
        return None, argv
    i = argv.index(flag)
    return int(argv[i + 1]), argv[:i] + argv[i + 2 :]


def _exit_with_parent(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 1):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    os.kill(os.getpid(), signal.SIGTERM)  # the loop stops the gcs, then this process
