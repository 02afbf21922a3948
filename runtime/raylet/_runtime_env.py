"""A node's side of runtime environments: fetching and unpacking packages.

Before a worker of an environment with packages starts, the raylet makes
sure each package is unpacked in the node's cache
(``<session>/runtime_resources/<node>``),
once per package however many workers and environments use it: concurrent
requests share one preparation. Fetching is from the gcs's key-value store
(a package not there yet is waited for: its driver posted it just before the
task); unpacking runs on a thread, never on the raylet's loop. A preparation
that fails or outlasts its timeout raises ``RuntimeEnvSetupError`` with the
cause, and is tried afresh next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import sys
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
        self._ready: dict[str, asyncio.Future[str]] = {}  # uri (or pip key) -> its folder
        # Invariant: a folder is in ``_users`` while a live worker uses it, and in
        # ``_idle_since`` (the time its last user went) while none does.
        self._users: dict[str, int] = {}
        self._idle_since: dict[str, float] = {}

    def acquire(self, setup: Setup) -> None:
        """A worker started with ``setup``: its folders are in use."""
        for folder in setup.paths:
            self._users[folder] = self._users.get(folder, 0) + 1
            self._idle_since.pop(folder, None)

    def release(self, setup: Setup, now: float) -> None:
        """A worker that used ``setup`` exited."""
        for folder in setup.paths:
            left = self._users.get(folder, 0) - 1
            if left > 0:
                self._users[folder] = left
            else:
                self._users.pop(folder, None)
                self._idle_since[folder] = now

    def collect(self, now: float, ttl: float) -> list[str]:
        """Forgets the folders unused for ``ttl`` seconds; returns them to delete
        (off the loop). One being prepared again meanwhile is made afresh."""
        stale = [f for f, since in self._idle_since.items() if now - since >= ttl]
        for folder in stale:
            del self._idle_since[folder]
            for key, ready in list(self._ready.items()):
                if ready.done() and not ready.exception() and ready.result() == folder:
                    del self._ready[key]
        return stale

    async def prepare(self, env_text: str) -> Setup:
        """The environment's folders, ready and acquired (``release`` them)."""
        env = renv.from_wire(env_text)
        timeout = float((env.get("config") or {}).get("setup_timeout_seconds") or 0)
        limit = None if timeout == -1 else (timeout or DEFAULT_TIMEOUT_S)
        try:
            return await asyncio.wait_for(self._prepare(env, limit), limit)
        except TimeoutError as e:
            raise exceptions.RuntimeEnvSetupError(
                f"setting up the runtime environment took longer than {limit:g}s "
                "(runtime_env config setup_timeout_seconds)"
            ) from e

    async def _prepare(self, env: dict, limit: float | None) -> Setup:
        working_dir = env.get("working_dir")
        modules = list(env.get("py_modules") or [])
        jobs = [self._package(u) for u in [working_dir, *modules] if u]
        if env.get("pip"):
            jobs.append(self._pip(list(env["pip"]), limit))
        folders = await asyncio.gather(*jobs)
        setup = Setup(folders[0] if working_dir else None, tuple(folders))
        # In use from now (no await in between): collect() cannot delete them
        # before the worker starts. The caller releases them when it exits.
        self.acquire(setup)
        return setup

    async def _pip(self, requirements: list[str], limit: float | None) -> str:
        """A folder with the requirements installed (``pip install --target``),
        one per distinct list on this node, made once."""
        key = "pip_" + hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()[:32]
        ready = self._ready.get(key)
        if ready is None or (ready.done() and ready.exception() is not None):
            ready = self._ready[key] = asyncio.ensure_future(
                self._install(key, requirements, limit)
            )
        return await asyncio.shield(ready)

    async def _install(self, key: str, requirements: list[str], limit: float | None) -> str:
        dest = os.path.join(self.cache_dir, key)
        if os.path.isdir(dest):  # noqa: ASYNC240 (one stat)
            return dest
        partial = f"{dest}.partial-{os.getpid()}"
        await asyncio.get_running_loop().run_in_executor(None, _clear, partial)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pip", "install", "--quiet", "--no-input",
            "--disable-pip-version-check", "--target", partial, "--", *requirements,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            _, err = await asyncio.wait_for(proc.communicate(), limit)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
            cause = "\n".join(lines[-12:]) or f"pip exited with {proc.returncode}"
            raise exceptions.RuntimeEnvSetupError(f"pip could not install {requirements}:\n{cause}")
        os.replace(partial, dest)
        return dest

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


def _clear(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def remove_folders(folders: list[str]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
