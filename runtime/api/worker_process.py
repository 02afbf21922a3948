"""``python -m runtime.api.worker_process``: a worker process, started by its raylet.

The worker's composition root: a core worker that makes the API layer's
``ObjectRef``s, set as the process's current one so that user code running
here (tasks, actors) uses the same public API as a driver.

With ``--template FD`` it is instead the raylet's worker template (see
``_private.worker_template``): it has imported all of the above and forks
workers, each of which returns here with its own arguments and goes on as a
started worker would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys

import setproctitle

from .._private import daemon, process, worker_template
from .._private.config import Config
from ..core_worker import (
    CoreWorker,
    LaneHost,
    WorkerMode,
    install_interrupts,
    mark_task_output,
    read_start_environment,
)
from . import _context
from ._object_ref import ObjectRef

logger = logging.getLogger("runtime.worker")
MODULE = "runtime.api.worker_process"

#: How long a stopped worker waits for its main thread to return, when that
#: thread was between two calls (a task that started just then gets that long).
END_WAIT_S = 2.0


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == worker_template.TEMPLATE_FLAG:
        child = worker_template.serve(int(sys.argv[2]), process.PARENT_FD_FLAG)
        if child.exec:
            child.exec_worker(MODULE)
        # A forked worker: from here on, as if started with these arguments
        # (``ps`` shows the command line it would have had).
        sys.argv = [sys.argv[0], *child.argv]
        setproctitle.setproctitle(" ".join([sys.executable, "-P", "-m", MODULE, *child.argv]))
        child.take_on()
        read_start_environment()  # its own, set after the template's imports
    parser = argparse.ArgumentParser(prog=MODULE)
    parser.add_argument("--host", required=True)
    parser.add_argument("--raylet-port", type=int, required=True)
    parser.add_argument("--gcs-address", required=True)
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--job-id", type=int, required=True)
    parser.add_argument("--session-dir", required=True)
    parser.add_argument(process.PARENT_FD_FLAG, dest="parent_fd", type=int)
    args = parser.parse_args()
    gcs_host, gcs_port = args.gcs_address.rsplit(":", 1)
    # The runtime's own messages get a handler of their own: the root logger is
    # left as a plain Python process has it, the user's to set up (a task's
    # logging.basicConfig() takes effect, as in Ray).
    own = logging.StreamHandler()
    own.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    runtime_logger = logging.getLogger("runtime")
    runtime_logger.addHandler(own)
    runtime_logger.setLevel(logging.WARNING)
    runtime_logger.propagate = False

    # Sync tasks run on this (main) thread, the loop on another.
    host = LaneHost()
    install_interrupts()

    async def serve(stop: asyncio.Event) -> None:
        process.exit_with_parent(asyncio.get_running_loop(), args.parent_fd)
        worker = CoreWorker(
            mode=WorkerMode.WORKER,
            config=Config.load(),
            host=args.host,
            gcs_address=(gcs_host, int(gcs_port)),
            raylet_address=(args.host, args.raylet_port),
            make_ref=ObjectRef,
            job_id=args.job_id,
            worker_id=bytes.fromhex(args.worker_id),
            node_id=bytes.fromhex(args.node_id),
            lane_host=host,
        )
        _context.set_current(worker, args.session_dir)
        mark_task_output()
        await worker.start()
        await stop.wait()
        await worker.stop()

    def end_main() -> None:
        host.stop()
        if host.busy or not host.done.wait(END_WAIT_S):
            # A task still runs on the main thread (it ignored its interrupt, or
            # sits in a C call): the worker is done all the same.
            _flush_and_exit(0)

    if not daemon.run_beside(serve, host.serve, end_main):
        _flush_and_exit(1)


def _flush_and_exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
