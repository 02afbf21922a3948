"""Workers' output lines, deduplicated across the cluster before the driver prints them.

As Ray does by default: a line that another process already printed within the
last ``window_s`` seconds is held back and counted; when the window ends, its
latest form is printed once with ``[repeated Nx across cluster]``. Lines are
compared with their words that hold digits (ids, pids, counters, addresses)
left out, so "task 3 done" and "task 7 done" are one line. A process's own
repeats print as they come (dedup is across processes), as does a line that
is nothing but such words. Synchronous and without I/O: the caller prints.

Invariant: ``_recent`` is ordered by the start of each key's window (a key
whose window restarts is moved to the end), so the due windows are a prefix.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: A word that differs between processes (a number, a hex id).
_VARIES = re.compile(r"(\d+|0x[0-9a-fA-F]+)")

#: Said once per driver, with the first summary.
HOW_TO_TURN_OFF = (
    " (the runtime deduplicates workers' lines across the cluster: set "
    "RUNTIME_DEDUP_LOGS=0 to print them all)"
)

#: What the caller prints: (the source's label, the line).
Output = tuple[str, str]


def key_of(line: str) -> str:
    return " ".join(word for word in line.split() if not _VARIES.search(word))


@dataclass
class _Pattern:
    started: float  # when its window started
    label: str  # the label of the latest held-back line
    line: str  # the latest held-back line (or the first printed)
    sources: set[tuple[str, int]] = field(default_factory=set)
    held: int = 0  # lines held back in this window


class LogDedup:
    def __init__(
        self,
        window_s: float,
        allow: str = "",
        skip: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self._allow = re.compile(allow) if allow else None
        self._skip = re.compile(skip) if skip else None
        self._clock = clock
        self._recent: dict[str, _Pattern] = {}
        self._told = False

    def feed(self, source: tuple[str, int], label: str, lines: list[str]) -> list[Output]:
        """The lines of one batch from ``source`` (host, pid) to print now,
        followed by the summaries of windows that ended."""
        now = self._clock()
        out: list[Output] = []
        for line in lines:
            if self._allow is not None and self._allow.search(line):
                out.append((label, line))
                continue
            if self._skip is not None and self._skip.search(line):
                continue
            key = key_of(line)
            pattern = self._recent.get(key) if key else None
            if not key:
                out.append((label, line))
            elif pattern is None:
                self._recent[key] = _Pattern(now, label, line, {source})
                out.append((label, line))
            else:
                pattern.sources.add(source)
                if len(pattern.sources) > 1:
                    pattern.held += 1
                    pattern.label, pattern.line = label, line
                else:  # only its first source so far: not a repeat across processes
                    out.append((label, line))
        out.extend(self.due(now))
        return out

    def due(self, now: float | None = None) -> list[Output]:
        """Summaries of the windows that ended; a key with nothing held back
        is forgotten, one with lines held back starts a new window."""
        now = self._clock() if now is None else now
        out: list[Output] = []
        while self._recent:
            key, pattern = next(iter(self._recent.items()))
            if now - pattern.started < self.window_s:
                break
            del self._recent[key]
            if pattern.held:
                out.append(self._summary(pattern))
                pattern.started, pattern.held = now, 0
                self._recent[key] = pattern  # (to the end: its new window)
        return out

    def next_due(self) -> float | None:
        """When the oldest window with lines held back ends (clock time), if any."""
        starts = [p.started for p in self._recent.values() if p.held]
        return min(starts) + self.window_s if starts else None

    def flush(self) -> list[Output]:
        """Every summary still held back (the driver is stopping)."""
        out = [self._summary(p) for p in self._recent.values() if p.held]
        self._recent.clear()
        return out

    def _summary(self, pattern: _Pattern) -> Output:
        if pattern.held == 1:
            return pattern.label, pattern.line
        text = f"{pattern.line} [repeated {pattern.held}x across cluster]"
        if not self._told:
            self._told = True
            text += HOW_TO_TURN_OFF
        return pattern.label, text
