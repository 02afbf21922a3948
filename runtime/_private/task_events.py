"""Task events: what core workers report about their tasks, and how the gcs reads it.

A core worker gathers, per task attempt, the times at which the attempt
entered each state (Ray's names, :data:`STATES`) and a few facts about it,
and sends them to the gcs about once a second (``AddTaskEvents``). A batch
travels as one message with a short JSON document and three raw columns, not
as a message per task: a few thousand rows cost well under a millisecond to
encode this way, a protobuf message per row a hundred times that (see
docs/architecture.md).

Batch layout (:class:`Batch`, the request's fields): ``rows`` is the JSON
``{"infos": [info, ...], "groups": [[[info index, ...], id size, count],
...]}``. An ``info`` is an object whose keys are among :data:`INFO_FIELDS` (a
task's definition: name, type, resources; an actor call's actor; a failure's
error). A group is ``count`` rows that name the same infos and whose task ids
are ``id size`` bytes long (two groups may name the same infos: an encoder
may send runs of rows as they lie). The rows' columns follow, group after group, as
raw little-endian arrays: ``ids``, the task ids concatenated; ``attempts``,
an int64 per row; ``times``, an int64 per row and state of :data:`STATES`, in
that order: when the attempt entered it, in integer microseconds since the
epoch, 0 if it did not (or the reporter did not see it). The tasks of one
function share one info, sent once per batch. The owner of a
task reports its definition, its way to a worker and, from the reply, when
the worker ran it (RUNNING and the end, with an info naming the worker: node,
worker id, pid): one row per finished attempt. A worker reports only the
attempts still running when it sends a batch (RUNNING; where it runs is the
reporter). The gcs merges rows by ``(task_id, attempt)``.

This module is shared by core workers (writing rows) and the gcs (checking
and merging them), and by the state API (filters).
"""

from __future__ import annotations

import json
import math
import struct
import sys
from array import array
from collections.abc import Iterable, Mapping
from itertools import groupby
from typing import Any, NamedTuple

# Ray's task states, in the order an attempt moves through them.
PENDING_ARGS_AVAIL = "PENDING_ARGS_AVAIL"
PENDING_NODE_ASSIGNMENT = "PENDING_NODE_ASSIGNMENT"
SUBMITTED_TO_WORKER = "SUBMITTED_TO_WORKER"
RUNNING = "RUNNING"
FINISHED = "FINISHED"
FAILED = "FAILED"
STATES = (
    PENDING_ARGS_AVAIL,
    PENDING_NODE_ASSIGNMENT,
    SUBMITTED_TO_WORKER,
    RUNNING,
    FINISHED,
    FAILED,
)
#: An attempt's state is the furthest one it reached (FAILED beats FINISHED:
#: a worker may finish a task whose reply its owner never got).
STATE_ORDER = {name: i for i, name in enumerate(STATES)}
NUM_STATES = len(STATES)
PENDING_ARGS_AVAIL_SLOT = STATE_ORDER[PENDING_ARGS_AVAIL]
PENDING_NODE_ASSIGNMENT_SLOT = STATE_ORDER[PENDING_NODE_ASSIGNMENT]
SUBMITTED_TO_WORKER_SLOT = STATE_ORDER[SUBMITTED_TO_WORKER]
RUNNING_SLOT = STATE_ORDER[RUNNING]
FINISHED_SLOT = STATE_ORDER[FINISHED]
FAILED_SLOT = STATE_ORDER[FAILED]

# Task types (Ray's).
NORMAL_TASK = "NORMAL_TASK"
ACTOR_CREATION_TASK = "ACTOR_CREATION_TASK"
ACTOR_TASK = "ACTOR_TASK"
TYPES = (NORMAL_TASK, ACTOR_CREATION_TASK, ACTOR_TASK)

#: What a row's ``info`` may say, with the JSON type of each value.
INFO_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "func_or_class_name": str,
    "type": str,
    "actor_id": str,
    "parent_task_id": str,
    "node_id": str,
    "worker_id": str,
    "worker_pid": int,
    "required_resources": dict,
    "placement_group_id": str,
    "error_type": str,
    "error_message": str,
}

#: Unix microseconds beyond any real clock (year 2286).
MAX_TIME_US = 10**16

#: Longest error message kept per task (the gcs keeps up to 100,000 tasks per job).
MAX_MESSAGE = 4096
MAX_TEXT = 512


#: The columns of a row without ``detail`` (Ray's default listing).
BASIC_COLUMNS = (
    "task_id", "attempt_number", "name", "state", "job_id", "actor_id", "type",
    "func_or_class_name", "parent_task_id", "node_id", "worker_id", "worker_pid", "error_type",
)  # fmt: skip


