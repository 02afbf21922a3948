"""``python -m runtime.dashboard``: serves one cluster's dashboard."""

from __future__ import annotations

import argparse
import asyncio
import logging

from .._private import daemon, process
from .._private.cluster import parse_address
from ..protocol.rt import GcsStub, KvPutRequest
from ._server import Dashboard, serve

logger = logging.getLogger("runtime.dashboard")

#: Where drivers read the dashboard's address (``init()``'s ``dashboard_url``).
KV_NAMESPACE = "dashboard"
KV_KEY = b"url"


def main() -> None:
    parser = argparse.ArgumentParser(prog="runtime.dashboard")
    parser.add_argument("--gcs-address", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8265)
    parser.add_argument("--session-dir", default="")
    parser.add_argument(process.READY_FD_FLAG, dest="ready_fd", type=int)
    parser.add_argument(process.PARENT_FD_FLAG, dest="parent_fd", type=int)
    args = parser.parse_args()
    daemon.configure_logging("dashboard")
    gcs_address = parse_address(args.gcs_address)

    async def run(stop: asyncio.Event) -> None:
        process.exit_with_parent(asyncio.get_running_loop(), args.parent_fd)
        dashboard = Dashboard(gcs_address, args.session_dir)
        runner, port = await serve(dashboard, args.host, args.port)
        url = f"http://{args.host}:{port}"
        assert dashboard.reader is not None
        gcs: GcsStub = dashboard.reader.gcs
        await gcs.kv_put(
            KvPutRequest(namespace=KV_NAMESPACE, key=KV_KEY, value=url.encode(), overwrite=True)
        )
        logger.info("dashboard at %s", url)
        process.report_ready(args.ready_fd, {"host": args.host, "port": port, "url": url})
        await stop.wait()
        await runner.cleanup()

    daemon.run(run)


if __name__ == "__main__":
    main()
