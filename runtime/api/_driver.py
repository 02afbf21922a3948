"""Drivers: ``init`` and ``shutdown``, sync and asyncio.

A driver process has one :class:`_Driver`: its core worker, the head
processes it started (if any) and, for a sync program, the thread that runs
the core worker's loop. In an asyncio program the core worker runs on the
program's own loop instead, with no extra thread.

Worker processes use the same API functions; there the current core worker
is the worker's own, set by its main (``worker_process``).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import functools
import logging
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import uvloop

from .._private import auth, cluster, job_logging, tls
from .._private import labels as node_labels
from .._private import runtime_env as renv
from .._private.config import Config
from ..core_worker import CoreWorker, WorkerMode, await_future, in_asyncio, logging_context
from ..protocol.rt import KvGetRequest, NodeInfo
from . import _context, _init_options, _options, _runtime_env
from ._init_context import InitContext
from ._init_options import LoggingConfig
from ._job_config import JobConfig, job_settings
from ._object_ref import ObjectRef

T = TypeVar("T")
logger = logging.getLogger("runtime")


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
    head: cluster.HeadProcesses | None
    loop_thread: _LoopThread | None
    gcs_address: tuple[str, int]
    dashboard_url: str | None = None  # host:port, as Ray's webui_url


_driver: _Driver | None = None


def _check_init_args(
    address: str | None,
    num_cpus: float | None,
    num_gpus: float | None,
    resources: dict[str, float] | None,
    namespace: str | None,
    object_store_memory: float | None = None,
) -> int | None:
    """Checks ``init``'s arguments; returns the store's size in bytes, if given."""
    if object_store_memory is not None:
        object_store_memory = byte_size("object_store_memory", object_store_memory)
    for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
        if value is not None:
            _amount(name, value)
    if resources is not None:
        if not isinstance(resources, dict) or not all(isinstance(k, str) for k in resources):
            raise TypeError("init(): resources must be a dict of name -> amount")
        if "CPU" in resources or "GPU" in resources:
            raise ValueError(
                "init(): use num_cpus / num_gpus rather than 'CPU' / 'GPU' in resources"
            )
        for key, amount in resources.items():
            _amount(f"resources[{key!r}]", amount)
    _options.check_namespace("init(): namespace", namespace)
    if address is not None and not isinstance(address, str):
        raise TypeError("init(): address must be a str such as 'auto' or 'HOST:PORT'")
    if address not in (None, "local") and (
        num_cpus is not None or num_gpus is not None or resources or object_store_memory
    ):
        raise ValueError(
            "init(): num_cpus, num_gpus and resources describe a new local cluster; "
            "they cannot be given when joining an existing one (address=...)"
        )
    return object_store_memory


def _amount(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"init(): {name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"init(): {name} must be a finite number >= 0, got {value!r}")


def byte_size(name: str, value: Any) -> int:
    """A size in bytes: an int, or a float with an integral value (``700e6``)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"init(): {name} must be a whole number of bytes, got {value!r}")
    if value <= 0:
        raise ValueError(f"init(): {name} must be positive, got {value}")
    return value


def _start_processes(prep: _Prepared) -> tuple[cluster.HeadProcesses | None, tuple[str, int]]:
    tls.check()  # a half TLS configuration is refused here, not at the first call
    address, config = prep.address, prep.config
    num_cpus, num_gpus, resources = prep.num_cpus, prep.num_gpus, prep.resources
    object_store_memory = prep.store_bytes
    # Discovery as in Ray: the address given, then RUNTIME_ADDRESS (or
    # RAY_ADDRESS), then a standing cluster on this machine, then a new one.
    if address is None and config.address:
        address = config.address
        logger.info("Connecting to the cluster at %s (RUNTIME_ADDRESS)", address)
    if address is None:
        found = cluster.find_cluster(config, standing_only=True)
        if found is not None:
            if num_cpus is not None or num_gpus is not None or resources or object_store_memory:
                raise ValueError(
                    f"init(): found a running cluster on this machine (at "
                    f"{found[0]}:{found[1]}, started with 'runtime start'): num_cpus, "
                    "num_gpus, resources and object_store_memory cannot be given when "
                    "joining it; pass address='local' to start a new local cluster instead"
                )
            logger.info(
                "Connecting to the running cluster at %s:%d (started with 'runtime start')",
                *found,
            )
            auth.set_token(cluster.token_for(found, config))
            return None, found
    if address is None or address == "local":
        host = "127.0.0.1"
        head = cluster.start_head(
            config,
            host=host,
            port=0,
            resources=cluster.default_resources(num_cpus, num_gpus, resources, host),
            standing=False,
            object_store_memory=object_store_memory,
            include_dashboard=prep.include_dashboard,
            labels=prep.labels,
        )
        logger.info("Started a local cluster; its session is %s", head.session.path)
        if head.dashboard_url:
            logger.info("View the dashboard at %s", head.dashboard_url)
        auth.set_token(head.token)
        return head, head.gcs_address
    gcs_address = cluster.resolve_address(address, config)
    auth.set_token(cluster.token_for(gcs_address, config))
    return None, gcs_address


