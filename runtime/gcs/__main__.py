"""``python -m runtime.gcs``: runs the gcs of one cluster."""

from __future__ import annotations

import argparse
import asyncio
import logging

from .._private import daemon, metrics, process, rpc
from .._private.config import Config
from ._server import GcsService

logger = logging.getLogger("runtime.gcs")


def main() -> None:
    parser = argparse.ArgumentParser(prog="runtime.gcs")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--session-dir", default="", help="the cluster's session (for finding it)")
    parser.add_argument(process.READY_FD_FLAG, dest="ready_fd", type=int)
    parser.add_argument(process.PARENT_FD_FLAG, dest="parent_fd", type=int)
    args = parser.parse_args()
    daemon.configure_logging("gcs")

    async def serve(stop: asyncio.Event) -> None:
        process.exit_with_parent(asyncio.get_running_loop(), args.parent_fd)
        sock = rpc.bind_socket(args.host, args.port)
        port = sock.getsockname()[1]
        service = GcsService(Config.load(), args.session_dir)
        server = await rpc.start_server_on([service], sock)
        metrics.time_rpcs(server)
        service.start()
        logger.info("gcs listening on %s:%d", args.host, port)
        process.report_ready(args.ready_fd, {"host": args.host, "port": port})
        serving = asyncio.ensure_future(service.serve_metrics())  # after ready: off the start path
        await stop.wait()
        serving.cancel()
        await service.close()
        await rpc.stop_server(server)

    daemon.run(serve)


if __name__ == "__main__":
    main()
