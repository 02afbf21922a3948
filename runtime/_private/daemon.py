"""The common frame of the runtime's own processes (gcs, raylet, worker).

Each runs one uvloop loop. SIGTERM and SIGINT stop it gracefully; the death
of a tied parent ends it at once (see ``_process``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

import uvloop


def configure_logging(role: str) -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s {role} %(levelname)s %(name)s: %(message)s",
    )


def run(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Runs ``main(stop)`` on a uvloop loop; ``stop`` is set by SIGTERM/SIGINT."""

    async def wrapper() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    uvloop.run(wrapper())
