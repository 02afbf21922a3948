"""The public API: ``init``, ``get``, ``put``, ``wait`` and friends.

A driver process has one :class:`_Driver`: its core worker, the head
processes it started (if any) and, for a sync program, the thread that runs
the core worker's loop. In an asyncio program the core worker runs on the
program's own loop instead, with no extra thread.

Worker processes use the same functions; there the current core worker is
the worker's own, set by its main.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import functools
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import uvloop

from . import _cluster, _context
from ._config import Config
from ._object_ref import ObjectRef
from .core_worker import CoreWorker, WorkerMode
from .core_worker._executor import current_task_id
from .exceptions import RuntimeNotInitializedError
from .protocol.rt import Empty, NodeInfo

logger = logging.getLogger("runtime")

_GET_ALT = "await ref` or `await runtime.get_async(refs)"
_WAIT_ALT = "await runtime.wait_async(refs)"


class _LoopThread:
    """The daemon thread that runs a sync driver's core worker loop."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="runtime-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


@dataclass
class _Driver:
    worker: CoreWorker
    head: _cluster.HeadProcesses | None
    loop_thread: _LoopThread | None
    gcs_address: tuple[str, int]


_driver: _Driver | None = None


@dataclass(frozen=True)
class RuntimeContext:
    """What a driver or task can learn about where it runs."""

    job_id: int
    node_id: str
    worker_id: str
    namespace: str
    gcs_address: str
    session_dir: str | None
    mode: str

    def get_job_id(self) -> str:
        return f"{self.job_id:08x}"

    def get_node_id(self) -> str:
        return self.node_id

    def get_worker_id(self) -> str:
        return self.worker_id

    def get_task_id(self) -> str | None:
        task_id = current_task_id.get()
        return task_id.hex() if task_id is not None else None


# -- init and shutdown ---------------------------------------------------------------


def _check_init_args(
    address: str | None,
    num_cpus: float | None,
    num_gpus: float | None,
    resources: dict[str, float] | None,
    namespace: str | None,
    object_store_memory: int | None = None,
) -> None:
    if object_store_memory is not None and (
        isinstance(object_store_memory, bool)
        or not isinstance(object_store_memory, int)
        or object_store_memory <= 0
    ):
        raise TypeError("init(): object_store_memory must be a positive int (bytes)")
    for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise TypeError(f"init(): {name} must be a number, got {type(value).__name__}")
        if value is not None and value < 0:
            raise ValueError(f"init(): {name} must be >= 0, got {value}")
    if resources is not None:
        if not isinstance(resources, dict) or not all(isinstance(k, str) for k in resources):
            raise TypeError("init(): resources must be a dict of name -> amount")
        if "CPU" in resources or "GPU" in resources:
            raise ValueError(
                "init(): use num_cpus / num_gpus rather than 'CPU' / 'GPU' in resources"
            )
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError("init(): namespace must be a str")
    if address is not None and not isinstance(address, str):
        raise TypeError("init(): address must be a str such as 'auto' or 'HOST:PORT'")
    if address is not None and (
        num_cpus is not None or num_gpus is not None or resources or object_store_memory
    ):
        raise ValueError(
            "init(): num_cpus, num_gpus and resources describe a new local cluster; "
            "they cannot be given when joining an existing one (address=...)"
        )


def _start_processes(
    address: str | None,
    config: Config,
    num_cpus: float | None,
    num_gpus: float | None,
    resources: dict[str, float] | None,
    object_store_memory: int | None,
) -> tuple[_cluster.HeadProcesses | None, tuple[str, int]]:
    if address is None and config.address:
        address = config.address
    if address is None:
        host = "127.0.0.1"
        head = _cluster.start_head(
            config,
            host=host,
            port=0,
            resources=_cluster.default_resources(num_cpus, num_gpus, resources, host),
            standing=False,
            object_store_memory=object_store_memory,
        )
        return head, head.gcs_address
    return None, _cluster.resolve_address(address, config)


