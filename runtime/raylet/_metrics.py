"""The node's Prometheus metrics: resources, the object store, the scheduler's
queue, workers, and the user metrics its workers report.

A mixin of :class:`~._server.Raylet`: ``report_metrics`` takes a core
worker's user metrics (``runtime.util.metrics``) and ``_families`` builds
what the endpoint serves, on the raylet's loop (see ``_private/metrics.py``).

User metrics are summed over the workers that report them (counters and
histograms; a gauge shows the latest value set). Invariant: a dead worker's
counters and histograms stay in ``_retired`` so the sums never go down.
"""

from __future__ import annotations

import time
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from .._private import metrics
from .._private import resources as res
from ..protocol.rt import Empty, ReportMetricsRequest
from ._scheduler import LeaseScheduler, WorkerState
from ._worker_pool import WorkerPool
from .store import StoreServer

#: A metric's identity across workers: name, kind, tag keys, bounds.
_Key = tuple[str, str, tuple[str, ...], tuple[float, ...]]


class UserMetricTable:
    """The latest report of each worker, and what dead workers counted."""

    def __init__(self) -> None:
        self.reports: dict[bytes, tuple[float, list[metrics.UserMetric]]] = {}
        self._retired: dict[_Key, dict[tuple[str, ...], Any]] = {}
        self._docs: dict[str, str] = {}

    def report(self, worker_id: bytes, data: list[metrics.UserMetric]) -> None:
        self.reports[worker_id] = (time.time(), data)

    def worker_died(self, worker_id: bytes) -> None:
        report = self.reports.pop(worker_id, None)
        if report is None:
            return
        for name, kind, doc, keys, bounds, samples in report[1]:
            if kind != "gauge":
                self._docs[name] = doc
                _add(self._retired.setdefault((name, kind, keys, bounds), {}), kind, samples)

    def families(self) -> list[metrics.Family]:
        sums: dict[_Key, dict[tuple[str, ...], Any]] = {
            key: {t: _copy(v) for t, v in series.items()} for key, series in self._retired.items()
        }
        docs = dict(self._docs)
        for _, data in sorted(self.reports.values(), key=lambda r: r[0]):  # latest gauge wins
            for name, kind, doc, keys, bounds, samples in data:
                docs[name] = doc
                _add(sums.setdefault((name, kind, keys, bounds), {}), kind, samples)
        out = []
        seen: set[str] = set()
        for (name, kind, keys, bounds), series in sums.items():
            if name in seen:
                continue  # two definitions of one name across workers: the first is shown
            seen.add(name)
            family = metrics.Family(f"ray_{name}", kind, docs.get(name, ""), keys, buckets=bounds)
            for tags, value in series.items():
                if kind == "histogram":
                    family.samples.append((tags, value[0], value[1]))
                else:
                    family.add(tags, value)
            out.append(family)
        return out


def _add(series: dict[tuple[str, ...], Any], kind: str, samples: list[Any]) -> None:
    for sample in samples:
        tags = tuple(sample[0])
        if kind == "gauge":
            series[tags] = float(sample[1])
        elif kind == "counter":
            series[tags] = series.get(tags, 0.0) + float(sample[1])
        else:
            counts, total = series.get(tags, ([0] * len(sample[1]), 0.0))
            added = [a + b for a, b in zip(counts, sample[1], strict=True)]
            series[tags] = (added, total + sample[2])


def _copy(value: Any) -> Any:
    return (list(value[0]), value[1]) if isinstance(value, tuple) else value


class MetricsHandlers:
    scheduler: LeaseScheduler
    object_store: StoreServer
    user_metrics: UserMetricTable
    _pool: WorkerPool | None
    _drivers: dict[int, bytes]

    async def report_metrics(self, message: ReportMetricsRequest) -> Empty:
        reporter = message.worker_id
        if not (self.scheduler.live_worker(reporter) or reporter in self._drivers.values()):
            raise GRPCError(Status.PERMISSION_DENIED, "not a worker or driver of this node")
        try:
            data = metrics.decode_user_metrics(message.data)
        except ValueError as e:
            raise GRPCError(Status.INVALID_ARGUMENT, str(e)) from None
        self.user_metrics.report(message.worker_id, data)
        return Empty()

    def _families(self) -> list[metrics.Family]:
        scheduler, store = self.scheduler, self.object_store.store
        resources = metrics.Family(
            "ray_resources", "gauge", "Logical resources, used and available", ("Name", "State")
        )
        total, available = res.to_float(scheduler.total), res.to_float(scheduler.available)
        for name, amount in total.items():
            free = available.get(name, 0.0)
            resources.add((name, "AVAILABLE"), free)
            resources.add((name, "USED"), amount - free)
        memory = metrics.Family(
            "ray_object_store_memory", "gauge", "Object store bytes by location", ("Location",)
        )
        memory.add(("MMAP_SHM",), store.used)
        memory.add(("SPILLED",), store.spilled_bytes)
        states: dict[str, int] = {}
        for worker in scheduler.workers.values():
            if worker.state is not WorkerState.DEAD:
                states[worker.state.name] = states.get(worker.state.name, 0) + 1
        workers = metrics.Family("ray_workers", "gauge", "Worker processes by state", ("State",))
        for state, n in sorted(states.items()):
            workers.add((state,), n)
        queue = metrics.Family(
            "ray_scheduler_tasks", "gauge", "Lease requests by state at this node", ("State",)
        )
        infeasible = sum(1 for r in scheduler.queue if r.infeasible)
        queue.add(("PENDING",), len(scheduler.queue) - infeasible)
        queue.add(("INFEASIBLE",), infeasible)
        queue.add(("GRANTED",), len(scheduler.leases))
        return [
            resources,
            memory,
            _gauge("ray_object_store_available_memory", "Free object store bytes",
                   store.capacity - store.used),
            _gauge("ray_object_store_num_local_objects", "Objects in this node's store",
                   len(store.objects)),
            _counter("ray_spill_manager_spilled_bytes", "Bytes spilled to disk",
                     store.spilled_bytes_total),
            _counter("ray_spill_manager_restored_bytes", "Bytes restored from disk",
                     store.restored_bytes_total),
            workers,
            _counter("ray_internal_num_processes_started", "Worker processes started",
                     self._pool.started if self._pool is not None else 0),
            queue,
            *self.user_metrics.families(),
        ]  # fmt: skip


def _gauge(name: str, doc: str, value: float) -> metrics.Family:
    return metrics.Family(name, "gauge", doc, (), [((), value)])


def _counter(name: str, doc: str, value: float) -> metrics.Family:
    return metrics.Family(name, "counter", doc, (), [((), value)])
