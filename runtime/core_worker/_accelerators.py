"""The GPUs a worker's task may see: ``CUDA_VISIBLE_DEVICES``, as in Ray.

The raylet gives each lease GPU ids (indexes into the node's GPUs) and never
gives one worker leases with different ids, so the variable, which CUDA
libraries read once per process, stays true for the worker's life. A task
with no GPUs sees none (the variable is empty), as in Ray.
"""

from __future__ import annotations

import os

ENV = "CUDA_VISIBLE_DEVICES"

# The devices the node was started with, if it was told: ids index this list
# (so what a task sees is a subset of it, as in Ray).
_STARTED_WITH = [d for d in os.environ.get(ENV, "").split(",") if d.strip()]


def read_start_environment() -> None:
    """Reads the devices again, from the environment as it is now: a worker
    forked by the template imported this module before its own environment
    was set."""
    global _STARTED_WITH
    _STARTED_WITH = [d for d in os.environ.get(ENV, "").split(",") if d.strip()]


def device_names(ids: tuple[int, ...]) -> list[str]:
    """The device names of GPU ids, as ``CUDA_VISIBLE_DEVICES`` lists them."""
    return [_STARTED_WITH[i] if i < len(_STARTED_WITH) else str(i) for i in ids]


class VisibleDevices:
    """The GPU ids of the task running here, mirrored into the environment."""

    def __init__(self) -> None:
        self.ids: tuple[int, ...] | None = None  # None: no task has run yet

    def set(self, ids: tuple[int, ...]) -> None:
        if ids == self.ids:
            return
        self.ids = ids
        os.environ[ENV] = ",".join(device_names(ids))

    def gpu_ids(self) -> list[int] | list[str]:
        """Ray's ``get_gpu_ids()``: ints when the names are numbers."""
        names = device_names(self.ids or ())
        if all(name.isdigit() for name in names):
            return [int(name) for name in names]
        return names