async def _find_raylet(gcs_address: tuple[str, int]) -> NodeInfo:
    """The raylet of this machine's node in a cluster."""
    return _local_node(await _cluster.list_nodes(gcs_address), gcs_address)


def _local_node(nodes: list[NodeInfo], gcs_address: tuple[str, int]) -> NodeInfo:
    """This machine's node (the head's, when several raylets share the machine)."""
    alive = [n for n in nodes if n.alive]
    if not alive:
        raise ConnectionError(f"the cluster at {gcs_address[0]}:{gcs_address[1]} has no live node")
    here = _cluster.local_address_towards(gcs_address)
    local = [n for n in alive if n.host == here] or [
        n for n in alive if n.store_socket[:1] not in ("", "\0") and os.path.exists(n.store_socket)
    ]
    if not local:
        raise ConnectionError(
            f"no node of the cluster at {gcs_address[0]}:{gcs_address[1]} runs on this machine "
            f"({here}); a driver needs one: start it with "
            f"'runtime start --address={gcs_address[0]}:{gcs_address[1]}'"
        )
    return max(local, key=lambda n: n.is_head)


def _make_worker(
    config: Config,
    gcs_address: tuple[str, int],
    raylet: tuple[str, int],
    node_id: bytes,
    store_socket: str,
    namespace: str | None,
    log_to_driver: bool,
) -> CoreWorker:
    return CoreWorker(
        node_id=node_id,
        store_socket=store_socket,
        mode=WorkerMode.DRIVER,
        config=config,
        host=raylet[0],
        gcs_address=gcs_address,
        raylet_address=raylet,
        namespace=namespace or "",
        log_to_driver=log_to_driver,
    )


def init(
    address: str | None = None,
    *,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    object_store_memory: int | None = None,
    namespace: str | None = None,
    log_to_driver: bool = True,
    ignore_reinit_error: bool = False,
    include_dashboard: bool | None = None,
    _system_config: dict[str, Any] | None = None,
) -> RuntimeContext:
    """Starts a local cluster (no ``address``) or joins one, and connects.

    Called with a running event loop on this thread, the driver attaches to
    that loop (no extra thread); ``await ref`` then resolves on it directly.
    Otherwise a daemon thread runs the driver's loop.
    """
    global _driver
    if _driver is not None:
        if ignore_reinit_error:
            return get_runtime_context()
        raise RuntimeError(
            "runtime.init() was already called; call runtime.shutdown() first, or pass "
            "ignore_reinit_error=True"
        )
    _check_init_args(address, num_cpus, num_gpus, resources, namespace, object_store_memory)
    config = Config.load(_system_config)
    try:
        user_loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        user_loop = None
    head, gcs_address = _start_processes(
        address, config, num_cpus, num_gpus, resources, object_store_memory
    )
    try:
        if head is not None:
            raylet, node_id = head.raylet_address, bytes.fromhex(head.raylet.info["node_id"])
            store_socket = head.raylet.info["store_socket"]
        else:
            # A one-off lookup before the driver's loop exists (or is ours to use).
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                node = pool.submit(asyncio.run, _find_raylet(gcs_address)).result()
            raylet, node_id = (node.host, node.raylet_port), node.node_id
            store_socket = node.store_socket
        worker = _make_worker(
            config, gcs_address, raylet, node_id, store_socket, namespace, log_to_driver
        )
        if user_loop is not None:
            worker.bind(user_loop)
            start = user_loop.create_task(worker.start())
            start.add_done_callback(functools.partial(_log_failure, "the runtime failed to start"))
            loop_thread = None
        else:
            loop_thread = _LoopThread()
            loop_thread.run(_bind_and_start(worker))
    except BaseException:
        if head is not None:
            head.stop()
        raise
    _driver = _Driver(worker, head, loop_thread, gcs_address)
    _context.set_current(worker)
    return get_runtime_context()


async def _bind_and_start(worker: CoreWorker) -> None:
    worker.bind(asyncio.get_running_loop())
    await worker.start()


