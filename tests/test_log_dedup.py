"""The driver's deduplication of its workers' lines (Ray's RAY_DEDUP_LOGS)."""

from __future__ import annotations

import pytest
from conftest import run_driver

from runtime._private.log_dedup import HOW_TO_TURN_OFF, LogDedup, key_of

pytestmark = pytest.mark.timeout(120)

A, B, C = ("h", 1), ("h", 2), ("h", 3)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_line_repeated_across_processes_prints_once_then_a_count() -> None:
    clock = Clock()
    dedup = LogDedup(5.0, clock=clock)
    assert dedup.feed(A, "f pid=1", ["task 1 done"]) == [("f pid=1", "task 1 done")]
    assert dedup.feed(B, "f pid=2", ["task 2 done"]) == []  # held: same words, numbers aside
    assert dedup.feed(C, "f pid=3", ["task 3 done"]) == []
    assert dedup.next_due() == 105.0
    clock.now = 105.0
    (summary,) = dedup.due()
    assert summary == ("f pid=3", "task 3 done [repeated 2x across cluster]" + HOW_TO_TURN_OFF)
    # A new window for it: one more held back prints as itself, told once.
    dedup.feed(A, "f pid=1", ["task 9 done"])
    clock.now = 110.0
    assert dedup.due() == [("f pid=1", "task 9 done")]
    assert dedup.next_due() is None


def test_what_is_never_held_back() -> None:
    dedup = LogDedup(5.0, allow="keep", skip="noise", clock=Clock())
    # One process's own repeats, lines of nothing but numbers, and allowed lines.
    assert len(dedup.feed(A, "a", ["same", "same"])) == 2
    assert dedup.feed(B, "b", ["12345", "0xff 7"]) == [("b", "12345"), ("b", "0xff 7")]
    assert dedup.feed(B, "b", ["keep me", "keep me", "noise here"]) == [
        ("b", "keep me"),
        ("b", "keep me"),
    ]
    assert dedup.feed(B, "b", ["same"]) == []
    assert dedup.flush() == [("b", "same")]
    assert key_of("worker 3f9a at 10.0.0.1 ready") == "worker at ready"


CODE = (
    "import runtime\n"
    "@runtime.remote(num_cpus=0)\n"
    "class Speaker:\n"
    "    def speak(self):\n"
    "        print('hello from a speaker')\n"
    "runtime.init(num_cpus=1)\n"
    "speakers = [Speaker.remote() for _ in range(3)]\n"
    "runtime.get([s.speak.remote() for s in speakers])\n"
    "runtime.shutdown()\n"
)


def test_the_driver_prints_a_repeated_line_once_with_its_count() -> None:
    done = run_driver(CODE)
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stdout.splitlines() if "hello from a speaker" in line]
    assert len(said) == 2, done.stdout  # the first as it came, then the count at the end
    assert said[1].endswith("[repeated 2x across cluster]" + HOW_TO_TURN_OFF)
    import os

    everything = run_driver(CODE, env={**os.environ, "RAY_DEDUP_LOGS": "0"})
    assert everything.stdout.count("hello from a speaker") == 3, everything.stdout
