"""How a benchmark row is printed and recorded."""

from __future__ import annotations

import statistics
from typing import Any


def report(name: str, rates: list[float]) -> dict[str, Any]:
    """Prints a row as Ray does (``NAME per second MEAN +- STD``) and returns it."""
    mean = statistics.mean(rates)
    std = statistics.pstdev(rates) if len(rates) > 1 else 0.0
    print(f"{name} per second {mean:.2f} +- {std:.2f}", flush=True)
    return {"name": name, "mean": mean, "std": std}