async def init_async(
    address: str | None = None,
    *,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    object_store_memory: int | None = None,
    namespace: str | None = None,
    log_to_driver: bool = True,
    ignore_reinit_error: bool = False,
    _system_config: dict[str, Any] | None = None,
) -> RuntimeContext:
    """``init`` for asyncio programs: attaches to the running loop, fully started."""
    global _driver
    if _driver is not None:
        if ignore_reinit_error:
            return get_runtime_context()
        raise RuntimeError("runtime.init_async() was already called; call shutdown first")
    _check_init_args(address, num_cpus, num_gpus, resources, namespace, object_store_memory)
    config = Config.load(_system_config)
    loop = asyncio.get_running_loop()
    head, gcs_address = await loop.run_in_executor(
        None,
        _start_processes,
        address,
        config,
        num_cpus,
        num_gpus,
        resources,
        object_store_memory,
    )
    try:
        if head is not None:
            raylet, node_id = head.raylet_address, bytes.fromhex(head.raylet.info["node_id"])
            store_socket = head.raylet.info["store_socket"]
        else:
            node = await _find_raylet(gcs_address)
            raylet, node_id = (node.host, node.raylet_port), node.node_id
            store_socket = node.store_socket
        worker = _make_worker(
            config, gcs_address, raylet, node_id, store_socket, namespace, log_to_driver
        )
        worker.bind(loop)
        await worker.start()
    except BaseException:
        if head is not None:
            await loop.run_in_executor(None, head.stop)
        raise
    _driver = _Driver(worker, head, None, gcs_address)
    _context.set_current(worker)
    return get_runtime_context()


def is_initialized() -> bool:
    return _context.current_or_none() is not None


def shutdown() -> None:
    """Disconnects, and stops the local cluster ``init()`` started, if any."""
    global _driver
    driver = _driver
    if driver is None:
        return
    _driver = None
    _context.set_current(None)
    worker = driver.worker
    try:
        if driver.loop_thread is not None:
            try:
                driver.loop_thread.run(worker.stop(), timeout=10)
            except Exception:
                logger.exception("stopping the driver's core worker failed")
            driver.loop_thread.stop()
        else:
            assert worker.loop is not None
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is worker.loop:
                # Called on the program's loop: finish the teardown in the background.
                worker.loop.create_task(worker.stop())
            elif not worker.loop.is_closed() and worker.loop.is_running():
                asyncio.run_coroutine_threadsafe(worker.stop(), worker.loop).result(10)
    finally:
        if driver.head is not None:
            driver.head.stop()


async def shutdown_async() -> None:
    """``shutdown`` for asyncio programs: awaits the driver's clean teardown."""
    global _driver
    driver = _driver
    if driver is None:
        return
    if driver.loop_thread is not None:
        await asyncio.get_running_loop().run_in_executor(None, shutdown)
        return
    _driver = None
    _context.set_current(None)
    try:
        await driver.worker.stop()
    finally:
        if driver.head is not None:
            await asyncio.get_running_loop().run_in_executor(None, driver.head.stop)


atexit.register(shutdown)


# -- objects ------------------------------------------------------------------------


def _refs_arg(object_refs: Any, call: str) -> tuple[list[ObjectRef], bool]:
    if isinstance(object_refs, ObjectRef):
        return [object_refs], True
    if isinstance(object_refs, list | tuple):
        for i, ref in enumerate(object_refs):
            if not isinstance(ref, ObjectRef):
                raise TypeError(
                    f"{call}(): item {i} of the list is a {type(ref).__name__}, not an ObjectRef"
                )
        return list(object_refs), False
    raise TypeError(
        f"{call}() takes an ObjectRef or a list of ObjectRefs, got {type(object_refs).__name__}"
    )


def _check_timeout(timeout: Any, call: str) -> None:
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"{call}(): timeout must be a number of seconds or None")
    if timeout < 0:
        raise ValueError(f"{call}(): timeout must be >= 0, got {timeout}")