def basic(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: row[key] for key in BASIC_COLUMNS}


def encode(rows: Iterable[Any]) -> bytes:
    """JSON for a list of rows (also the gcs's replies to listings)."""
    return json.dumps(list(rows), separators=(",", ":")).encode()


#: Bits per info index in a row's packed infos, and how many infos a row keeps.
_INFO_BITS = 24
_INFO_MASK = (1 << _INFO_BITS) - 1
MAX_ROW_INFOS = 8
#: A batch sends up to this many groups as its rows lie (runs), more regrouped.
MAX_RUNS = 256
_FULL = 1 << (_INFO_BITS * (MAX_ROW_INFOS - 1))
_NO_TIMES = array("q", bytes(8 * NUM_STATES))
#: Packs a row's times for :meth:`RowBuffer.whole` (the times array's own layout).
ROW_TIMES = struct.Struct(f"@{NUM_STATES}q")


class RowBuffer:
    """A reporter's rows between two batches, kept as columns.

    Nothing per row is an object the cyclic collector tracks: a driver holds
    a row per call for up to a second, and as Python lists they cost a
    quarter of an actor call's time in collections. Row ``i``'s times are
    ``times[i * NUM_STATES : (i + 1) * NUM_STATES]`` (unix us, 0: not
    reached); its infos are ``codes[i]``, indexes into ``infos`` packed into
    one int, the oldest in the highest bits (at most :data:`MAX_ROW_INFOS`).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.ids: list[bytes] = []
        self.attempts = array("q")
        self.times = array("q")
        self.codes: list[int] = []
        self.infos: list[dict[str, Any]] = []  # each distinct one once, by identity
        self.dropped = 0
        self._info_at: dict[int, int] = {}
        self._first: dict[bytes, int] = {}  # attempt 0's row, by task id
        self._later: dict[tuple[bytes, int], int] = {}  # retries' rows
        self._codes: dict[tuple[int, ...], int] = {}  # packed infos, by their ids (whole)

    def __len__(self) -> int:
        return len(self.ids)

    def find(self, task_id: bytes, attempt: int) -> int | None:
        return self._first.get(task_id) if attempt == 0 else self._later.get((task_id, attempt))

    def row(self, task_id: bytes, attempt: int) -> int:
        """The attempt's row, made if new; -1 when the buffer is full (counted)."""
        # (find, inlined: three lookups per task on an owner's loop)
        i = self._first.get(task_id) if attempt == 0 else self._later.get((task_id, attempt))
        if i is None:
            i = len(self.ids)
            if i >= self.limit:
                self.dropped += 1
                return -1
            if attempt == 0:
                self._first[task_id] = i
            else:
                self._later[(task_id, attempt)] = i
            self.ids.append(task_id)
            self.attempts.append(attempt)
            self.times.extend(_NO_TIMES)
            self.codes.append(0)
        return i

    def whole(
        self,
        task_id: bytes,
        attempt: int,
        times: bytes,
        infos: tuple[dict[str, Any], ...],
        key: tuple[int, ...],
    ) -> int:
        """A new row made at once: its times (:data:`NUM_STATES` native int64s,
        :data:`ROW_TIMES`'s packing), its infos (oldest first) and ``key``, their
        ids. -2 if the attempt has a row already (the caller merges into it),
        -1 if the buffer is full (counted)."""
        first, later = self._first, self._later
        if (first.get(task_id) if attempt == 0 else later.get((task_id, attempt))) is not None:
            return -2
        i = len(self.ids)
        if i >= self.limit:
            self.dropped += 1
            return -1
        if attempt == 0:
            first[task_id] = i
        else:
            later[(task_id, attempt)] = i
        # The packed infos, by the infos' ids (the batch keeps the infos, so
        # their ids are not reused before it leaves).
        code = self._codes.get(key)
        if code is None:
            code = 0
            for info in infos:
                code = code << _INFO_BITS | (self._info_index(info) + 1)
            self._codes[key] = code
        self.ids.append(task_id)
        self.attempts.append(attempt)
        self.times.frombytes(times)
        self.codes.append(code)
        return i

    def _info_index(self, info: dict[str, Any]) -> int:
        k = self._info_at.get(id(info))
        if k is None:  # (kept in infos: its id is not reused before the batch leaves)
            k = self._info_at[id(info)] = len(self.infos)
            self.infos.append(info)
        return k

    def add_info(self, i: int, info: dict[str, Any]) -> None:
        code = self.codes[i]
        if code >= _FULL:
            return
        self.codes[i] = code << _INFO_BITS | (self._info_index(info) + 1)

    def encode(self) -> Batch:
        """The batch (see the module for the layout); each info written once."""
        ids, codes = self.ids, self.codes
        # The groups: runs of rows alike, in row order. Rows come in waves
        # (the calls finished by one reply batch, those still pending at the
        # flush), so a batch is a few long runs, found and sent as they lie
        # with no Python work per row; many short runs are regrouped instead.
        if len(set(map(len, ids))) <= 1:  # (one id size: the usual)
            size = len(ids[0]) if ids else 0
            runs = [(code, len(list(rows))) for code, rows in groupby(codes)]
            if len(runs) <= MAX_RUNS:
                groups = [[_indexes(code), size, n] for code, n in runs]
                return Batch(
                    _json({"infos": self.infos, "groups": groups}),
                    b"".join(ids),
                    _le_bytes(self.attempts),
                    _le_bytes(self.times),
                )
        by_group: dict[tuple[int, int], list[int]] = {}
        for i in range(len(ids)):
            key = (len(ids[i]), codes[i])
            rows = by_group.get(key)
            if rows is None:
                rows = by_group[key] = []
            rows.append(i)
        order = [i for rows in by_group.values() for i in rows]
        times = array("q")
        for i in order:
            times.extend(self.times[i * NUM_STATES : (i + 1) * NUM_STATES])
        attempts = self.attempts
        groups = [[_indexes(code), size, len(rows)] for (size, code), rows in by_group.items()]
        return Batch(
            _json({"infos": self.infos, "groups": groups}),
            b"".join([ids[i] for i in order]),
            _le_bytes(array("q", [attempts[i] for i in order])),
            _le_bytes(times),
        )


