"""Task events in one process: the batch layout and its checks, the gcs's
bounded store, and the state API's filters."""

from __future__ import annotations

import json
from array import array

import pytest

from runtime._private import task_events as te
from runtime.gcs._task_events import TaskEventStore


def _batch(
    groups: list[list[object]],
    infos: list[object] | None = None,
    *,
    ids: bytes = b"",
    attempts: list[int] | None = None,
    times: list[int] | None = None,
) -> te.Batch:
    head = json.dumps({"infos": infos or [], "groups": groups}).encode()
    return te.Batch(
        head, ids, array("q", attempts or []).tobytes(), array("q", times or []).tobytes()
    )


def test_a_batch_round_trips_with_shared_infos() -> None:
    info = {"name": "f", "type": "NORMAL_TASK", "required_resources": {"CPU": 1.0}}
    other = {"actor_id": "cc" * 16}
    times = [10, 20, 0, 0, 0, 0]
    rows = te.RowBuffer(limit=4)
    for task_id, attempt, infos in [
        (b"\xaa" * 8, 0, [info]),
        (b"\xbb" * 8, 1, [info, other]),
        (b"\xdd" * 4, 2, [info]),  # another size: a group of its own
        (b"\xee" * 8, 3, [info]),
    ]:
        i = rows.row(task_id, attempt)
        rows.times[i * te.NUM_STATES : (i + 1) * te.NUM_STATES] = array("q", times)
        for one in infos:
            rows.add_info(i, one)
    assert rows.row(b"\xaa" * 8, 0) == 0  # the same attempt, the same row
    assert rows.row(b"\xff" * 8, 0) == -1 and rows.dropped == 1  # past the limit
    data = rows.encode()
    sent = json.loads(data.rows)
    assert len(sent["infos"]) == 2  # each info sent once
    assert sorted(g[2] for g in sent["groups"]) == [1, 1, 2]  # two id sizes: regrouped
    assert len(data.ids) == 3 * 8 + 4 and len(data.times) == 4 * 8 * te.NUM_STATES
    decoded = te.decode(data)
    assert sorted((r[0], r[1], r[2], len(r[3])) for r in decoded) == [
        ("aa" * 8, 0, times, 1),
        ("bb" * 8, 1, times, 2),
        ("dd" * 4, 2, times, 1),
        ("ee" * 8, 3, times, 1),
    ]
    assert decoded[0][3][0] is decoded[1][3][0]
    grouped = [r for r in decoded if r[3] == [info]]
    assert grouped[0][3] is not grouped[1][3]  # each row's list is its own
    both = next(r for r in decoded if r[0] == "bb" * 8)
    assert both[3] == [info, other]  # in the order they were added


def test_rows_go_as_runs_and_many_short_runs_are_regrouped() -> None:
    f, g = {"name": "f"}, {"name": "g"}

    def encoded(pattern: list[dict[str, str]]) -> tuple[list[list[object]], list[te.Row]]:
        rows = te.RowBuffer(limit=len(pattern))
        for n, info in enumerate(pattern):
            i = rows.row(n.to_bytes(8, "big"), 0)
            rows.times[i * te.NUM_STATES] = n + 1
            rows.add_info(i, info)
        data = rows.encode()
        return json.loads(data.rows)["groups"], te.decode(data)

    def expected(pattern: list[dict[str, str]]) -> list[tuple[str, int, dict[str, str]]]:
        return [(n.to_bytes(8, "big").hex(), n + 1, info) for n, info in enumerate(pattern)]

    waves = [f] * 100 + [g] * 50 + [f] * 10
    groups, decoded = encoded(waves)
    assert [group[2] for group in groups] == [100, 50, 10]
    assert [(r[0], r[2][0], r[3][0]) for r in decoded] == expected(waves)
    mixed = [f, g] * te.MAX_RUNS
    groups, decoded = encoded(mixed)
    assert [group[2] for group in groups] == [te.MAX_RUNS, te.MAX_RUNS]
    assert sorted((r[0], r[2][0], r[3][0]["name"]) for r in decoded) == sorted(
        (i, t, info["name"]) for i, t, info in expected(mixed)
    )


