"""A worker's ``worker_process_setup_hook`` (Ray's): run once, on the thread
that runs its tasks, before the worker registers with its raylet (so before
its first task).

The hook is a ``module.function`` path, imported here, or a function the
caller pickled into the gcs's key-value store (under a URI of its digest,
put just before the first task of its environment: a worker that looks for
it first waits for it). Its failure is the environment's: the raylet is told,
and the tasks waiting for a worker of it fail with ``RuntimeEnvSetupError``.
It must finish in half the raylet's wait for a worker to register (30 s by
default); it runs before the worker is registered, so its code must not use
the runtime's API (such a call would wait for the worker it sets up).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import pickle
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._private import packaging, rpc
from .._private import runtime_env as renv
from ..protocol.rt import KvGetRequest
from ._running import format_remote_error

if TYPE_CHECKING:
    from ._core_worker import CoreWorker

#: How long a hook not in the key-value store yet is waited for (as Ray's default).
FETCH_TIMEOUT_S = 60.0
_POLL_S = 0.05


async def run(worker: CoreWorker) -> str:
    """Runs the worker's setup hook, if its environment has one; "" if it
    succeeded (or there is none), else why not (with the traceback)."""
    hook = renv.from_wire(worker.runtime_env).get("worker_process_setup_hook")
    if not hook:
        return ""
    assert worker.executor is not None
    lane = worker.executor.lane
    name = hook
    try:
        if renv.is_hook_uri(hook):
            fn = await lane.run(pickle.loads, await _fetch(worker, hook))
            name = getattr(fn, "__qualname__", hook)
        else:
            fn = await lane.run(_import, hook)
        # Bounded below the raylet's wait for the worker to register (which
        # would restart it, hook and all).
        limit = worker.config.worker_register_timeout_s / 2
        try:
            await asyncio.wait_for(lane.run(fn), limit)
        except TimeoutError:
            return (
                f"the worker_process_setup_hook {name} did not finish in {limit:g} s (one "
                "that calls the runtime's API waits for the worker it sets up)"
            )
    except Exception as e:
        return f"the worker_process_setup_hook {name} failed (pid={os.getpid()}):\n" + (
            format_remote_error(e)
        )
    return ""


def _import(path: str) -> Callable[[], Any]:
    module, _, name = path.rpartition(".")
    fn = getattr(importlib.import_module(module), name)
    if not callable(fn):
        raise TypeError(f"{path} is not a function")
    return fn


async def _fetch(worker: CoreWorker, uri: str) -> bytes:
    request = KvGetRequest(namespace=packaging.KV_NAMESPACE, key=uri.encode())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FETCH_TIMEOUT_S
    while True:
        try:
            reply = await worker.gcs.kv_get(request)
        except rpc.CONNECTION_ERRORS as e:
            raise RuntimeError(f"could not fetch the setup hook: {e}") from e
        if reply.found:
            return reply.value
        if loop.time() >= deadline:
            raise TimeoutError(f"the setup hook {uri} was not uploaded in {FETCH_TIMEOUT_S}s")
        await asyncio.sleep(_POLL_S)
