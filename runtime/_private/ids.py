"""Identifiers.

Ids are plain ``bytes`` for speed (hashing and comparing them is on every hot
path). A task id is the submitting worker's 8-byte random prefix plus an
8-byte counter, so ids are unique without coordination; an object id is the
id of the task that creates it plus a 4-byte index: 1..n for the task's
returns, 0 for an object made by ``put`` (whose "task" id is drawn from the
same counter).
"""

from __future__ import annotations

import itertools
import os
import struct

TASK_ID_SIZE = 16
OBJECT_ID_SIZE = TASK_ID_SIZE + 4
_INDEX = struct.Struct(">I")


#: Bytes of a job id; its wire form is the job's number, its text (as Ray's) the
#: hex of these bytes, little-endian: job 1 is "01000000".
JOB_ID_SIZE = 4


def job_bytes(job_id: int) -> bytes:
    return job_id.to_bytes(JOB_ID_SIZE, "little")


def job_hex(job_id: int) -> str:
    """A job's id as users see it (``get_job_id()``, the state API, metrics' labels)."""
    return job_id.to_bytes(JOB_ID_SIZE, "little").hex()


def random_id(size: int = 16) -> bytes:
    return os.urandom(size)


#: Bytes of the node id at the start of every worker id (after one kind byte).
NODE_PREFIX = 7


def worker_id(kind: bytes, node_id: bytes, tail: bytes) -> bytes:
    """A worker id that names its node: kind (b"W", b"D"), the node id's
    first bytes, then 8 unique bytes. Objects owned by workers of a dead
    node can then be found from their owner ids alone."""
    return kind + node_id[:NODE_PREFIX].ljust(NODE_PREFIX, b"\0") + tail[-8:].rjust(8, b"\0")


def node_prefix(owner: bytes) -> bytes:
    """The node part of a worker id made by :func:`worker_id`."""
    return owner[1 : 1 + NODE_PREFIX]


class IdGenerator:
    """Makes task and object ids for one worker; safe from any thread."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8)
        # itertools.count is atomic under the GIL: no lock needed.
        self._counter = itertools.count(1)

    def task_id(self) -> bytes:
        return self._prefix + next(self._counter).to_bytes(8, "big")

    def put_id(self) -> bytes:
        return self.task_id() + _INDEX.pack(0)


def return_id(task_id: bytes, index: int) -> bytes:
    """The id of a task's ``index``-th return object (0-based)."""
    return task_id + _INDEX.pack(index + 1)


_FIRST_RETURN = _INDEX.pack(1)  # return_id(task_id, 0)'s suffix


def return_ids_of(task_id: bytes, count: int) -> tuple[bytes, ...]:
    """The ids of a task's ``count`` return objects (a tuple: once the cyclic
    collector has seen it, it is not tracked any more)."""
    if count == 1:
        return (task_id + _FIRST_RETURN,)
    return tuple([return_id(task_id, i) for i in range(count)])


def task_of(object_id: bytes) -> bytes:
    return object_id[:TASK_ID_SIZE]


def return_index(object_id: bytes) -> int:
    """``index`` of ``return_id(task_id, index)`` (-1 for a put's id)."""
    return int(_INDEX.unpack(object_id[TASK_ID_SIZE:])[0]) - 1
