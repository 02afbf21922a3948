"""Streaming to HTTP clients: an aiohttp endpoint sends the items of an async
generator method of an async actor to the client as they are produced.

Run it with ``python examples/streaming_http.py``, then
``curl -N 'http://127.0.0.1:8080/tokens?n=20'``: tokens arrive one by one.
The runtime lives on the web server's own event loop (``init_async``): no
helper thread anywhere between the actor and the socket.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

import runtime

#: The model actor's handle, kept by the app.
MODEL = web.AppKey("model", runtime.ActorHandle)


class Model:
    """Stands for a model that emits tokens one at a time."""

    async def tokens(self, n: int, delay: float) -> AsyncIterator[str]:
        for i in range(n):
            await asyncio.sleep(delay)
            yield f"token-{i}\n"


async def stream_tokens(request: web.Request) -> web.StreamResponse:
    n = int(request.query.get("n", "10"))
    delay = float(request.query.get("delay", "0.05"))
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(request)
    model = request.app[MODEL]
    async for ref in model.tokens.remote(n, delay):
        await response.write((await ref).encode())  # each token as soon as it exists
    await response.write_eof()
    return response


def make_app(model_class: type = Model, **init_args: Any) -> web.Application:
    """The web app; it starts the runtime (and one model actor) with itself."""
    app = web.Application()

    async def start(app: web.Application) -> None:
        await runtime.init_async(**init_args)
        app[MODEL] = runtime.remote(num_cpus=0)(model_class).remote()

    async def stop(app: web.Application) -> None:
        await runtime.shutdown_async()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_get("/tokens", stream_tokens)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    web.run_app(make_app(), host=args.host, port=args.port)