def put(value: Any) -> ObjectRef:
    """Stores ``value`` in the object store; returns its ref (this process owns it)."""
    return _context.current().put(value)


def get(object_refs: Any, *, timeout: float | None = None) -> Any:
    """The value(s) of one ref or a list of refs; blocks until ready.

    Raises the task's error (a :class:`~runtime.exceptions.TaskError` that is
    also an instance of the user's exception class) and
    :class:`~runtime.exceptions.GetTimeoutError` after ``timeout`` seconds.
    """
    refs, single = _refs_arg(object_refs, "get")
    _check_timeout(timeout, "get")
    CoreWorker.check_blocking_allowed("get", _GET_ALT)
    values = _context.current().get(refs, timeout)
    return values[0] if single else values


async def get_async(object_refs: Any, *, timeout: float | None = None) -> Any:
    """``get`` for asyncio code: awaits instead of blocking."""
    refs, single = _refs_arg(object_refs, "get_async")
    _check_timeout(timeout, "get_async")
    values = await _context.current().get_async(refs, timeout)
    return values[0] if single else values


def _wait_args(object_refs: Any, num_returns: Any, timeout: Any, call: str) -> list[ObjectRef]:
    if isinstance(object_refs, ObjectRef):
        raise TypeError(f"{call}() takes a list of ObjectRefs, not a single ObjectRef")
    refs, _ = _refs_arg(object_refs, call)
    if len({r.binary() for r in refs}) != len(refs):
        raise ValueError(f"{call}(): the list of ObjectRefs has duplicates")
    if isinstance(num_returns, bool) or not isinstance(num_returns, int):
        raise TypeError(f"{call}(): num_returns must be an int")
    if num_returns < 0 or num_returns > len(refs):
        raise ValueError(
            f"{call}(): num_returns must be between 0 and the number of refs ({len(refs)}), "
            f"got {num_returns}"
        )
    _check_timeout(timeout, call)
    return refs


def wait(
    object_refs: Sequence[ObjectRef],
    *,
    num_returns: int = 1,
    timeout: float | None = None,
    fetch_local: bool = True,
) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """Splits refs into (ready, not ready) once ``num_returns`` are ready or time is up."""
    refs = _wait_args(object_refs, num_returns, timeout, "wait")
    CoreWorker.check_blocking_allowed("wait", _WAIT_ALT)
    return _context.current().wait(refs, num_returns, timeout, fetch_local=bool(fetch_local))


async def wait_async(
    object_refs: Sequence[ObjectRef],
    *,
    num_returns: int = 1,
    timeout: float | None = None,
    fetch_local: bool = True,
) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """``wait`` for asyncio code."""
    refs = _wait_args(object_refs, num_returns, timeout, "wait_async")
    return await _context.current().wait_async(
        refs, num_returns, timeout, fetch_local=bool(fetch_local)
    )


# -- the cluster ---------------------------------------------------------------------


async def nodes_async() -> list[dict[str, Any]]:
    worker = _context.current()
    reply = await worker._on_own_loop(worker.gcs.get_all_nodes(Empty()))
    return [
        {
            "NodeID": n.node_id.hex(),
            "Alive": n.alive,
            "NodeManagerAddress": n.host,
            "NodeName": n.host,
            "NodeManagerHostname": n.host,
            "NodeManagerPort": n.raylet_port,
            "ObjectManagerPort": n.object_manager_port,
            "ObjectStoreSocketName": n.store_socket,
            "IsHead": n.is_head,
            "Resources": dict(n.resources_total),
            "AvailableResources": dict(n.resources_available),
            "SessionDir": n.session_dir,
        }
        for n in reply.nodes
    ]


def nodes() -> list[dict[str, Any]]:
    """Every node of the cluster, as in Ray's ``ray.nodes()``."""
    CoreWorker.check_blocking_allowed("nodes", "await runtime.nodes_async()")
    worker = _context.current()
    result: list[dict[str, Any]] = worker._run_blocking(nodes_async())
    return result


