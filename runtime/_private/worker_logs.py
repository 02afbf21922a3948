"""Worker log files and the task markers inside them.

A worker's stdout and stderr go to ``logs/worker-<id>-<pid>.out|.err`` on its
node (the raylet writes them). So that a task's own lines can be found again
(``runtime logs --task-id``) and printed at the driver under the task's name
(``(f pid=12) hello``, as Ray does), the worker writes a marker line before
the first output of each task that prints: :data:`MARKER`, the task id in
hex, a space, the task's name. Tasks that print nothing cost nothing. Marker
lines stay in the files and are never shown: readers drop them.
"""

from __future__ import annotations

import re

#: Starts a marker line (ASCII record separator: never in ordinary output).
MARKER = "\x1eRT-TASK "
_MARKER_BYTES = MARKER.encode()

#: Worker log names, as the raylet makes them: ``worker-<id8>-<pid>.out|err``.
WORKER_LOG = re.compile(r"^worker-([0-9a-f]{8})-(\d+)\.(out|err)$")
#: Every name a node serves: worker logs and its components' own.
LOG_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def worker_log_name(worker_id: bytes, pid: int, err: bool) -> str:
    return f"worker-{worker_id.hex()[-8:]}-{pid}.{'err' if err else 'out'}"


def marker_line(task_id: bytes | None, name: str) -> str:
    """The marker before a task's output (``task_id`` None: no task's, the worker's own)."""
    return f"{MARKER}{task_id.hex() if task_id else '-'} {name}\n"


def parse_marker(line: str) -> tuple[str, str] | None:
    """(task id hex, name) of a marker line, else None."""
    if not line.startswith(MARKER):
        return None
    task, _, name = line[len(MARKER) :].rstrip("\n").partition(" ")
    return task, name


def is_marker(line: bytes) -> bool:
    return line.startswith(_MARKER_BYTES)


class LineFilter:
    """Which lines of a log a reader sees: markers never; with ``task_hex``,
    only the lines written while that task was the one printing."""

    def __init__(self, task_hex: str = "") -> None:
        self.task = task_hex
        self.inside = not task_hex

    def shown(self, line: str) -> bool:
        marker = parse_marker(line)
        if marker is not None:
            if self.task:
                self.inside = marker[0] == self.task
            return False
        return self.inside
