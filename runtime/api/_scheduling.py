"""Scheduling strategies, as in Ray's ``ray.util.scheduling_strategies``.

Pass one as the ``scheduling_strategy`` option of a task or an actor:
``"DEFAULT"`` (this node first, else a node with room), ``"SPREAD"``
(round-robin over the nodes that fit), a
:class:`NodeAffinitySchedulingStrategy` naming a node, a
``NodeLabelSchedulingStrategy`` (``_label_strategy.py``) by the nodes' labels,
or a :class:`PlacementGroupSchedulingStrategy` naming a placement group (and a
bundle). A task in a group asks for the group's resources instead of the
node's (see ``_private.placement``), so the ordinary scheduling finds the
bundle's node and nothing outside the group can use what it reserved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._private import placement
from .._private.resources import UNIT
from .._private.task_wire import Placement
from ..protocol.rt import LabelSelector, SchedulingStrategy, StrategyKind
from ._ids import NodeID
from ._label_strategy import NodeLabelSchedulingStrategy
from ._placement_group import PlacementGroup


@dataclass(frozen=True)
class NodeAffinitySchedulingStrategy:
    """Run on the node ``node_id`` (hex, as ``runtime.nodes()`` and
    ``get_runtime_context().get_node_id()`` give it, or a ``NodeID``).

    If that node is dead or cannot fit the task: with ``soft=False`` the task
    fails with ``TaskUnschedulableError`` (an actor with
    ``ActorUnschedulableError``); with ``soft=True`` it runs elsewhere.
    """

    node_id: str
    soft: bool

    def __post_init__(self) -> None:
        if isinstance(self.node_id, NodeID):  # (Ray takes the id object too)
            object.__setattr__(self, "node_id", self.node_id.hex())
        if not isinstance(self.node_id, str):
            raise TypeError(
                "NodeAffinitySchedulingStrategy: node_id must be a hex str or a NodeID, got "
                f"{type(self.node_id).__name__}"
            )
        try:
            raw = bytes.fromhex(self.node_id)
        except ValueError:
            raw = b""
        if len(raw) != 16:
            raise ValueError(
                f"NodeAffinitySchedulingStrategy: {self.node_id!r} is not a node id "
                "(32 hex digits, as runtime.nodes() gives them)"
            )
        if not isinstance(self.soft, bool):
            raise TypeError("NodeAffinitySchedulingStrategy: soft must be a bool")


class PlacementGroupSchedulingStrategy:
    """Run in ``placement_group``: in bundle ``placement_group_bundle_index``,
    or any of its bundles with -1. With ``placement_group_capture_child_tasks``
    the tasks and actors it starts run in the group too (unless they are told
    otherwise). A ``placement_group`` of None means no group."""

    def __init__(
        self,
        placement_group: PlacementGroup | None,
        placement_group_bundle_index: int = -1,
        placement_group_capture_child_tasks: bool | None = None,
    ) -> None:
        if placement_group is not None and not isinstance(placement_group, PlacementGroup):
            raise TypeError(
                "PlacementGroupSchedulingStrategy: placement_group must be a PlacementGroup "
                f"(from runtime.util.placement_group), got {type(placement_group).__name__}"
            )
        _bundle_index(placement_group_bundle_index)
        if placement_group_capture_child_tasks not in (None, True, False):
            raise TypeError(
                "PlacementGroupSchedulingStrategy: placement_group_capture_child_tasks must be "
                "a bool or None"
            )
        self.placement_group = placement_group
        self.placement_group_bundle_index = placement_group_bundle_index
        self.placement_group_capture_child_tasks = placement_group_capture_child_tasks

    def __repr__(self) -> str:
        return (
            f"PlacementGroupSchedulingStrategy({self.placement_group!r}, "
            f"bundle_index={self.placement_group_bundle_index})"
        )


def _bundle_index(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"placement_group_bundle_index must be an int, got {value!r}")
    if value < -1:
        raise ValueError(f"placement_group_bundle_index must be >= -1, got {value}")


def check(name: str, value: Any) -> None:
    """Validates a ``scheduling_strategy`` option."""
    if value is None or value in ("DEFAULT", "SPREAD"):
        return
    if isinstance(
        value,
        NodeAffinitySchedulingStrategy
        | PlacementGroupSchedulingStrategy
        | NodeLabelSchedulingStrategy,
    ):
        return
    raise ValueError(
        f"option {name!r} must be 'DEFAULT', 'SPREAD', a NodeAffinitySchedulingStrategy, a "
        f"NodeLabelSchedulingStrategy or a PlacementGroupSchedulingStrategy, got {value!r}"
    )


def check_placement_group(name: str, value: Any) -> None:
    """Validates the older ``placement_group`` option ("default", None or a group)."""
    if value is None or value == "default" or isinstance(value, PlacementGroup):
        return
    raise TypeError(f"option {name!r} must be a PlacementGroup, None or 'default', got {value!r}")


def check_bundle_index(name: str, value: Any) -> None:
    _bundle_index(value)


def check_capture(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"option {name!r} must be a bool, got {type(value).__name__}")


def resolve(
    options: Mapping[str, Any], resources: dict[str, float], current: Placement | None, what: str
) -> tuple[dict[str, float], SchedulingStrategy | None, Placement | None]:
    """A task's or actor's resources, wire strategy and placement group.

    In a group, the resources are renamed to the group's; ``current`` is the
    group of the calling task, which its children join when it captures them
    and they name no strategy of their own."""
    strategy = options.get("scheduling_strategy")
    selector = options.get("label_selector")
    fallback = options.get("fallback_strategy")
    legacy = options.get("placement_group", "default")
    if strategy is None and legacy != "default":
        strategy = PlacementGroupSchedulingStrategy(
            legacy,
            options.get("placement_group_bundle_index", -1),
            options.get("placement_group_capture_child_tasks"),
        )
    if isinstance(strategy, NodeLabelSchedulingStrategy):
        if selector or fallback:
            raise ValueError(
                f"{what}: a NodeLabelSchedulingStrategy says which nodes by their labels "
                "already: give it, or label_selector and fallback_strategy, not both"
            )
        selector, fallback_selectors = strategy.selectors()
        fallback = [{"label_selector": s} for s in fallback_selectors]
        strategy = None
    if (selector or fallback) and (
        isinstance(strategy, PlacementGroupSchedulingStrategy) or legacy not in (None, "default")
    ):
        raise ValueError(
            f"{what}: label_selector and fallback_strategy do not combine with a placement "
            "group (its bundles decide where it runs)"
        )
    if selector or fallback:
        message = to_message(strategy) or SchedulingStrategy(kind=StrategyKind.DEFAULT)
        message.label_selector = dict(selector or {})
        message.fallback = [
            LabelSelector(conditions=dict(entry["label_selector"])) for entry in fallback or ()
        ]
        return resources, message, None
    if strategy is None and current is not None and current[2]:
        pg_hex = current[0]
        return placement.task_resources(resources, pg_hex, -1), None, (pg_hex, -1, True)
    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        group = strategy.placement_group
        if group is None:
            return resources, None, None
        index = strategy.placement_group_bundle_index
        _check_fits(group, index, resources, what)
        pg_hex = group.id.hex()
        capture = bool(strategy.placement_group_capture_child_tasks)
        return placement.task_resources(resources, pg_hex, index), None, (pg_hex, index, capture)
    return resources, to_message(strategy), None


def _check_fits(group: PlacementGroup, index: int, resources: dict[str, float], what: str) -> None:
    """A bundle index in range, and a request that some bundle (or the named one) holds."""
    bundles = group.bundle_specs
    if index >= len(bundles):
        raise ValueError(
            f"{what}: placement_group_bundle_index {index} is out of range: the group has "
            f"{len(bundles)} bundle(s) (indexes 0..{len(bundles) - 1}, or -1 for any)"
        )
    candidates = [bundles[index]] if index >= 0 else bundles
    asked = {k: round(v * UNIT) for k, v in resources.items()}
    for bundle in candidates:
        if all(round(bundle.get(k, 0.0) * UNIT) >= v for k, v in asked.items()):
            return
    where = f"bundle {index} {bundles[index]}" if index >= 0 else f"any of its bundles {bundles}"
    raise ValueError(
        f"{what} asks for {resources}, which does not fit in {where} of placement group "
        f"{group.id.hex()}"
    )


def to_message(value: Any) -> SchedulingStrategy | None:
    """The wire form of a validated strategy (None for the default)."""
    if value is None or value == "DEFAULT":
        return None
    if value == "SPREAD":
        return SchedulingStrategy(kind=StrategyKind.SPREAD)
    assert isinstance(value, NodeAffinitySchedulingStrategy)
    return SchedulingStrategy(
        kind=StrategyKind.NODE_AFFINITY, node_id=bytes.fromhex(value.node_id), soft=value.soft
    )