def _sum(nodes_list: list[dict[str, Any]], key: str) -> dict[str, float]:
    total: dict[str, float] = {}
    for node in nodes_list:
        if node["Alive"]:
            for name, amount in node[key].items():
                total[name] = total.get(name, 0.0) + amount
    return total


def cluster_resources() -> dict[str, float]:
    return _sum(nodes(), "Resources")


def available_resources() -> dict[str, float]:
    return _sum(nodes(), "AvailableResources")


async def cluster_resources_async() -> dict[str, float]:
    return _sum(await nodes_async(), "Resources")


async def available_resources_async() -> dict[str, float]:
    return _sum(await nodes_async(), "AvailableResources")


def get_runtime_context() -> RuntimeContext:
    worker = _context.current_or_none()
    if worker is None:
        raise RuntimeNotInitializedError(
            "the runtime is not initialized: call runtime.init() first"
        )
    driver = _driver
    return RuntimeContext(
        job_id=worker.job_id,
        node_id=worker.node_id.hex(),
        worker_id=worker.worker_id.hex(),
        namespace=worker.namespace,
        gcs_address=f"{worker.gcs_address[0]}:{worker.gcs_address[1]}",
        session_dir=driver.head.session.path if driver and driver.head else None,
        mode=worker.mode.value,
    )


# -- actors and cancellation -----------------------------------------------------------


def kill(actor: Any, *, no_restart: bool = True) -> None:
    """Kills an actor at once: calls in flight and later calls raise ActorDiedError.

    With ``no_restart=False`` the actor is restarted (if ``max_restarts``
    allows), as if its process had died.
    """
    from ._actor import ActorHandle

    if not isinstance(actor, ActorHandle):
        raise TypeError(f"kill() takes an actor handle, got {type(actor).__name__}")
    worker = _context.current()
    worker.post(worker.actor_client.kill_actor, actor._key, no_restart)


def cancel(object_ref: ObjectRef, *, force: bool = False, recursive: bool = True) -> None:
    """Cancels the task (or actor call) that makes ``object_ref``.

    A queued task is dropped; a running ``async def`` task or async actor call
    gets ``asyncio.CancelledError``; a running sync task gets
    ``TaskCancelledError`` raised in its thread, or with ``force=True`` its
    worker is killed. ``get`` then raises ``TaskCancelledError``. Only the
    ref's owner can cancel it. Cancelling an asyncio task that awaits a ref
    does not cancel the remote task: call this for that.
    """
    if not isinstance(object_ref, ObjectRef):
        raise TypeError(f"cancel() takes an ObjectRef, got {type(object_ref).__name__}")
    worker = _context.current()
    if object_ref.owner_address[2] != worker.worker_id:
        raise ValueError(
            "only the owner of a ref (the process that submitted its task) can cancel it"
        )
    worker.post(_spawn_on, worker, worker.cancel(object_ref, force))


def _spawn_on(worker: CoreWorker, coro: Any) -> None:
    task = worker._background.spawn(coro)
    task.add_done_callback(functools.partial(_log_failure, "a background request failed"))


def _log_failure(what: str, task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s: %s", what, task.exception())


def get_actor(name: str, namespace: str | None = None) -> Any:
    """The handle of the named actor; ValueError if there is none."""
    if not isinstance(name, str) or not name:
        raise TypeError("get_actor() takes the actor's name, a non-empty str")
    CoreWorker.check_blocking_allowed("get_actor", "await runtime.get_actor_async(name)")
    worker = _context.current()
    return worker._run_blocking(worker.actor_client.get_actor(name, namespace))


async def get_actor_async(name: str, namespace: str | None = None) -> Any:
    if not isinstance(name, str) or not name:
        raise TypeError("get_actor_async() takes the actor's name, a non-empty str")
    worker = _context.current()
    return await worker._on_own_loop(worker.actor_client.get_actor(name, namespace))
