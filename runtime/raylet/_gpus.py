"""Which GPU ids a node's leases hold.

The node's ``GPU`` total is split into instances, one per id, each of one
whole GPU (a fractional total's remainder is a last, smaller instance). As
in Ray, a request of one or more whole GPUs takes that many wholly free ids;
a fractional request shares one id with others, and is packed onto the
fullest id that still has room, so whole ids stay free for whole requests.

Quantities are fixed point (see ``_resources``). Invariant: for every id,
its free units plus the units every lease holds on it equal its capacity.
"""

from __future__ import annotations

from .._private.resources import UNIT

#: GPU units held on each id: id -> units.
Assignment = dict[int, int]


def instances(total_units: int) -> list[int]:
    """The capacity of each GPU id of a node with ``total_units`` of GPU."""
    whole, rest = divmod(total_units, UNIT)
    return [UNIT] * whole + ([rest] if rest else [])


def pick(free: list[int], units: int) -> Assignment | None:
    """The ids a request of ``units`` would take from ``free`` (None: none fit)."""
    if units <= 0:
        return {}
    if units >= UNIT:
        wanted = -(-units // UNIT)
        ids = [i for i, left in enumerate(free) if left == UNIT][:wanted]
        if len(ids) < wanted:
            return None
        return {i: UNIT for i in ids}
    fitting = [i for i, left in enumerate(free) if left >= units]
    if not fitting:
        return None
    best = min(fitting, key=lambda i: (free[i], i))
    return {best: units}


def take(free: list[int], assignment: Assignment) -> None:
    for i, units in assignment.items():
        free[i] -= units


def give(free: list[int], assignment: Assignment) -> None:
    for i, units in assignment.items():
        free[i] += units
