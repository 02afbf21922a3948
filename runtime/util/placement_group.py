"""Placement groups, as in Ray's ``ray.util.placement_group``: reserve bundles
of resources across nodes as one unit, then run tasks and actors in them
(``runtime.util.scheduling_strategies.PlacementGroupSchedulingStrategy``)."""

from ..api import (
    PlacementGroup,
    PlacementGroupID,
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)

__all__ = [
    "PlacementGroup",
    "PlacementGroupID",
    "get_current_placement_group",
    "get_placement_group",
    "placement_group",
    "placement_group_table",
    "remove_placement_group",
]
