"""The gcs's Prometheus metrics (tasks, actors, placement groups, nodes, jobs)
and the service discovery file that names every endpoint of the cluster.

The families are built on the gcs's loop at each scrape (see
``_private/metrics.py``); counting 100,000 task attempts takes a few
milliseconds. The file is rewritten whenever the set of endpoints changes:
the gcs's own, and each live node's raylet (reported with its resources).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter

from .._private import metrics
from .._private.ids import job_hex
from ..protocol.rt import NodeInfo, PlacementGroupState
from ._actors import ActorManager
from ._placement_groups import PlacementGroupManager
from ._tables import GcsTables, JobState
from ._task_events import TaskEventStore

logger = logging.getLogger(__name__)


def families(
    tables: GcsTables,
    task_events: TaskEventStore,
    actors: ActorManager,
    groups: PlacementGroupManager,
) -> list[metrics.Family]:
    tasks = metrics.Family(
        "ray_tasks",
        "gauge",
        "Task attempts by state (remote functions and actor calls)",
        ("Name", "State", "IsRetry", "JobId"),
    )
    counts: Counter[tuple[str, str, str, str]] = Counter()
    for record in task_events.records():
        name = record.field("name", "")
        retry = "1" if record.attempt else "0"
        counts[(name, record.state, retry, job_hex(record.job_id))] += 1
    for key, n in sorted(counts.items()):
        tasks.add(key, n)
    dropped = metrics.Family(
        "ray_task_events_dropped", "counter", "Task attempts not kept (buffers full)", ()
    )
    dropped.add((), task_events.total_dropped())

    actor_family = metrics.Family(
        "ray_actors", "gauge", "Actors by state", ("Name", "State", "JobId")
    )
    actor_counts: Counter[tuple[str, str, str]] = Counter()
    for actor in actors.actors.values():
        info = actor.info
        state = info.state.name.removeprefix("ACTOR_STATE_") if info.state else "UNKNOWN"
        actor_counts[(info.class_name, state, job_hex(info.job_id))] += 1
    for actor_key, n in sorted(actor_counts.items()):
        actor_family.add(actor_key, n)

    group_family = metrics.Family(
        "ray_placement_groups", "gauge", "Placement groups by state", ("State",)
    )
    group_counts = Counter(
        (g.info.state or PlacementGroupState.PENDING).name.removeprefix("PLACEMENT_GROUP_STATE_")
        for g in groups.groups.values()
    )
    for state, n in sorted(group_counts.items()):
        group_family.add((state,), n)

    nodes = list(tables.nodes.values())
    active = metrics.Family("ray_cluster_active_nodes", "gauge", "Live nodes", ("node_type",))
    failed = metrics.Family("ray_cluster_failed_nodes", "gauge", "Dead nodes", ("node_type",))
    for node_type, head in (("head", True), ("worker", False)):
        active.add((node_type,), sum(1 for n in nodes if n.alive and n.is_head == head))
        failed.add((node_type,), sum(1 for n in nodes if not n.alive and n.is_head == head))
    jobs = metrics.Family("ray_jobs", "gauge", "Jobs by state", ("State",))
    for job_state in JobState:
        count = sum(1 for j in tables.jobs.values() if j.state is job_state)
        jobs.add((job_state.name,), count)
    return [tasks, dropped, actor_family, group_family, active, failed, jobs]


class ServiceDiscovery:
    """Writes ``prom_metrics_service_discovery.json`` in the session when the
    endpoints change (nothing without a session folder)."""

    def __init__(self, session_dir: str, host: str) -> None:
        self._session_dir = session_dir
        self._host = host
        self.gcs_port = 0
        self._written: list[str] | None = None

    def update(self, nodes: list[NodeInfo]) -> None:
        if not self._session_dir or not os.path.isdir(self._session_dir):
            return
        targets = [f"{self._host}:{self.gcs_port}"] if self.gcs_port else []
        # A raylet's endpoint is named by its node's address: with the default
        # loopback metrics host, only a scraper on that machine reaches it.
        targets += [f"{n.host}:{n.metrics_port}" for n in nodes if n.alive and n.metrics_port]
        if targets != self._written:
            self._written = targets
            with contextlib.suppress(OSError):
                metrics.write_service_discovery(self._session_dir, targets)
