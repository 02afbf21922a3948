"""The cluster's events (Ray's ``list_cluster_events``): what happened to the
cluster, newest last, the latest :data:`MAX_EVENTS` kept in memory.

The gcs records nodes joining and dying and jobs starting and finishing
itself, and the errors core workers report to it (a worker or actor died, a
task that no node can run). Invariant: the log is bounded; an event's text is
bounded (``MAX_MESSAGE``) and so are its fields.
"""

from __future__ import annotations

import enum
import os
import time
from collections import deque

from .._private import task_events as te
from ..protocol.rt import ClusterEvent

#: Events kept (the oldest go first).
MAX_EVENTS = 10_000


class Source(enum.Enum):
    GCS = "GCS"
    CORE_WORKER = "CORE_WORKER"


class Severity(enum.Enum):
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


#: A core worker's error report's severity, by its type (``ErrorEvent.type``).
ERROR_SEVERITY = {"INFEASIBLE": Severity.WARNING}


class ClusterEventLog:
    def __init__(self, limit: int = MAX_EVENTS) -> None:
        self._events: deque[ClusterEvent] = deque(maxlen=limit)

    def add(
        self,
        source: Source,
        severity: Severity,
        message: str,
        at: float | None = None,
        **fields: str,
    ) -> None:
        self._events.append(
            ClusterEvent(
                event_id=os.urandom(18).hex(),
                source_type=source.value,
                severity=severity.value,
                message=message[: te.MAX_MESSAGE],
                time=at or time.time(),
                custom_fields={k: v[: te.MAX_TEXT] for k, v in fields.items()},
            )
        )

    def events(self) -> list[ClusterEvent]:
        return list(self._events)
