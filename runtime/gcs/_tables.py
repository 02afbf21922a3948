"""The gcs's state: nodes, jobs and the key-value store.

Plain synchronous tables, touched only from the gcs's loop. They sit
behind this one class so that a persistent backend can replace the
in-memory dicts without touching the service.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from ..protocol.rt import NodeInfo


class JobState(enum.Enum):
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"


@dataclass
class JobRecord:
    job_id: int
    namespace: str
    driver_pid: int
    driver_host: str
    state: JobState = JobState.RUNNING
    entrypoint: str = ""
    start_time: float = field(default_factory=time.time)
    end_time: float = 0.0


@dataclass
class GcsTables:
    nodes: dict[bytes, NodeInfo] = field(default_factory=dict)
    jobs: dict[int, JobRecord] = field(default_factory=dict)
    kv: dict[tuple[str, bytes], bytes] = field(default_factory=dict)
    # Invariant: every id in ``jobs`` is below ``next_job_id``.
    next_job_id: int = 1

    def add_job(
        self, namespace: str, driver_pid: int, driver_host: str, entrypoint: str = ""
    ) -> JobRecord:
        record = JobRecord(
            self.next_job_id, namespace, driver_pid, driver_host, entrypoint=entrypoint
        )
        self.jobs[record.job_id] = record
        self.next_job_id += 1
        return record

    def finish_job(self, job_id: int) -> bool:
        """Marks a job finished; False if it was not running."""
        record = self.jobs.get(job_id)
        if record is None or record.state is JobState.FINISHED:
            return False
        record.state = JobState.FINISHED
        record.end_time = time.time()
        return True

    def kv_put(self, namespace: str, key: bytes, value: bytes, overwrite: bool) -> bool:
        """Stores ``value``; returns whether the key is new."""
        k = (namespace, key)
        added = k not in self.kv
        if added or overwrite:
            self.kv[k] = value
        return added

    def kv_get(self, namespace: str, key: bytes) -> bytes | None:
        return self.kv.get((namespace, key))