def test_a_row_keeps_at_most_its_share_of_infos() -> None:
    rows = te.RowBuffer(limit=1)
    infos = [{"name": str(k)} for k in range(te.MAX_ROW_INFOS + 3)]
    for info in infos:
        rows.add_info(rows.row(b"\x01" * 8, 0), info)
    (row,) = te.decode(rows.encode())
    assert row[3] == infos[: te.MAX_ROW_INFOS]


def test_a_whole_row_is_the_row_its_states_make_one_by_one() -> None:
    """``whole`` (an attempt's row made at once from its reply) encodes as the
    same attempt recorded state by state does; an attempt that has a row
    already is left to the caller (-2); past the limit it is counted (-1)."""
    defined, actor, ran = {"name": "A.f"}, {"actor_id": "cc" * 16}, {"worker_pid": 7}
    times = [10, 20, 30, 40, 50, 0]
    by_state = te.RowBuffer(limit=2)
    for task_id, infos in [(b"\xaa" * 8, [defined, actor, ran]), (b"\xbb" * 8, [defined, ran])]:
        i = by_state.row(task_id, 0)
        for slot, at in enumerate(times):
            by_state.times[i * te.NUM_STATES + slot] = at
        for info in infos:
            by_state.add_info(i, info)
    whole = te.RowBuffer(limit=2)
    packed = te.ROW_TIMES.pack(*times)
    for task_id, infos in [(b"\xaa" * 8, (defined, actor, ran)), (b"\xbb" * 8, (defined, ran))]:
        assert whole.whole(task_id, 0, packed, infos, tuple(map(id, infos))) >= 0
    assert te.decode(whole.encode()) == te.decode(by_state.encode())
    assert whole.whole(b"\xaa" * 8, 0, packed, (ran,), (id(ran),)) == -2
    assert whole.whole(b"\xcc" * 8, 0, packed, (ran,), (id(ran),)) == -1 and whole.dropped == 1


GOOD = [[], 1, 1]


def _good(**columns: object) -> te.Batch:
    """One row of one group, with a column replaced."""
    values: dict[str, object] = {"ids": b"\xaa", "attempts": [0], "times": [0] * 6}
    values.update(columns)
    return _batch([GOOD], **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "batch, says",
    [
        (te.Batch(b"not json", b"", b"", b""), "not JSON"),
        (te.Batch(b"[]", b"", b"", b""), "infos"),
        (_batch([[1, 2]]), "not \\[info indexes"),
        (_batch([[[], 1, -1]]), "count"),
        (_batch([[[], 0, 1]]), "id size"),
        (_batch([[[3], 1, 1]]), "out of range"),
        (_good(ids=b"\xaa\xbb"), "one id of its group's size"),
        (_good(ids=b""), "one id of its group's size"),
        (_good(attempts=[-1]), "attempts are not"),
        (_good(attempts=[0, 0]), "one int64 per row"),
        (_good(times=[0] * 5), "6 int64s per row"),
        (_good(times=[0, 0, 0, 0, 0, -1]), "microseconds"),
        (_good(times=[0, 0, 0, 0, 0, 10**17]), "microseconds"),
        (_batch([], [{"colour": "red"}]), "unknown info field"),
        (_batch([], [{"name": 7}]), "wrong type"),
        (_batch([], [{"required_resources": {"CPU": -1}}]), "finite amounts"),
    ],
)
def test_bad_batches_are_refused(batch: te.Batch, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        te.decode(batch)


def test_a_good_group_decodes() -> None:
    assert te.decode(_good()) == [("aa", 0, [0] * 6, [])]
    assert te.decode(te.RowBuffer(limit=1).encode()) == []  # an empty batch (drops only)


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