async def _find_raylet(gcs_address: tuple[str, int]) -> NodeInfo:
    """The raylet of this machine's node in a cluster."""
    return _local_node(await cluster.list_nodes(gcs_address), gcs_address)


def _local_node(nodes: list[NodeInfo], gcs_address: tuple[str, int]) -> NodeInfo:
    """This machine's node (the head's, when several raylets share the machine)."""
    alive = [n for n in nodes if n.alive]
    if not alive:
        raise ConnectionError(f"the cluster at {gcs_address[0]}:{gcs_address[1]} has no live node")
    here = cluster.local_address_towards(gcs_address)
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
    prep: _Prepared,
    gcs_address: tuple[str, int],
    raylet: tuple[str, int],
    node_id: bytes,
    store_socket: str,
) -> CoreWorker:
    worker = CoreWorker(
        node_id=node_id,
        store_socket=store_socket,
        mode=WorkerMode.DRIVER,
        config=prep.config,
        host=raylet[0],
        gcs_address=gcs_address,
        raylet_address=raylet,
        namespace=prep.namespace or "",
        log_to_driver=prep.log_to_driver,
        make_ref=ObjectRef,
    )
    worker.runtime_env = renv.to_wire(prep.job_env)
    worker.job_metadata, worker.default_actor_lifetime = prep.job_metadata, prep.lifetime
    if prep.job_logging is not None:
        worker.job_logging = prep.job_logging
        job_logging.configure(prep.job_logging, lambda: logging_context(worker))
    return worker


@dataclass(frozen=True)
class _Prepared:
    """``init()``'s arguments, checked, and what they make."""

    config: Config
    address: str | None
    namespace: str | None
    num_cpus: float | None
    num_gpus: float | None
    resources: dict[str, float] | None
    labels: dict[str, str]
    store_bytes: int | None
    include_dashboard: bool
    log_to_driver: bool
    job_env: Any
    job_packages: Any
    job_metadata: dict[str, str]
    lifetime: str
    job_logging: dict[str, Any] | None


def _prepare(where: str, args: dict[str, Any]) -> _Prepared:
    """Checks ``init()``'s (or ``init_async()``'s) arguments, named as in its
    signature, and sets up logging as they ask; raises before anything starts."""
    if args["object_spilling_directory"] is not None and args["address"] not in (None, "local"):
        raise ValueError(
            f"{where}: object_spilling_directory is given to the node this driver starts, "
            "not when joining a cluster (address=...): give it to `runtime start`"
        )
    system_config = _init_options.apply(
        where,
        logging_level=args["logging_level"],
        logging_format=args["logging_format"],
        configure_logging=args["configure_logging"],
        local_mode=args["local_mode"],
        temp_dir=args["_temp_dir"],
        system_config=args["_system_config"],
        dashboard_host=args["dashboard_host"],
        dashboard_port=args["dashboard_port"],
        spilling_directory=args["object_spilling_directory"],
    )
    namespace, runtime_env, job_metadata, lifetime = job_settings(
        where, args["job_config"], args["namespace"], args["runtime_env"]
    )
    address, num_cpus, num_gpus, resources = (
        args["address"],
        args["num_cpus"],
        args["num_gpus"],
        args["resources"],
    )
    store_bytes = _check_init_args(
        address, num_cpus, num_gpus, resources, namespace, args["object_store_memory"]
    )
    labels = node_labels.check_node_labels(args["labels"], f"{where}: labels")
    if labels and address not in (None, "local"):
        raise ValueError(
            f"{where}: labels are given to a node this driver starts, not with address"
        )
    job_env, job_packages = _runtime_env.localize(renv.check(runtime_env, where))
    return _Prepared(
        config=Config.load(system_config),
        address=address,
        namespace=namespace,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        resources=resources,
        labels=labels,
        store_bytes=store_bytes,
        include_dashboard=bool(args["include_dashboard"]),
        log_to_driver=args["log_to_driver"],
        job_env=job_env,
        job_packages=job_packages,
        job_metadata=job_metadata,
        lifetime=lifetime,
        job_logging=_init_options.logging_config(where, args["logging_config"]),
    )


