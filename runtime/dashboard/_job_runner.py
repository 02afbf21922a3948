"""``python _job_runner.py``: runs one submitted job's entrypoint.

The dashboard starts one runner per job, tied to it (see ``_private/process``).
The runner starts the entrypoint in a shell (``sh -c``), in a process group of
its own, its output appended to the job's log, and exits with its exit code
(128 + the signal's number if a signal ended it). It imports nothing of the
runtime (the dashboard runs it by its path), so it starts at once, and says
"ready" on its stdout once it hears a stop. It ends the whole group, so
that nothing the entrypoint started outlives it, when told to stop (SIGTERM)
and when the dashboard ends however it ends (its end of the tie closes):
SIGTERM first, SIGKILL after ``--grace`` seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import subprocess
import sys

#: How often the runner looks whether the entrypoint ended, between wakeups.
_POLL_S = 0.2


def _end_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _exit_code(proc: subprocess.Popen[bytes]) -> int:
    code = proc.returncode
    return 128 - code if code is not None and code < 0 else int(code or 0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="runtime.dashboard._job_runner")
    parser.add_argument("--parent-fd", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--cwd", default=None)
    parser.add_argument("--grace", type=float, default=3.0)
    parser.add_argument("entrypoint")
    args = parser.parse_args()

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    # From now on a stop is heard: the dashboard stops nothing before this line.
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    with open(os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as log:
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", args.entrypoint],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=args.cwd,
                start_new_session=True,
            )
        except OSError as e:
            log.write(f"the entrypoint could not start: {e}\n".encode())
            raise SystemExit(127) from None
    while proc.poll() is None:
        readable, _, _ = select.select([args.parent_fd, wake_r], [], [], _POLL_S)
        if args.parent_fd in readable and not os.read(args.parent_fd, 1):
            stopping = True  # the dashboard ended
        if wake_r in readable:
            os.read(wake_r, 64)
        if stopping:
            _end_group(proc, args.grace)
    # The entrypoint's own children may still run in its group: they end with it.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit(_exit_code(proc))


if __name__ == "__main__":
    main()
