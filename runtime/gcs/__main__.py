"""``python -m runtime.gcs``: runs the gcs of one cluster."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from .._private import daemon, metrics, process, rpc
from .._private.config import Config
from . import _supervisor as supervisor
from ._server import GcsService
from ._storage import open_storage
from ._tables import GcsTables

logger = logging.getLogger("runtime.gcs")


def main() -> None:
    if "--supervise" in sys.argv:
        argv = [a for a in sys.argv[1:] if a != "--supervise"]
        supervisor.main(argv)
        return
    parser = argparse.ArgumentParser(prog="runtime.gcs")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--session-dir", default="", help="the cluster's session (for finding it)")
    parser.add_argument(
        "--storage", default="", help="memory, sqlite, sqlite:///path or redis://host:port/db"
    )
    parser.add_argument(
        "--storage-namespace", default="", help="the cluster's name in a shared storage"
    )
    parser.add_argument(process.READY_FD_FLAG, dest="ready_fd", type=int)
    parser.add_argument(process.PARENT_FD_FLAG, dest="parent_fd", type=int)
    args = parser.parse_args()
    daemon.configure_logging("gcs")

    async def serve(stop: asyncio.Event) -> None:
        process.exit_with_parent(asyncio.get_running_loop(), args.parent_fd)
        sock = rpc.bind_socket(args.host, args.port)
        port = sock.getsockname()[1]
        config = Config.load()
        storage = open_storage(
            args.storage or config.gcs_storage,
            session_dir=args.session_dir,
            namespace=args.storage_namespace or os.path.basename(args.session_dir) or "default",
        )
        await storage.open()
        tables = await GcsTables.recover(storage)
        if tables.jobs or tables.nodes:
            logger.info(
                "recovered %d node(s), %d job(s) and %d kv entries from %s",
                len(tables.nodes),
                len(tables.jobs),
                len(tables.kv),
                storage.describe(),
            )
        service = GcsService(config, args.session_dir, tables)
        server = await rpc.start_server_on([service], sock)
        metrics.time_rpcs(server)
        await service.start()
        logger.info("gcs listening on %s:%d", args.host, port)
        process.report_ready(args.ready_fd, {"host": args.host, "port": port})
        serving = asyncio.ensure_future(service.serve_metrics())  # after ready: off the start path
        await stop.wait()
        serving.cancel()
        await service.close()
        await rpc.stop_server(server)
        await storage.close()

    daemon.run(serve)


if __name__ == "__main__":
    main()
