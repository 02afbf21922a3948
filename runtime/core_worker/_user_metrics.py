"""User-defined metrics of this process (``runtime.util.metrics``), sent to its raylet.

Metrics are recorded from any thread (user code), under one lock, into plain
tables; every ``metrics_report_interval_s`` the loop sends the whole table to
the node's raylet, which exports it with the node's own metrics. Nothing is
sent by a process that defined no metric.

Invariant: a name has one definition (kind, tag keys, boundaries) per
process; a second definition must match it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._private import metrics, rpc
from ..protocol.rt import ReportMetricsRequest

if TYPE_CHECKING:
    from ._core_worker import CoreWorker


@dataclass
class _Metric:
    kind: str
    description: str
    tag_keys: tuple[str, ...]
    boundaries: tuple[float, ...]
    # Tag values -> value (counters, gauges) or [per-bucket counts, sum] (histograms).
    series: dict[tuple[str, ...], Any] = field(default_factory=dict)


class UserMetrics:
    def __init__(self, worker: CoreWorker) -> None:
        self._worker = worker
        self._lock = threading.Lock()
        self._metrics: dict[str, _Metric] = {}
        self._reporter: asyncio.Task[None] | None = None

    def define(
        self,
        name: str,
        kind: str,
        description: str,
        tag_keys: tuple[str, ...],
        boundaries: tuple[float, ...] = (),
    ) -> None:
        with self._lock:
            known = self._metrics.get(name)
            if known is None:
                self._metrics[name] = _Metric(kind, description, tag_keys, boundaries)
            elif (known.kind, known.tag_keys, known.boundaries) != (kind, tag_keys, boundaries):
                raise ValueError(
                    f"metric {name!r} is already defined in this process as a {known.kind} "
                    f"with tag keys {known.tag_keys}; a metric keeps one definition"
                )
        if self._reporter is None:
            self._worker.post(self._start)

    def record(self, name: str, tags: tuple[str, ...], value: float) -> None:
        with self._lock:
            metric = self._metrics[name]
            series = metric.series
            if len(series) >= metrics.MAX_SERIES and tags not in series:
                raise ValueError(
                    f"metric {name!r} has {metrics.MAX_SERIES} tag value sets already; "
                    "tags with unbounded values (ids, timestamps) make too many series"
                )
            if metric.kind == "counter":
                series[tags] = series.get(tags, 0.0) + value
            elif metric.kind == "gauge":
                series[tags] = value
            else:
                entry = series.get(tags)
                if entry is None:
                    entry = series[tags] = [[0] * (len(metric.boundaries) + 1), 0.0]
                entry[0][bisect.bisect_left(metric.boundaries, value)] += 1
                entry[1] += value

    def snapshot(self) -> list[metrics.UserMetric]:
        with self._lock:
            out: list[metrics.UserMetric] = []
            for name, m in self._metrics.items():
                if m.kind == "histogram":
                    samples = [[list(t), list(v[0]), v[1]] for t, v in m.series.items()]
                else:
                    samples = [[list(t), v] for t, v in m.series.items()]
                out.append((name, m.kind, m.description, m.tag_keys, m.boundaries, samples))
            return out

    # -- sending (the loop) ---------------------------------------------------------------
    def _start(self) -> None:
        if self._reporter is None:
            self._reporter = self._worker.background.spawn(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._worker.config.metrics_report_interval_s)
            await self.flush()

    async def flush(self) -> None:
        if not self._metrics:
            return
        data = metrics.encode_user_metrics(self.snapshot())
        request = ReportMetricsRequest(worker_id=self._worker.worker_id, data=data)
        with contextlib.suppress(TimeoutError, *rpc.CONNECTION_ERRORS):
            await asyncio.wait_for(self._worker.raylet.report_metrics(request), 5.0)
