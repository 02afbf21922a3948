"""How placement groups show as resources, as in Ray.

A committed bundle adds resources named after its group to its node:
``CPU_group_<i>_<pg>`` (bundle ``i`` of group ``pg``, the group id in hex) and
the wildcard ``CPU_group_<pg>`` (summed over the group's bundles on that
node), one pair per resource the bundle reserves, plus the markers
``bundle_group_<i>_<pg>`` and ``bundle_group_<pg>`` (``BUNDLE_UNITS`` each).
A task in a group asks for the same resources renamed, and a sliver of a
marker, so that even a task asking for nothing lands on the bundle's node.
Only tasks scheduled into the group ask for these names, so only they can use
what the group reserved.

Both the API (renaming a task's resources) and the raylets (adding a bundle's
resources, finding the leases of a removed group) use these names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

#: What each bundle's marker resource holds, and what one task asks of it.
BUNDLE_UNITS = 1000.0
TASK_MARKER = 0.001

_MARKER = "bundle"
_NAME = re.compile(r"^(?P<base>.+)_group_(?:(?P<index>\d+)_)?(?P<pg>[0-9a-f]{32})$")


def wildcard(name: str, pg: str) -> str:
    return f"{name}_group_{pg}"


def indexed(name: str, index: int, pg: str) -> str:
    return f"{name}_group_{index}_{pg}"


def bundle_resources(pg: str, index: int, resources: Mapping[str, float]) -> dict[str, float]:
    """What a committed bundle adds to its node (wildcards: this bundle's share)."""
    added: dict[str, float] = {}
    for name, amount in {**resources, _MARKER: BUNDLE_UNITS}.items():
        if amount:
            added[indexed(name, index, pg)] = amount
            added[wildcard(name, pg)] = amount
    return added


def task_resources(resources: Mapping[str, float], pg: str, index: int) -> dict[str, float]:
    """A task's resources renamed to run in group ``pg`` (bundle ``index``, or
    any with ``-1``): the wildcard always (so bundles are not overcommitted
    through it), the indexed name too when a bundle is named."""
    asked: dict[str, float] = {}
    for name, amount in {**resources, _MARKER: TASK_MARKER}.items():
        if not amount:
            continue
        asked[wildcard(name, pg)] = amount
        if index >= 0:
            asked[indexed(name, index, pg)] = amount
    return asked


def parse(name: str) -> tuple[str, int, str] | None:
    """``(base name, bundle index or -1, group hex)`` of a group resource, else None."""
    match = _NAME.match(name)
    if match is None:
        return None
    index = match.group("index")
    return match.group("base"), -1 if index is None else int(index), match.group("pg")


def is_group_resource(name: str) -> bool:
    return _NAME.match(name) is not None


def group_of(resources: Iterable[str]) -> tuple[str, int] | None:
    """The group (hex) and bundle index (-1: any) a task's resources ask for."""
    found: tuple[str, int] | None = None
    for name in resources:
        parsed = parse(name)
        if parsed is None or parsed[0] != _MARKER:
            continue
        _, index, pg = parsed
        if found is None or index >= 0:
            found = (pg, index)
    return found


def groups_in(resources: Iterable[str]) -> set[str]:
    """Every group (hex) named by these resources."""
    return {parsed[2] for parsed in map(parse, resources) if parsed is not None}


def base_amounts(resources: Mapping[str, float]) -> dict[str, float]:
    """A task's resources by their plain names (the wildcards; markers left out)."""
    plain: dict[str, float] = {}
    for name, amount in resources.items():
        parsed = parse(name)
        if parsed is None:
            plain[name] = amount
        elif parsed[1] < 0 and parsed[0] != _MARKER:
            plain[parsed[0]] = amount
    return plain