def init(
    address: str | None = None,
    *,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    labels: dict[str, str] | None = None,
    object_store_memory: float | None = None,
    namespace: str | None = None,
    log_to_driver: bool = True,
    ignore_reinit_error: bool = False,
    include_dashboard: bool | None = None,
    runtime_env: dict[str, Any] | None = None,
    logging_level: int | str | None = None,
    logging_format: str | None = None,
    logging_config: LoggingConfig | None = None,
    configure_logging: bool = True,
    local_mode: bool = False,
    job_config: JobConfig | None = None,
    dashboard_host: str | None = None,
    dashboard_port: int | None = None,
    object_spilling_directory: str | None = None,
    _system_config: dict[str, Any] | None = None,
    _temp_dir: str | None = None,
) -> InitContext:
    """Starts a local cluster (no ``address``) or joins one, and connects.

    ``runtime_env``: the job's environment, the default of its tasks and actors
    (see ``_private/runtime_env.py``). ``logging_level`` / ``logging_format``
    set up the ``runtime`` logger as Ray's ``ray`` one (left to the program
    when neither is given); ``_temp_dir``: where session folders go.

    The runtime runs on a loop of its own, on a daemon thread, even when this
    thread runs an event loop (a notebook kernel, a framework's start-up
    code): sync calls then work here, and ``await ref`` works on any loop.
    ``await runtime.init_async()`` attaches to the running loop instead.
    """
    global _driver
    args = dict(locals())  # (first: nothing else is local yet)
    if _context.current_or_none() is not None:
        return _repeated_init("init", ignore_reinit_error)
    prep = _prepare("init()", args)
    head, gcs_address = _start_processes(prep)
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
        worker = _make_worker(prep, gcs_address, raylet, node_id, store_socket)
        loop_thread = _LoopThread()
        loop_thread.run(_bind_and_start(worker))
        _runtime_env.upload(worker, prep.job_packages)
        dashboard = loop_thread.run(_dashboard_url(worker))
    except BaseException:
        if head is not None:
            head.stop()
        raise
    _driver = _Driver(worker, head, loop_thread, gcs_address, dashboard)
    _context.set_current(worker, head.session.path if head is not None else None)
    return init_context()


async def _bind_and_start(worker: CoreWorker) -> None:
    worker.bind(asyncio.get_running_loop())
    await worker.start()


async def _dashboard_url(worker: CoreWorker) -> str | None:
    """The cluster's dashboard (``host:port``), if one runs: it records itself in the gcs."""
    reply = await worker.gcs.kv_get(KvGetRequest(namespace="dashboard", key=b"url"))
    return reply.value.decode().removeprefix("http://") if reply.found else None


