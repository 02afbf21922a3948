"""A worker's stdout and stderr: a task marker line before each task's output.

See ``_private/worker_logs.py`` for why. Writes go straight to the real
stream; the marker is written only when the task printing differs from the
one that printed last, so tasks that print nothing cost nothing.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO

from .._private import worker_logs
from .._private.task_wire import KIND_ACTOR_CREATION
from ._running import current_task, current_task_id


class MarkedStream:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._last: bytes | None = None
        self._line_start = True
        self._lock = threading.Lock()  # threaded actors print from several threads

    def write(self, text: str) -> int:
        task_id = current_task_id.get()
        if task_id != self._last and text:
            with self._lock:
                self._last = task_id
                marker = worker_logs.marker_line(task_id, _task_name())
                self._stream.write(marker if self._line_start else "\n" + marker)
        if text:
            self._line_start = text.endswith("\n")
        return self._stream.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def install() -> None:
    """Marks this worker process's stdout and stderr (once)."""
    if not isinstance(sys.stdout, MarkedStream):
        sys.stdout = MarkedStream(sys.stdout)
    if not isinstance(sys.stderr, MarkedStream):
        sys.stderr = MarkedStream(sys.stderr)


def _task_name() -> str:
    task = current_task.get()
    if task is None:
        return ""
    if task[6] == KIND_ACTOR_CREATION:  # its constructor's lines show its class, as Ray's
        return str(task[7].get("class_name") or task[2])
    return task[2]
