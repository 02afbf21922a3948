"""The gcs's record of task attempts, merged from the core workers' task events.

Invariant: each job keeps at most ``max_per_job`` attempts; when a new one
would exceed it the oldest recorded attempt is dropped and counted in
``dropped[job]`` (with the rows reporters dropped themselves), so a listing
can say how much it does not show. At most ``max_jobs`` jobs keep attempts:
a new job's first batch drops the records of the job recorded first.
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
    # When it entered each state (``task_events.STATES``), unix us; 0: not seen.
    times: list[int]
    # What the reporters said of it, in order: info objects shared by the
    # attempts of one batch (a definition, the reporter's place), merged when read.
    parts: list[dict[str, Any]] = field(default_factory=list)
    worker_pid: int = 0

    @property
    def state(self) -> str:
        for slot in range(te.NUM_STATES - 1, -1, -1):
            if self.times[slot]:
                return te.STATES[slot]
        return "NIL"

    @property
    def info(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for part in self.parts:
            merged.update(part)
        return merged

    def field(self, key: str, default: Any = None) -> Any:
        """One field of ``info`` (the latest said), without merging the rest."""
        for part in reversed(self.parts):
            if key in part:
                return part[key]
        return default

    def row(self, job_hex: str, detail: bool) -> dict[str, Any]:
        info, times = self.info, self.times
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
            seen = [(when, name) for name, when in zip(te.STATES, times, strict=True) if when]
            end = times[te.FAILED_SLOT] or times[te.FINISHED_SLOT]
            # Milliseconds, as Ray's columns, kept to the microsecond.
            row.update(
                {
                    "language": "PYTHON",
                    "required_resources": info.get("required_resources", {}),
                    "placement_group_id": info.get("placement_group_id") or None,
                    "error_message": info.get("error_message") or None,
                    "creation_time_ms": _ms(min(seen)[0]) if seen else None,
                    "start_time_ms": _ms(times[te.RUNNING_SLOT]),
                    "end_time_ms": _ms(end),
                    "events": [
                        {"state": name, "created_ms": _ms(when)} for when, name in sorted(seen)
                    ],
                }
            )
        return row


def _ms(us: int) -> float | None:
    return us / 1000.0 if us else None


class TaskEventStore:
    def __init__(self, max_per_job: int = 100_000, max_jobs: int = 100) -> None:
        self.max_per_job = max_per_job
        self.max_jobs = max_jobs
        self.jobs: dict[int, OrderedDict[tuple[str, int], TaskRecord]] = {}
        self.dropped: dict[int, int] = {}

    def add(
        self,
        job_id: int,
        rows: list[te.Row],
        *,
        node_id: str,
        worker_id: str,
        pid: int,
        dropped: int,
    ) -> None:
        """Merges a reporter's rows (checked by ``task_events.decode``)."""
        records = self.jobs.get(job_id)
        if records is None:
            records = self.jobs[job_id] = OrderedDict()
            while len(self.jobs) > self.max_jobs:
                oldest = next(iter(self.jobs))
                self.dropped[oldest] = self.dropped.get(oldest, 0) + len(self.jobs.pop(oldest))
        if dropped > 0:
            self.dropped[job_id] = self.dropped.get(job_id, 0) + dropped
        ran_here = {"node_id": node_id, "worker_id": worker_id}  # one object per batch
        for task_id, attempt, times, parts in rows:
            key = (task_id, attempt)
            record = records.get(key)
            if record is None:
                # The decoded row's own objects become the record's (no copy).
                record = records[key] = TaskRecord(task_id, attempt, job_id, times, parts)
                if len(records) > self.max_per_job:
                    records.popitem(last=False)
                    self.dropped[job_id] = self.dropped.get(job_id, 0) + 1
            else:
                known = record.times
                for slot, when in enumerate(times):
                    # The earliest report of a state wins (a reporter may repeat one).
                    if when and (not known[slot] or when < known[slot]):
                        known[slot] = when
                record.parts.extend(parts)
            if times[te.RUNNING_SLOT]:
                for part in parts:
                    if "worker_pid" in part:  # the owner says which worker ran it
                        record.worker_pid = part["worker_pid"]
                        break
                else:  # the reporter ran it: where it ran is the reporter
                    record.parts.append(ran_here)
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