async def init_async(
    address: str | None = None,
    *,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    labels: dict[str, str] | None = None,
    object_store_memory: float | None = None,
    namespace: str | None = None,
    log_to_driver: bool = True,
    ignore_reinit_error: bool = False,
    include_dashboard: bool | None = None,
    runtime_env: dict[str, Any] | None = None,
    logging_level: int | str | None = None,
    logging_format: str | None = None,
    logging_config: LoggingConfig | None = None,
    configure_logging: bool = True,
    local_mode: bool = False,
    job_config: JobConfig | None = None,
    dashboard_host: str | None = None,
    dashboard_port: int | None = None,
    object_spilling_directory: str | None = None,
    _system_config: dict[str, Any] | None = None,
    _temp_dir: str | None = None,
) -> InitContext:
    """``init`` for asyncio programs: attaches to the running loop, fully started.

    Under trio (or anyio on trio) the runtime gets its own asyncio loop thread,
    started off this loop, as a sync ``init()`` does.
    """
    global _driver
    args = dict(locals())  # (first: nothing else is local yet)
    if _context.current_or_none() is not None:
        return _repeated_init("init_async", ignore_reinit_error)
    if not in_asyncio():
        return await _off_this_loop(functools.partial(init, **args))
    prep = _prepare("init_async()", args)
    loop = asyncio.get_running_loop()
    head, gcs_address = await loop.run_in_executor(None, _start_processes, prep)
    try:
        if head is not None:
            raylet, node_id = head.raylet_address, bytes.fromhex(head.raylet.info["node_id"])
            store_socket = head.raylet.info["store_socket"]
        else:
            node = await _find_raylet(gcs_address)
            raylet, node_id = (node.host, node.raylet_port), node.node_id
            store_socket = node.store_socket
        worker = _make_worker(prep, gcs_address, raylet, node_id, store_socket)
        worker.bind(loop)
        await worker.start()
        _runtime_env.upload(worker, prep.job_packages)
        dashboard = await _dashboard_url(worker)
    except BaseException:
        if head is not None:
            await loop.run_in_executor(None, head.stop)
        raise
    _driver = _Driver(worker, head, None, gcs_address, dashboard)
    _context.set_current(worker, head.session.path if head is not None else None)
    return init_context()


async def _off_this_loop(fn: Callable[[], T]) -> T:
    """Runs a blocking call on a thread of its own and awaits it on this loop
    (asyncio's or trio's)."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as e:
            future.set_exception(e)

    threading.Thread(target=run, name="runtime-start-stop", daemon=True).start()
    if in_asyncio():
        return await asyncio.wrap_future(future)
    return await await_future(future)


def _repeated_init(call: str, ignore_reinit_error: bool) -> InitContext:
    """``init()`` where the runtime runs already: in this driver, or in a task or
    actor (whose worker is always connected; it never starts a second cluster)."""
    if not ignore_reinit_error:
        where = (
            "this process is a worker, where the runtime is always initialized"
            if _driver is None
            else f"runtime.{call}() was already called; call runtime.shutdown() first"
        )
        raise RuntimeError(f"{where}; or pass ignore_reinit_error=True")
    return init_context()


def init_context() -> InitContext:
    """The context ``init()`` returns, for the runtime this process runs."""
    worker = _context.current()
    gcs = f"{worker.gcs_address[0]}:{worker.gcs_address[1]}"
    raylet = worker.raylet_address
    info = {
        "address": gcs,
        "gcs_address": gcs,
        "node_ip_address": worker.address[0],
        "raylet_ip_address": raylet[0],
        "raylet_address": f"{raylet[0]}:{raylet[1]}",
        "object_store_address": worker.store_socket,
        "node_id": worker.node_id.hex(),
        "session_dir": _context.session_dir(),
        "webui_url": _driver.dashboard_url if _driver is not None else None,
    }
    return InitContext(info, shutdown)


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
    auth.set_token(None)
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
        await _off_this_loop(shutdown)
        return
    _driver = None
    _context.set_current(None)
    auth.set_token(None)
    try:
        await driver.worker.stop()
    finally:
        if driver.head is not None:
            await asyncio.get_running_loop().run_in_executor(None, driver.head.stop)


def _auto_init() -> None:
    if not Config.load().auto_init:
        return  # the caller raises RuntimeNotInitializedError
    logger.info("runtime.init() was not called: starting a local cluster (auto-init)")
    init()


def _after_fork_in_child() -> None:
    """A forked child keeps none of its parent's runtime: not its cluster (it lets
    go of its copies of the ties, so the cluster lives as long as the parent; its
    exit stops nothing) nor its connections (the API refuses until init() here)."""
    global _driver
    driver, _driver = _driver, None
    if driver is not None and driver.head is not None:
        driver.head.release_ties()
    _context.forget_after_fork(os.getppid())


_context.set_auto_init(_auto_init)
atexit.register(shutdown)
os.register_at_fork(after_in_child=_after_fork_in_child)
