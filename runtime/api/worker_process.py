"""``python -m runtime.api.worker_process``: a worker process, started by its raylet.

The worker's composition root: a core worker that makes the API layer's
``ObjectRef``s, set as the process's current one so that user code running
here (tasks, actors) uses the same public API as a driver.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from .._private import daemon, process
from .._private.config import Config
from ..core_worker import CoreWorker, WorkerMode, mark_task_output
from . import _context
from ._object_ref import ObjectRef

logger = logging.getLogger("runtime.worker")


def main() -> None:
    parser = argparse.ArgumentParser(prog="runtime.api.worker_process")
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
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

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
        )
        _context.set_current(worker, args.session_dir)
        mark_task_output()
        await worker.start()
        await stop.wait()
        await worker.stop()

    daemon.run(serve)


if __name__ == "__main__":
    main()