class Batch(NamedTuple):
    """A batch as it travels (the ``AddTaskEvents`` request's fields)."""

    rows: bytes  # JSON: the infos and the groups
    ids: bytes
    attempts: bytes
    times: bytes


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _le_bytes(values: array[int]) -> bytes:
    """An int64 array's bytes, little-endian on any machine."""
    if sys.byteorder == "little":
        return values.tobytes()
    swapped = array("q", values)
    swapped.byteswap()
    return swapped.tobytes()


def _from_le(data: bytes) -> array[int]:
    values = array("q", data)
    if sys.byteorder != "little":
        values.byteswap()
    return values


def _indexes(code: int) -> list[int]:
    out = []
    while code:
        out.append((code & _INFO_MASK) - 1)
        code >>= _INFO_BITS
    out.reverse()
    return out


#: A checked row: (task id hex, attempt, times per state, the infos it names).
Row = tuple[str, int, list[int], list[dict[str, Any]]]


def decode(batch: Batch) -> list[Row]:
    """The rows of a batch, checked; ValueError names the first bad part."""
    try:
        head = json.loads(batch.rows)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"task events are not JSON: {e}") from None
    if type(head) is not dict or set(head) != {"infos", "groups"}:
        raise ValueError('task events must be {"infos": [...], "groups": [...]}')
    infos, groups = head["infos"], head["groups"]
    if type(infos) is not list or type(groups) is not list:
        raise ValueError("infos and groups must be arrays")
    for i, info in enumerate(infos):
        problem = _check_info(info)
        if problem:
            raise ValueError(f"task event info {i}: {problem}")
    for i, group in enumerate(groups):
        problem = _check_group(group, len(infos))
        if problem:
            raise ValueError(f"task event group {i}: {problem}")
    rows = sum(group[2] for group in groups)
    if len(batch.ids) != sum(group[1] * group[2] for group in groups):
        raise ValueError("ids are not one id of its group's size per row")
    if len(batch.attempts) != 8 * rows:
        raise ValueError("attempts are not one int64 per row")
    if len(batch.times) != 8 * NUM_STATES * rows:
        raise ValueError(f"times are not {NUM_STATES} int64s per row")
    # Whole columns converted at once (in C), then checked and sliced per row.
    attempt_list = _from_le(batch.attempts).tolist()
    time_list = _from_le(batch.times).tolist()
    if not _ints_in(attempt_list, 1 << 31):
        raise ValueError("attempts are not non-negative ints")
    if not _ints_in(time_list, MAX_TIME_US):
        raise ValueError("a time is not microseconds since the epoch")
    ids_hex = batch.ids.hex()
    out: list[Row] = []
    first = offset = 0
    for refs, size, count in groups:
        named = [infos[k] for k in refs]
        width = 2 * size
        for row in range(first, first + count):
            start = row * NUM_STATES
            # Its own list of the shared infos: the gcs's record extends it.
            out.append(
                (
                    ids_hex[offset : offset + width],
                    attempt_list[row],
                    time_list[start : start + NUM_STATES],
                    list(named),
                )
            )
            offset += width
        first += count
    return out


