"""The gcs's record of task attempts, merged from the core workers' task events.

Invariant: each job keeps at most ``max_per_job`` attempts; when a new one
would exceed it the oldest recorded attempt is dropped and counted in
``dropped[job]`` (with the rows reporters dropped themselves), so a listing
can say how much it does not show.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .._private import task_events as te


@dataclass(slots=True)
class TaskRecord:
    task_id: str
    attempt: int
    job_id: int
    states: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    worker_pid: int = 0

    @property
    def state(self) -> str:
        return max(self.states, key=te.STATE_ORDER.__getitem__) if self.states else "NIL"

    def row(self, job_hex: str, detail: bool) -> dict[str, Any]:
        info, states = self.info, self.states
        row: dict[str, Any] = {
            "task_id": self.task_id,
            "attempt_number": self.attempt,
            "name": info.get("name", ""),
            "state": self.state,
            "job_id": job_hex,
            "actor_id": info.get("actor_id") or None,
            "type": info.get("type", te.NORMAL_TASK),
            "func_or_class_name": info.get("func_or_class_name", info.get("name", "")),
            "parent_task_id": info.get("parent_task_id", ""),
            "node_id": info.get("node_id") or None,
            "worker_id": info.get("worker_id") or None,
            "worker_pid": self.worker_pid or None,
            "error_type": info.get("error_type") or None,
        }
        if detail:
            end = states.get(te.FAILED, states.get(te.FINISHED))
            row.update(
                {
                    "language": "PYTHON",
                    "required_resources": info.get("required_resources", {}),
                    "placement_group_id": info.get("placement_group_id") or None,
                    "error_message": info.get("error_message") or None,
                    "creation_time_ms": int(min(states.values())) if states else None,
                    "start_time_ms": _ms(states.get(te.RUNNING)),
                    "end_time_ms": _ms(end),
                    "events": [
                        {"state": name, "created_ms": int(when)}
                        for name, when in sorted(states.items(), key=lambda kv: kv[1])
                    ],
                }
            )
        return row


def _ms(value: float | None) -> int | None:
    return None if value is None else int(value)


class TaskEventStore:
    def __init__(self, max_per_job: int = 100_000) -> None:
        self.max_per_job = max_per_job
        self.jobs: dict[int, OrderedDict[tuple[str, int], TaskRecord]] = {}
        self.dropped: dict[int, int] = {}

    def add(
        self,
        job_id: int,
        rows: list[tuple[str, int, dict[str, float], dict[str, Any] | None]],
        *,
        node_id: str,
        worker_id: str,
        pid: int,
        dropped: int,
    ) -> None:
        """Merges a reporter's rows (checked by ``task_events.decode``)."""
        records = self.jobs.setdefault(job_id, OrderedDict())
        if dropped > 0:
            self.dropped[job_id] = self.dropped.get(job_id, 0) + dropped
        for task_id, attempt, states, info in rows:
            key = (task_id, attempt)
            record = records.get(key)
            if record is None:
                record = records[key] = TaskRecord(task_id, attempt, job_id)
                if len(records) > self.max_per_job:
                    records.popitem(last=False)
                    self.dropped[job_id] = self.dropped.get(job_id, 0) + 1
            for name, when in states.items():
                # The earliest report of a state wins (a reporter may repeat one).
                if name not in record.states or when < record.states[name]:
                    record.states[name] = when
            if info:
                record.info.update(info)
            if te.RUNNING in states:
                # The reporter ran it: where it ran is the reporter.
                record.info["node_id"] = node_id
                record.info["worker_id"] = worker_id
                record.worker_pid = pid

    def records(self, job_id: int = 0, newest_first: bool = False) -> Iterator[TaskRecord]:
        """The kept attempts, in the order they were first recorded (per job)."""
        jobs = [self.jobs.get(job_id, OrderedDict())] if job_id else list(self.jobs.values())
        if newest_first:
            for records in reversed(jobs):
                yield from reversed(records.values())
        else:
            for records in jobs:
                yield from records.values()

    def total_dropped(self, job_id: int = 0) -> int:
        if job_id:
            return self.dropped.get(job_id, 0)
        return sum(self.dropped.values())
