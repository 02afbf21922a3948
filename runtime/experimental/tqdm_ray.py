"""Progress bars for tasks and actors, drawn by their driver (Ray's ``ray.experimental.tqdm_ray``).

    from runtime.experimental.tqdm_ray import tqdm

    @runtime.remote
    def work(items):
        for item in tqdm(items, desc="work"):
            ...

In a task or an actor the bar is drawn on the driver's terminal, one per bar,
among the worker output it prints (see ``_private/progress_lines.py``); its
state travels at most once per ``flush_interval_s``, and when it closes. In a
driver it is tqdm's own bar.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm as _local_tqdm

from .. import api
from .._private import progress_lines


def _in_worker() -> bool:
    return api.is_initialized() and api.get_runtime_context().mode == "worker"


class tqdm:
    """A bar: iterate over it, or ``update(n)`` it; ``close()`` (or a ``with``) ends it."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        desc: str | None = None,
        total: float | None = None,
        unit: str | None = None,
        position: int | None = None,
        flush_interval_s: float = 1.0,
    ) -> None:
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self._iterable = iterable
        self._desc = desc or ""
        self._total = total
        self._unit = unit or "it"
        self._n: float = 0
        self._closed = False
        self._interval = float(flush_interval_s)
        self._last_flush = 0.0
        self._uuid = uuid.uuid4().hex
        self._local = (
            None
            if _in_worker()
            else _local_tqdm(total=total, desc=desc, unit=self._unit, position=position)
        )
        self._flush(force=True)

    def __iter__(self) -> Iterator[Any]:
        if self._iterable is None:
            raise TypeError("this bar was made without an iterable: call update(n) instead")
        try:
            for item in self._iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> tqdm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def n(self) -> float:
        return self._n

    def update(self, n: float = 1) -> None:
        self._n += n
        if self._local is not None:
            self._local.update(n)
        self._flush()

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self._desc = desc or ""
        if self._local is not None:
            self._local.set_description(desc, refresh=refresh)
        self._flush(force=refresh)

    def refresh(self) -> None:
        self._flush(force=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._local is not None:
            self._local.close()
        self._flush(force=True)

    def _flush(self, force: bool = False) -> None:
        if self._local is not None:
            return
        now = time.monotonic()
        if not force and now - self._last_flush < self._interval:
            return
        self._last_flush = now
        state = {
            "uuid": self._uuid,
            "desc": self._desc,
            "n": self._n,
            "total": self._total,
            "unit": self._unit,
            "closed": self._closed,
        }
        sys.stdout.write(progress_lines.state_line(state) + "\n")
        sys.stdout.flush()


def safe_print(*args: Any, **kwargs: Any) -> None:
    """``print``, kept apart from the bars (Ray's name: a worker's lines already are)."""
    print(*args, **kwargs)


__all__ = ["safe_print", "tqdm"]