def _check_group(group: Any, infos: int) -> str:
    if type(group) is not list or len(group) != 3:
        return "not [info indexes, id size, count]"
    refs, size, count = group
    if type(refs) is not list or len(refs) > 8:
        return "info indexes is not a short array"
    if not all(type(k) is int and 0 <= k < infos for k in refs):
        return "an info index is out of range"
    if type(size) is not int or not 1 <= size <= 32:
        return "id size is not 1..32"
    if type(count) is not int or not 0 <= count < 1 << 31:
        return "count is not a non-negative int"
    return ""


def _ints_in(values: list[int], limit: int) -> bool:
    """Whether every value is in ``[0, limit)`` (checked in C, not per item)."""
    return not values or (min(values) >= 0 and max(values) < limit)


def _check_info(info: Any) -> str:
    if type(info) is not dict:
        return "not an object"
    for key, value in info.items():
        kind = INFO_FIELDS.get(key)
        if kind is None:
            return f"unknown info field {key!r}"
        if not isinstance(value, kind) or (kind is int and type(value) is not int):
            return f"info field {key!r} has the wrong type"
        if type(value) is int and not 0 <= value < 1 << 31:
            return f"info field {key!r} is out of range"
        limit = MAX_MESSAGE if key == "error_message" else MAX_TEXT
        if isinstance(value, str) and len(value) > limit:
            info[key] = value[:limit]
        if key == "required_resources" and not _is_amounts(value):
            return "required_resources is not a map of finite amounts"
    return ""


def _is_amounts(value: Mapping[Any, Any]) -> bool:
    return len(value) <= 64 and all(
        isinstance(k, str)
        and len(k) <= MAX_TEXT
        and type(v) in (int, float)
        and math.isfinite(v)
        and v >= 0
        for k, v in value.items()
    )


# -- filters (Ray's state API: [("state", "=", "RUNNING"), ...]) ----------------------

FILTER_OPS = ("=", "!=", ">", ">=", "<", "<=")

Filter = tuple[str, str, Any]


def check_filters(filters: Any) -> list[Filter]:
    """Ray's filter predicates, checked: a list of (key, op, value)."""
    if filters is None:
        return []
    if not isinstance(filters, list | tuple):
        raise TypeError("filters must be a list of (key, predicate, value) tuples")
    out = []
    for item in filters:
        if not isinstance(item, list | tuple) or len(item) != 3:
            raise TypeError(f"a filter must be a (key, predicate, value) tuple, got {item!r}")
        key, op, value = item
        if not isinstance(key, str):
            raise TypeError(f"a filter's key must be a column name, got {key!r}")
        if op not in FILTER_OPS:
            raise ValueError(f"unsupported filter predicate {op!r}; use one of {FILTER_OPS}")
        out.append((key, op, value))
    return out


def parse_filter(text: str) -> Filter:
    """A CLI filter (``state=RUNNING``, ``name!=f``, ``attempt_number>0``)."""
    for op in ("!=", ">=", "<=", "=", ">", "<"):
        key, sep, value = text.partition(op)
        if sep and key.strip():
            return key.strip(), op, value.strip()
    raise ValueError(f"cannot read filter {text!r}: write KEY=VALUE (or !=, >, >=, <, <=)")


def matches(row: Mapping[str, Any], filters: list[Filter]) -> bool:
    """Whether a row passes every filter. ``=`` on text ignores case (as Ray's CLI)."""
    return all(_compare(row.get(key), op, want) for key, op, want in filters)


def _compare(have: Any, op: str, want: Any) -> bool:
    if have is None:  # an empty column: equal to nothing but "none"; never ordered
        if op not in ("=", "!="):
            return False
        empty = want is None or str(want).lower() in ("", "none", "null")
        return empty if op == "=" else not empty
    if op in ("=", "!="):
        if isinstance(have, bool) or isinstance(want, bool):
            equal = str(have).lower() == str(want).lower()
        elif isinstance(have, int | float) and not isinstance(want, int | float):
            try:
                equal = have == float(want)
            except (TypeError, ValueError):
                equal = False
        elif isinstance(have, str):
            equal = have.lower() == str(want).lower()
        else:
            equal = have == want
        return equal if op == "=" else not equal
    try:
        a, b = float(have), float(want)
    except (TypeError, ValueError):
        a, b = str(have), str(want)  # type: ignore[assignment]
    if op == ">":
        return a > b
    if op == ">=":
        return a >= b
    if op == "<":
        return a < b
    return a <= b
