"""The streaming HTTP example: tokens reach the client while the generator runs."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from conftest import ROOT, assert_no_orphans

import runtime

aiohttp = pytest.importorskip("aiohttp", reason="the example needs aiohttp (the test extra)")
from aiohttp import web  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "examples"))
import streaming_http  # noqa: E402

pytestmark = pytest.mark.timeout(120)


class GatedModel(streaming_http.Model):
    """Holds back every token after the first until the test lets it go."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.done = False

    async def tokens(self, n, delay):
        yield "token-0\n"
        await self.gate.wait()
        for i in range(1, n):
            yield f"token-{i}\n"
        self.done = True

    def release(self) -> None:
        self.gate.set()  # a sync method of an async actor: on the actor's loop

    def finished(self) -> bool:
        return self.done


def test_the_first_token_arrives_before_the_generator_ends():
    async def main() -> str:
        app = streaming_http.make_app(GatedModel, num_cpus=1)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        session_dir = runtime.get_runtime_context().session_dir
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/tokens?n=3") as response,
            ):
                assert await response.content.readline() == b"token-0\n"
                model = app[streaming_http.MODEL]
                assert await model.finished.remote() is False  # still running
                await model.release.remote()
                assert await response.content.read() == b"token-1\ntoken-2\n"
        finally:
            await runner.cleanup()
        assert session_dir is not None
        return session_dir

    session_dir = asyncio.run(main())
    assert_no_orphans(session_dir)
