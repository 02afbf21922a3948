"""Placement groups, as in Ray's ``ray.util.placement_group``.

``placement_group(bundles, strategy)`` asks the gcs to reserve every bundle
(a dict of resources) at once across the nodes; tasks and actors then run in
a bundle through ``PlacementGroupSchedulingStrategy``. Creating returns at
once; ``pg.ready()`` is a ref that resolves to the group when it is placed
(awaitable, usable with ``get`` and ``wait``), and ``pg.wait(timeout)`` says
whether it was placed in time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import numbers
from typing import Any

from .. import exceptions
from .._private import labels as node_labels
from .._private import placement
from .._private.ids import random_id
from .._private.resources import finer_than_unit
from ..core_worker import check_blocking_allowed
from ..protocol.rt import (
    Bundle,
    CreatePlacementGroupReply,
    Empty,
    PlacementGroupInfo,
    PlacementGroupRequest,
    PlacementGroupState,
    PlacementStrategy,
)
from . import _context
from ._ids import PlacementGroupID

logger = logging.getLogger("runtime")

STRATEGIES = {
    "PACK": PlacementStrategy.PACK,
    "SPREAD": PlacementStrategy.SPREAD,
    "STRICT_PACK": PlacementStrategy.STRICT_PACK,
    "STRICT_SPREAD": PlacementStrategy.STRICT_SPREAD,
}


class PlacementGroup:
    """A handle to a placement group; pickles, so tasks and actors can take it."""

    def __init__(self, id: PlacementGroupID, bundle_cache: list[dict[str, float]] | None = None):
        self.id = id
        self._bundles = bundle_cache

    @property
    def bundle_specs(self) -> list[dict[str, float]]:
        """Each bundle's resources, in order."""
        if self._bundles is None:
            info = _info(self.id)
            if info is None:
                raise ValueError(f"placement group {self.id.hex()} does not exist")
            self._bundles = _bundles_of(info)
        return [dict(b) for b in self._bundles]

    @property
    def bundle_count(self) -> int:
        return len(self.bundle_specs)

    def ready(self) -> Any:
        """A ref that resolves to this group once every bundle is reserved (it
        raises ``TaskPlacementGroupRemoved`` if the group is removed first)."""
        worker = _context.current_or_init()
        pg_id = self.id.binary()

        async def placed() -> PlacementGroup:
            if _heard_placed(worker, pg_id):
                return self
            reply = await worker.gcs.wait_placement_group(
                PlacementGroupRequest(placement_group_id=pg_id, timeout_s=-1)
            )
            if not reply.found or reply.state is not PlacementGroupState.CREATED:
                raise exceptions.TaskPlacementGroupRemoved(
                    f"placement group {pg_id.hex()} was removed before it was ready"
                )
            return self

        return worker.objects.promise(placed, f"placement group {self.id.hex()[:12]} ready()")

    def wait(self, timeout_seconds: float = 30) -> bool:
        """Waits up to ``timeout_seconds`` for the group to be placed; whether it is."""
        _number("timeout_seconds", timeout_seconds)
        check_blocking_allowed("PlacementGroup.wait", "await pg.ready()", _context.runtime_loop())
        worker = _context.current_or_init()
        if _heard_placed(worker, self.id.binary()):
            return True
        request = PlacementGroupRequest(
            placement_group_id=self.id.binary(), timeout_s=float(timeout_seconds)
        )
        reply = worker.bridge.run_blocking(worker.gcs.wait_placement_group(request))
        return reply.found and reply.state is PlacementGroupState.CREATED

    @property
    def is_empty(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"PlacementGroup({self.id.hex()})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (PlacementGroup, (self.id, self._bundles))


def placement_group(
    bundles: list[dict[str, float]],
    strategy: str = "PACK",
    name: str = "",
    lifetime: str | None = None,
    bundle_label_selector: list[dict[str, str]] | None = None,
) -> PlacementGroup:
    """Reserves ``bundles`` across the cluster by ``strategy`` (PACK, SPREAD,
    STRICT_PACK or STRICT_SPREAD); returns at once. A group with no
    ``lifetime`` ends with the job; ``lifetime="detached"`` outlives it.
    ``bundle_label_selector``: one label selector per bundle, which only a node
    whose labels match may hold (as a task's ``label_selector``)."""
    specs = _check_bundles(bundles)
    selectors = _check_selectors(bundle_label_selector, len(specs))
    if strategy not in STRATEGIES:
        raise ValueError(
            f"invalid placement group strategy {strategy!r}; valid ones are "
            + ", ".join(STRATEGIES)
        )
    if not isinstance(name, str):
        raise TypeError(f"placement group name must be a str, got {type(name).__name__}")
    if lifetime not in (None, "detached"):
        raise ValueError(f"placement group lifetime must be None or 'detached', got {lifetime!r}")
    worker = _context.current_or_init()
    worker.check_cluster()
    pg_id = random_id(16)
    info = PlacementGroupInfo(
        placement_group_id=pg_id,
        name=name,
        namespace=worker.namespace,
        strategy=STRATEGIES[strategy],
        bundles=[
            Bundle(index=i, resources=b, label_selector=selectors[i]) for i, b in enumerate(specs)
        ],
        job_id=worker.job_id,
        detached=lifetime == "detached",
    )
    registered: concurrent.futures.Future[CreatePlacementGroupReply] = concurrent.futures.Future()

    async def create() -> None:
        try:
            reply = await worker.gcs.create_placement_group(info)
        except BaseException as e:
            registered.set_exception(e)
            raise
        registered.set_result(reply)
        if not reply.ok and not waited:
            logger.error("placement group %r was not created: %s", name, reply.error)
        if reply.warning:
            # As Ray warns of a request no node can hold; the group waits for one.
            logger.warning(
                "placement group %s cannot be placed: %s; it waits for nodes that fit",
                name or pg_id.hex(),
                reply.warning,
            )

    # A named group's creator waits for the gcs's answer (off the runtime's
    # loop), so that a name already taken raises here. An unnamed one's need
    # not: the gcs holds a wait or a removal of a group it does not know yet
    # until its creation arrives.
    waited = bool(name) and not _on_runtime_loop()
    worker.post(_spawn, worker, create())
    if waited:
        reply = registered.result()
        if not reply.ok:
            raise ValueError(reply.error)
    return PlacementGroup(PlacementGroupID(pg_id), specs)


def remove_placement_group(placement_group: PlacementGroup) -> None:
    """Removes the group, asynchronously (as in Ray): its actors and tasks are
    killed, its resources freed. This process's later reads of groups, new
    groups and actor calls come after the removal."""
    if not isinstance(placement_group, PlacementGroup):
        raise TypeError(
            f"remove_placement_group() takes a PlacementGroup, got {type(placement_group).__name__}"
        )
    worker = _context.current_or_init()
    pg_id = placement_group.id.binary()
    # Marked from this thread (one dict store): its next wait must not answer
    # from the announcement that the group was placed.
    worker.cluster.group_states[pg_id] = PlacementGroupState.REMOVED
    worker.post(worker.cluster.removing, pg_id)
    # As Ray documents it, asynchronous: this process's later reads of groups,
    # creations and actor calls wait for the gcs's answer; nothing else does.
    worker.post(worker.gcs.remove_placement_group_soon, pg_id)


def get_placement_group(placement_group_name: str) -> PlacementGroup:
    """The named group of this job's namespace; ValueError if there is none."""
    if not isinstance(placement_group_name, str) or not placement_group_name:
        raise TypeError("get_placement_group() takes the group's name, a non-empty str")
    check_blocking_allowed(
        "util.get_placement_group",
        "await asyncio.to_thread(runtime.util.get_placement_group, name)",
        _context.runtime_loop(),
    )
    worker = _context.current_or_init()
    request = PlacementGroupRequest(name=placement_group_name, namespace=worker.namespace)
    reply = worker.bridge.run_blocking(worker.gcs.get_placement_group(request))
    info = reply.placement_group
    if not reply.found or info is None or info.state is PlacementGroupState.REMOVED:
        raise ValueError(f"Failed to look up placement group with name: {placement_group_name}")
    return PlacementGroup(PlacementGroupID(info.placement_group_id), _bundles_of(info))


def placement_group_table(placement_group: PlacementGroup | None = None) -> dict[str, Any]:
    """Ray's table: one group's row, or every group's by id (hex)."""
    check_blocking_allowed(
        "util.placement_group_table",
        "await asyncio.to_thread(runtime.util.placement_group_table)",
        _context.runtime_loop(),
    )
    worker = _context.current_or_init()
    if placement_group is not None:
        info = _info(placement_group.id)
        return _row(info) if info is not None else {}
    reply = worker.bridge.run_blocking(worker.gcs.list_placement_groups(Empty()))
    return {i.placement_group_id.hex(): _row(i) for i in reply.placement_groups}


def get_current_placement_group() -> PlacementGroup | None:
    """The group the calling task or actor runs in; None in a driver or outside one."""
    current = _context.placement_here()
    if current is None:
        return None
    return PlacementGroup(PlacementGroupID(bytes.fromhex(current[0])))


# -- helpers ------------------------------------------------------------------------------


def _spawn(worker: Any, coro: Any) -> None:
    worker.background.spawn(coro)


def _on_runtime_loop() -> bool:
    """Whether the caller runs on the loop that hosts the runtime (it must not block)."""
    try:
        return asyncio.get_running_loop() is _context.runtime_loop()
    except RuntimeError:
        return False


def _heard_placed(worker: Any, pg_id: bytes) -> bool:
    """Whether the gcs told this driver the group is placed (its job's groups'
    states reach it as they change; a worker asks instead)."""
    return worker.cluster.group_states.get(pg_id) is PlacementGroupState.CREATED


def _info(pg_id: PlacementGroupID) -> PlacementGroupInfo | None:
    check_blocking_allowed(
        "PlacementGroup.bundle_specs",
        "await asyncio.to_thread(lambda: pg.bundle_specs)",
        _context.runtime_loop(),
    )
    worker = _context.current_or_init()
    request = PlacementGroupRequest(placement_group_id=pg_id.binary())
    reply = worker.bridge.run_blocking(worker.gcs.get_placement_group(request))
    return reply.placement_group if reply.found else None


def _bundles_of(info: PlacementGroupInfo) -> list[dict[str, float]]:
    return [dict(b.resources) for b in sorted(info.bundles, key=lambda b: b.index)]


def _row(info: PlacementGroupInfo) -> dict[str, Any]:
    strategy = {v: k for k, v in STRATEGIES.items()}[info.strategy]
    return {
        "placement_group_id": info.placement_group_id.hex(),
        "name": info.name,
        "namespace": info.namespace,
        "bundles": {b.index: dict(b.resources) for b in info.bundles},
        "bundles_to_node_id": {b.index: b.node_id.hex() for b in info.bundles if b.node_id},
        "strategy": strategy,
        "state": info.state.name,
        "job_id": info.job_id,
        "detached": info.detached,
        "stats": {"scheduling_state": info.pending_reason or info.state.name},
    }


def _number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    finer = finer_than_unit(float(value))
    if finer:
        raise ValueError(f"{name}: {finer}")


def _check_selectors(selectors: Any, count: int) -> list[dict[str, str]]:
    if selectors is None:
        return [{} for _ in range(count)]
    if not isinstance(selectors, list | tuple) or len(selectors) != count:
        raise ValueError(
            f"bundle_label_selector must be a list of one label selector per bundle "
            f"({count}), got {selectors!r}"
        )
    return [
        node_labels.check_selector(s, f"bundle_label_selector[{i}]")
        for i, s in enumerate(selectors)
    ]


def _check_bundles(bundles: Any) -> list[dict[str, float]]:
    if not isinstance(bundles, list | tuple) or not bundles:
        raise ValueError("placement group bundles must be a non-empty list of resource dicts")
    specs: list[dict[str, float]] = []
    for index, bundle in enumerate(bundles):
        if not isinstance(bundle, dict):
            raise ValueError(f"bundle {index} must be a dict of resources, got {bundle!r}")
        spec: dict[str, float] = {}
        for key, amount in bundle.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"bundle {index}: resource names must be non-empty str")
            if placement.is_group_resource(key):
                raise ValueError(f"bundle {index}: {key!r} names a placement group's resource")
            _number(f"bundle {index}[{key!r}]", amount)
            if amount:
                spec[key] = float(amount)
        if not spec:
            raise ValueError(
                f"bundle {index} reserves nothing: a bundle needs a resource above 0, "
                f"got {bundle!r}"
            )
        specs.append(spec)
    return specs
