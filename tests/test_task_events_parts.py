"""Task events in one process: the batch layout and its checks, the gcs's
bounded store, and the state API's filters."""

from __future__ import annotations

import json

import pytest

from runtime._private import task_events as te
from runtime.gcs._task_events import TaskEventStore


def _batch(rows: list[list[object]], infos: list[object] | None = None) -> bytes:
    return json.dumps({"infos": infos or [], "rows": rows}).encode()


def test_a_batch_round_trips_with_shared_infos() -> None:
    info = {"name": "f", "type": "NORMAL_TASK", "required_resources": {"CPU": 1.0}}
    times = [10, 20, 0, 0, 0, 0]
    data = te.encode_batch([("aa" * 8, 0, times, [info]), ("bb" * 8, 1, times, [info])])
    assert len(json.loads(data)["infos"]) == 1  # sent once, named twice
    rows = te.decode(data)
    assert [(r[0], r[1], r[2]) for r in rows] == [("aa" * 8, 0, times), ("bb" * 8, 1, times)]
    assert rows[0][3][0] is rows[1][3][0]


@pytest.mark.parametrize(
    "batch, says",
    [
        (b"not json", "not JSON"),
        (b"[]", "infos"),
        (_batch([["zz", 0, [0] * 6, []]]), "hex id"),
        (_batch([["aa", -1, [0] * 6, []]]), "attempt"),
        (_batch([["aa", 0, [0] * 5, []]]), "array of 6"),
        (_batch([["aa", 0, [0, 0, 0, 0, 0, 1.5], []]]), "microseconds"),
        (_batch([["aa", 0, [0, 0, 0, 0, 0, 10**17], []]]), "microseconds"),
        (_batch([["aa", 0, [0] * 6, [3]]]), "out of range"),
        (_batch([], [{"colour": "red"}]), "unknown info field"),
        (_batch([], [{"name": 7}]), "wrong type"),
        (_batch([], [{"required_resources": {"CPU": -1}}]), "finite amounts"),
    ],
)
def test_bad_batches_are_refused(batch: bytes, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        te.decode(batch)


def test_the_store_is_bounded_per_job_and_in_jobs() -> None:
    store = TaskEventStore(max_per_job=2, max_jobs=2)
    row = lambda task: (task, 0, [1, 0, 0, 0, 0, 0], [])  # noqa: E731
    place = {"node_id": "n", "worker_id": "w", "pid": 1}
    store.add(1, [row("aa"), row("bb"), row("cc")], **place, dropped=0)
    assert [r.task_id for r in store.records(1)] == ["bb", "cc"]
    store.add(2, [row("aa")], **place, dropped=3)
    store.add(3, [row("aa")], **place, dropped=0)
    assert list(store.jobs) == [2, 3]
    assert store.total_dropped() == 1 + 2 + 3  # job 1's overflow, then job 1, job 2's own


def test_both_reporters_merge_into_one_attempt() -> None:
    store = TaskEventStore()
    definition = {"name": "f", "type": "NORMAL_TASK"}
    store.add(1, [("aa", 0, [5, 6, 7, 0, 9, 0], [definition])], node_id="", worker_id="",
              pid=0, dropped=0)  # fmt: skip
    store.add(1, [("aa", 0, [0, 0, 0, 8, 10, 0], [])], node_id="n1", worker_id="w1",
              pid=42, dropped=0)  # fmt: skip
    (record,) = store.records(1)
    row = record.row("00000001", True)
    assert row["state"] == "FINISHED" and row["worker_pid"] == 42 and row["node_id"] == "n1"
    assert row["start_time_ms"] == 0.008 and row["end_time_ms"] == 0.009  # the earliest end
    assert [e["state"] for e in row["events"]] == [
        "PENDING_ARGS_AVAIL", "PENDING_NODE_ASSIGNMENT", "SUBMITTED_TO_WORKER", "RUNNING",
        "FINISHED",
    ]  # fmt: skip


def test_filters() -> None:
    row = {"state": "RUNNING", "start_time_ms": None, "attempt_number": 2, "name": "F"}
    assert te.matches(row, [("state", "=", "running"), ("name", "!=", "g")])
    assert not te.matches(row, [("start_time_ms", ">", 0)])  # empty: never ordered
    assert te.matches(row, [("start_time_ms", "=", "none"), ("attempt_number", ">=", "2")])
    assert te.parse_filter("attempt_number>=1") == ("attempt_number", ">=", "1")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        te.parse_filter("nothing")
    with pytest.raises(ValueError, match="predicate"):
        te.check_filters([("a", "~", 1)])
