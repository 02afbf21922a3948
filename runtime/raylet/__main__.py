"""``python -m runtime.raylet``: runs the raylet of one node."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os

from .._private import daemon, process
from .._private.config import Config
from ._server import Raylet

logger = logging.getLogger("runtime.raylet")


def main() -> None:
    parser = argparse.ArgumentParser(prog="runtime.raylet")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--gcs-address")
    # Started beside its gcs (its imports overlap the gcs's): the address
    # comes down this pipe once the gcs listens (end-of-file: it failed).
    where.add_argument("--gcs-address-fd", type=int)
    parser.add_argument("--resources", required=True, help="JSON: name -> amount")
    parser.add_argument("--session-dir", required=True)
    parser.add_argument("--object-store-memory", type=int, required=True)
    parser.add_argument("--labels", default="{}", help="JSON: the node's labels")
    parser.add_argument("--head", action="store_true", help="the head node (started with the gcs)")
    parser.add_argument(
        "--template-fd", type=int, help="this end of a worker template started beside it"
    )
    parser.add_argument(process.READY_FD_FLAG, dest="ready_fd", type=int)
    parser.add_argument(process.PARENT_FD_FLAG, dest="parent_fd", type=int)
    args = parser.parse_args()
    daemon.configure_logging("raylet")
    gcs_address = args.gcs_address or _read_address(args.gcs_address_fd)
    gcs_host, gcs_port = gcs_address.rsplit(":", 1)

    async def serve(stop: asyncio.Event) -> None:
        process.exit_with_parent(asyncio.get_running_loop(), args.parent_fd)
        raylet = Raylet(
            Config.load(),
            host=args.host,
            gcs_host=gcs_host,
            gcs_port=int(gcs_port),
            resources=json.loads(args.resources),
            session_dir=args.session_dir,
            object_store_memory=args.object_store_memory,
            is_head=args.head,
            labels=json.loads(args.labels),
            template_fd=args.template_fd,
        )
        await raylet.start(args.port)
        process.report_ready(
            args.ready_fd,
            {
                "host": args.host,
                "port": raylet.port,
                "node_id": raylet.node_id.hex(),
                "store_socket": raylet.store_socket,
            },
        )
        lost = asyncio.ensure_future(raylet.gcs_lost.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([lost, stopped], return_when=asyncio.FIRST_COMPLETED)
        lost.cancel()
        stopped.cancel()
        await raylet.stop()

    daemon.run(serve)


def _read_address(fd: int) -> str:
    with os.fdopen(fd, "rb") as pipe:
        line = pipe.readline().decode().strip()
    if not line:
        raise SystemExit("the gcs this raylet was started beside did not start")
    return line


if __name__ == "__main__":
    main()
