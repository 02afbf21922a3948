"""Resource quantities in fixed point.

Quantities are kept as integers in units of 1/10000, as Ray does, so that
adding and subtracting fractional amounts (``num_cpus=0.1``) never drifts.
"""

from __future__ import annotations

from collections.abc import Mapping

UNIT = 10_000

#: A resource set in fixed point: name -> units.
Fixed = dict[str, int]


def to_fixed(resources: Mapping[str, float]) -> Fixed:
    return {name: round(amount * UNIT) for name, amount in resources.items() if amount}


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
