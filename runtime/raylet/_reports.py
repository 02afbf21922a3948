"""What a raylet tells the gcs in batches, off its hot paths.

- Its workers' output: lines are buffered per (pid, stream) and sent as one
  ``LogBatch`` each; lines that arrive during a send go in the next one. Each
  batch carries the worker's label (``Counter pid=12`` for an actor).
- The deaths of its workers and drivers (other nodes' stores may hold objects
  they owned): gathered over one loop iteration, sent only when there is
  another node to tell.
- Its available resources: at most one report per
  ``resource_report_period_s``, however busy the node is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from .._private import resources as res
from .._private import rpc
from .._private.tasks import TaskSet
from ..protocol.rt import (
    GcsStub,
    LogBatch,
    ReportResourcesRequest,
    ResourceDemand,
    WorkerFailures,
)
from ._scheduler import LeaseRequest

logger = logging.getLogger(__name__)


def resource_report(
    node_id: bytes,
    total: res.Fixed,
    available: res.Fixed,
    queue: Iterable[LeaseRequest],
    store_used: int,
    metrics_port: int = 0,
) -> ReportResourcesRequest:
    """What the gcs shows of a node: free resources, store use, and the lease
    requests waiting there, by shape (``runtime status``)."""
    shapes: dict[tuple[tuple[str, int], ...], ResourceDemand] = {}
    for req in queue:
        key = tuple(sorted(req.resources.items()))
        demand = shapes.get(key)
        if demand is None:
            demand = shapes[key] = ResourceDemand(resources=res.to_float(req.resources), count=0)
        demand.count += 1
        demand.infeasible = demand.infeasible or req.infeasible
    return ReportResourcesRequest(
        node_id=node_id,
        resources=res.encode_sets(res.to_float(available), res.to_float(total)),
        object_store_used=store_used,
        pending=list(shapes.values()),
        metrics_port=metrics_port,
    )


class GcsReports:
    def __init__(
        self,
        *,
        node_id: bytes,
        period_s: float,
        tasks: TaskSet,
        report: Callable[[], ReportResourcesRequest],
    ) -> None:
        self._node_id = node_id
        self._period_s = period_s
        self._tasks = tasks
        self._report = report
        self._gcs: GcsStub | None = None
        # Output prefixes by pid, such as "Counter pid=12" for an actor.
        self.labels: dict[int, str] = {}
        # Output waiting to be sent, per stream, in order: consecutive lines
        # with the same prefix (task name or actor label) share a batch.
        self._log_buffer: dict[tuple[int, bool], list[LogBatch]] = {}
        self._logs_ready = asyncio.Event()
        # Batches logged, and of those the ones sent (or given up on), in order;
        # flushes wait on the condition for the second to reach the first.
        self._logged = 0
        self._published = 0
        self._logs_sent = asyncio.Condition()
        self._resources_dirty = asyncio.Event()
        # Invariant: non-empty iff a _send_worker_deaths is scheduled.
        self._dead_workers: list[bytes] = []

    def start(self, gcs: GcsStub) -> None:
        self._gcs = gcs
        self._tasks.spawn(self._flush_logs())
        self._tasks.spawn(self._report_resources())

    # -- output ------------------------------------------------------------------------
    def log(self, batch: LogBatch) -> None:
        label = self.labels.get(batch.pid)
        if label:  # an actor's: its lines show its class, as Ray's do
            batch.prefix = label
        pending = self._log_buffer.setdefault((batch.pid, batch.is_err), [])
        if pending and pending[-1].prefix == batch.prefix:
            pending[-1].lines.extend(batch.lines)
        else:
            pending.append(batch)
        self._logged += 1
        self._logs_ready.set()

    async def flush_logs(self) -> None:
        """Returns once every line logged before the call has been published."""
        target = self._logged
        async with self._logs_sent:
            await self._logs_sent.wait_for(lambda: self._published >= target)

    async def _flush_logs(self) -> None:
        """Sends buffered output; lines that arrive during a send go in the next batch."""
        assert self._gcs is not None
        while True:
            await self._logs_ready.wait()
            self._logs_ready.clear()
            streams, self._log_buffer = list(self._log_buffer.values()), {}
            logged = self._logged
            batches = [batch for stream in streams for batch in stream]
            for batch in batches:
                try:
                    await self._gcs.publish_logs(batch)
                except rpc.CONNECTION_ERRORS:
                    logger.warning("could not publish %d log lines", len(batch.lines))
            async with self._logs_sent:
                self._published = logged
                self._logs_sent.notify_all()

    # -- deaths ------------------------------------------------------------------------
    def worker_died(self, worker_id: bytes) -> None:
        """Tell the gcs (batched): other nodes' stores may hold objects it
        owned, and the actors it owned die with it."""
        self._dead_workers.append(worker_id)
        if len(self._dead_workers) == 1:
            self._tasks.spawn(self._send_worker_deaths())

    async def _send_worker_deaths(self) -> None:
        await asyncio.sleep(0)  # gather the deaths of this loop iteration
        ids, self._dead_workers = self._dead_workers, []
        if self._gcs is None:
            return
        with contextlib.suppress(*rpc.CONNECTION_ERRORS):
            await self._gcs.report_worker_failures(
                WorkerFailures(node_id=self._node_id, worker_ids=ids)
            )

    # -- resources ---------------------------------------------------------------------
    def resources_changed(self) -> None:
        self._resources_dirty.set()

    async def _report_resources(self) -> None:
        assert self._gcs is not None
        while True:
            await self._resources_dirty.wait()
            self._resources_dirty.clear()
            try:
                await self._gcs.report_resources(self._report())
            except rpc.CONNECTION_ERRORS:
                pass
            # At most one report per period, however busy the node is.
            await asyncio.sleep(self._period_s)
