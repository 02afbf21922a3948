"""Resource quantities in fixed point.

Quantities are kept as integers in units of 1/10000, as Ray does, so that
adding and subtracting fractional amounts (``num_cpus=0.1``) never drifts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping

UNIT = 10_000

#: A resource set in fixed point: name -> units.
Fixed = dict[str, int]


def finer_than_unit(amount: float) -> str:
    """Why a requested amount above 0 cannot be counted (it is less than one
    unit: it would count as nothing), or ""."""
    if 0 < amount < 1 / UNIT:
        return f"{amount!r} is below the smallest amount, 0.0001 (amounts are counted in 1/10000)"
    return ""


def to_fixed(resources: Mapping[str, float]) -> Fixed:
    return {name: round(amount * UNIT) for name, amount in resources.items() if amount}


def fixed_of(resources: Mapping[str, float], names: Iterable[str]) -> Fixed:
    """``to_fixed`` of only ``names`` (those present and not zero)."""
    return {name: round(resources[name] * UNIT) for name in names if resources.get(name)}


def to_float(resources: Mapping[str, int]) -> dict[str, float]:
    return {name: units / UNIT for name, units in resources.items()}


def fits(available: Mapping[str, int], request: Mapping[str, int]) -> bool:
    return all(available.get(name, 0) >= units for name, units in request.items())


def subtract(available: Fixed, request: Mapping[str, int]) -> None:
    for name, units in request.items():
        available[name] = available.get(name, 0) - units


def add(available: Fixed, request: Mapping[str, int]) -> None:
    for name, units in request.items():
        available[name] = available.get(name, 0) + units


def describe(resources: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k!r}: {v:g}" for k, v in sorted(resources.items())) + "}"


#: The most of any resource one request may name (a node of a million CPUs
#: with a terabyte-sized object store still fits; 1e18 does not).
MAX_AMOUNT = 1e15


def invalid(resources: Mapping[str, float], *, allow_negative: bool = False) -> str:
    """Why a resource set sent over the wire cannot be accounted, or "".

    Amounts must be finite, not negative (unless ``allow_negative``: a node's
    free resources may dip below zero for a while) and at most ``MAX_AMOUNT``;
    names must be non-empty."""
    for name, amount in resources.items():
        if not name:
            return "a resource has an empty name"
        if not math.isfinite(amount) or abs(amount) > MAX_AMOUNT:
            return f"resource {name!r} has an amount out of range: {amount!r}"
        if amount < 0 and not allow_negative:
            return f"resource {name!r} has a negative amount: {amount!r}"
    return ""


def encode_sets(available: Mapping[str, float], total: Mapping[str, float]) -> bytes:
    """A node's free and total resources as reports and views carry them: one
    JSON object (see ``ReportResourcesRequest`` in proto/gcs.proto for why)."""
    sets = {"available": dict(available), "total": dict(total)}
    return json.dumps(sets, separators=(",", ":")).encode()


def decode_sets(raw: bytes) -> tuple[dict[str, float], dict[str, float]]:
    """``(available, total)`` from ``encode_sets``'s form; ValueError saying
    what is wrong with one that is not (amounts are checked by ``invalid``)."""
    try:
        sets = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"resources are not a JSON object: {e}") from None
    if not isinstance(sets, dict):
        raise ValueError("resources are not a JSON object")
    found: list[dict[str, float]] = []
    for key in ("available", "total"):
        part = sets.get(key, {})
        if not isinstance(part, dict) or not all(
            type(amount) in (int, float) for amount in part.values()
        ):
            raise ValueError(f"resources[{key!r}] must map names to numbers")
        found.append({name: float(amount) for name, amount in part.items()})
    return found[0], found[1]
