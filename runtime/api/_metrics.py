"""Ray's user-defined metrics (``runtime.util.metrics``): Counter, Gauge, Histogram.

Recorded in the process that records them (a driver, a task, an actor) and
exported, with a ``ray_`` prefix as Ray's are, by that node's raylet on its
Prometheus endpoint. Bad names, tags and values are refused at the call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .._private import metrics
from ..core_worker import CoreWorker
from . import _context


class Metric:
    _kind = ""

    def __init__(
        self,
        name: str,
        description: str = "",
        tag_keys: tuple[str, ...] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("a metric needs a non-empty name")
        if not metrics.NAME_RE.match(name):
            raise ValueError(
                f"metric name {name!r} is not valid: use letters, digits, '_' and ':' "
                "(not starting with a digit)"
            )
        if not isinstance(description, str):
            raise TypeError(f"description must be a str, got {type(description).__name__}")
        if tag_keys is None:
            tag_keys = ()
        if not isinstance(tag_keys, tuple):
            raise TypeError(f"tag_keys must be a tuple of str, got {type(tag_keys).__name__}")
        for key in tag_keys:
            if not isinstance(key, str) or not metrics.NAME_RE.match(key):
                raise ValueError(f"tag key {key!r} is not a valid label name")
        self._name = name
        self._description = description
        self._tag_keys = tag_keys
        self._default_tags: dict[str, str] = {}
        self._boundaries: tuple[float, ...] = ()
        self._registered: CoreWorker | None = None

    @property
    def info(self) -> dict[str, Any]:
        return {
            "name": self._name,
            "description": self._description,
            "tag_keys": self._tag_keys,
            "default_tags": dict(self._default_tags),
        }

    def set_default_tags(self, default_tags: dict[str, str]) -> Metric:
        """Tags used when a record does not give them (as Ray's)."""
        self._check_tags(default_tags, complete=False)
        self._default_tags = dict(default_tags)
        return self

    def _check_tags(self, tags: Any, complete: bool) -> tuple[str, ...]:
        if not isinstance(tags, dict):
            raise TypeError(f"tags must be a dict of str to str, got {type(tags).__name__}")
        unknown = [k for k in tags if k not in self._tag_keys]
        if unknown:
            raise ValueError(
                f"metric {self._name!r}: unrecognized tag keys {unknown}; "
                f"its tag keys are {self._tag_keys}"
            )
        for key, value in tags.items():
            if not isinstance(value, str):
                raise TypeError(f"tag {key!r} must be a str, got {type(value).__name__}")
        if not complete:
            return ()
        missing = [k for k in self._tag_keys if k not in tags]
        if missing:
            raise ValueError(f"metric {self._name!r}: missing value for tag key(s) {missing}")
        return tuple(tags[k] for k in self._tag_keys)

    def _record(self, value: Any, tags: dict[str, str] | None) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"a metric's value must be a number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise ValueError(f"a metric's value must be finite, got {value}")
        merged = {**self._default_tags, **(tags or {})}
        values = self._check_tags(merged, complete=True)
        worker = _context.current()
        if self._registered is not worker:
            kind, bounds = self._kind, self._boundaries
            worker.user_metrics.define(self._name, kind, self._description, self._tag_keys, bounds)
            self._registered = worker
        worker.user_metrics.record(self._name, values, float(value))


class Counter(Metric):
    """A count that only goes up (``inc``)."""

    _kind = "counter"

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
            raise ValueError(f"a counter only goes up: inc() needs a value > 0, got {value}")
        self._record(value, tags)


class Gauge(Metric):
    """A value that is set (``set``): the last one is exported."""

    _kind = "gauge"

    def set(self, value: float | None, tags: dict[str, str] | None = None) -> None:
        if value is None:
            return  # as Ray: nothing recorded
        self._record(value, tags)


class Histogram(Metric):
    """Observations counted into buckets (``observe``)."""

    _kind = "histogram"

    def __init__(
        self,
        name: str,
        description: str = "",
        boundaries: Sequence[float] | None = None,
        tag_keys: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__(name, description, tag_keys)
        if not boundaries:
            raise ValueError("a Histogram needs boundaries: its buckets' upper bounds")
        bounds = list(boundaries)
        for b in bounds:
            if isinstance(b, bool) or not isinstance(b, int | float) or not math.isfinite(b):
                raise TypeError(f"boundaries must be finite numbers, got {b!r}")
            if b <= 0:
                raise ValueError(f"boundaries must be > 0, got {b}")
        if bounds != sorted(set(bounds)):
            raise ValueError(f"boundaries must be strictly increasing, got {bounds}")
        self._boundaries = tuple(float(b) for b in bounds)

    @property
    def info(self) -> dict[str, Any]:
        return {**super().info, "boundaries": list(self._boundaries)}

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        self._record(value, tags)
