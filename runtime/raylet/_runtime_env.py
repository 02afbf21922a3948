"""A node's side of runtime environments: fetching and unpacking packages.

Before a worker of an environment with packages starts, the raylet makes
sure each package is unpacked in the node's cache (``<session>/runtime_resources``),
once per package however many workers and environments use it: concurrent
requests share one preparation. Fetching is from the gcs's key-value store
(a package not there yet is waited for: its driver posted it just before the
task); unpacking runs on a thread, never on the raylet's loop. A preparation
that fails or outlasts its timeout raises ``RuntimeEnvSetupError`` with the
cause, and is tried afresh next time.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass

from .. import exceptions
from .._private import packaging, rpc
from .._private import runtime_env as renv
from ..protocol.rt import GcsStub, KvGetRequest

#: How long a setup may take unless the environment says (as Ray's default).
DEFAULT_TIMEOUT_S = 600.0
#: How often a package not in the key-value store yet is looked for again.
_POLL_S = 0.05


@dataclass(frozen=True)
class Setup:
    """What a worker of an environment starts with."""

    cwd: str | None  # its working_dir, unpacked
    paths: tuple[str, ...]  # first on its sys.path: working_dir, then py_modules


class RuntimeEnvAgent:
    def __init__(self, cache_dir: str, gcs: Callable[[], GcsStub]) -> None:
        self.cache_dir = cache_dir
        self._gcs = gcs
        self._ready: dict[str, asyncio.Future[str]] = {}  # uri -> its folder

    async def prepare(self, env_text: str) -> Setup:
        env = renv.from_wire(env_text)
        timeout = float((env.get("config") or {}).get("setup_timeout_seconds") or 0)
        limit = None if timeout == -1 else (timeout or DEFAULT_TIMEOUT_S)
        try:
            return await asyncio.wait_for(self._prepare(env), limit)
        except TimeoutError as e:
            raise exceptions.RuntimeEnvSetupError(
                f"setting up the runtime environment took longer than {limit:g}s "
                "(runtime_env config setup_timeout_seconds)"
            ) from e

    async def _prepare(self, env: dict) -> Setup:
        working_dir = env.get("working_dir")
        modules = list(env.get("py_modules") or [])
        folders = await asyncio.gather(*(self._package(u) for u in [working_dir, *modules] if u))
        cwd = folders[0] if working_dir else None
        return Setup(cwd, tuple(folders))

    async def _package(self, uri: str) -> str:
        ready = self._ready.get(uri)
        if ready is None or (ready.done() and ready.exception() is not None):
            ready = self._ready[uri] = asyncio.ensure_future(self._fetch(uri))
        return await asyncio.shield(ready)

    async def _fetch(self, uri: str) -> str:
        name = uri.removeprefix("gcs://").replace(".", "_")
        dest = os.path.join(self.cache_dir, name)
        if os.path.isdir(dest):  # noqa: ASYNC240 (one stat, before any download)
            return dest  # unpacked by an earlier worker of this node
        data = await self._download(uri)
        loop = asyncio.get_running_loop()
        os.makedirs(self.cache_dir, mode=0o700, exist_ok=True)
        try:
            await loop.run_in_executor(None, packaging.unpack, uri, data, dest)
        except (OSError, ValueError) as e:
            raise exceptions.RuntimeEnvSetupError(f"unpacking {uri} failed: {e}") from e
        return dest

    async def _download(self, uri: str) -> bytes:
        request = KvGetRequest(namespace=packaging.KV_NAMESPACE, key=uri.encode())
        while True:
            try:
                reply = await self._gcs().kv_get(request)
            except rpc.CONNECTION_ERRORS as e:
                raise exceptions.RuntimeEnvSetupError(f"fetching {uri} failed: {e}") from e
            if reply.found:
                return reply.value
            await asyncio.sleep(_POLL_S)  # its driver's upload is on its way
