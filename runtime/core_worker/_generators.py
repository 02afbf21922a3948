"""The owner's side of streaming generator tasks (Ray's ``num_returns="streaming"``).

A streaming task's worker reports each item as it is yielded
(:class:`GeneratorItem`, on the task stream, before the task's reply). The
owner stores item ``i`` under ``return_id(task_id, i + 1)`` (index 0 is the
task's own return: the number of items) and holds one local count on it
until the caller takes its ref (``next_item``), which inherits that count;
so each item is freed on its own once its ref is dropped.

A task retried after its worker died reports its items again from the
first: the caller sees one sequence (an item already stored keeps its
place; only where its copy lives is taken from the new report, as the first
copy may have died with its node).

Lost items are rebuilt as a task's results are (lineage): the task runs
again as a :class:`Replay`, whose items replace the copies of those still
referenced and start no new sequence; a replay that yields fewer items than
the first run cannot rebuild the items past its end
(``StreamingGeneratorReplayInconsistentError``, as in Ray).
A task that fails after ``k`` items gets its error stored as item ``k``,
then the stream ends. With backpressure ``N`` the worker pauses while ``N``
items are unconsumed; the owner tells it each consumption (GeneratorAck).

Invariant per stream: ``consumed <= received``; the items ``consumed ..
received - 1`` each hold one count here; ``total`` (once known) ``>=
received`` and the stream is over when ``received == total`` and all are
consumed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .._private.ids import return_id, return_index, task_of
from .._private.push_stream import PushStream
from .._private.serialization import METADATA_IN_STORE, SerializedObject, store_location
from .._private.task_wire import GeneratorAck, GeneratorItem, ReleasePins, backpressure_of
from ._reference import Reference
from ._task_spec import TaskSpec

if TYPE_CHECKING:
    from ._core_worker import CoreWorker

#: An ack that lets a worker run to its end (the caller dropped the generator).
_UNBOUNDED = 1 << 62


@dataclass(eq=False)
class StreamState:
    task_id: bytes
    name: str
    backpressure: int  # 0: none
    received: int = 0  # items stored, 0 .. received - 1
    consumed: int = 0  # items whose refs the caller took
    total: int | None = None  # known once the task ended
    dropped: bool = False  # the caller's generator is gone
    pinned: bool = False  # some item held refs the worker pins for us
    stream: PushStream | None = None  # the current attempt's (acks go there)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    in_store: list[bytes] = field(default_factory=list)  # items held in a node's store
    # Readers of a lost item waiting for a retry to report it again: (index, waiter).
    lost: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)

    @property
    def over(self) -> bool:
        return self.total is not None and self.consumed >= self.total


@dataclass(eq=False)
class Replay:
    """A streaming task run again to rebuild its lost items."""

    reported: int = 0  # items this run reported: 0 .. reported - 1
    error: SerializedObject | None = None  # how it failed, if it did
    pinned: bool = False  # some item held refs the worker pins for us
    stream: PushStream | None = None


class Generators:
    def __init__(self, worker: CoreWorker) -> None:
        self._worker = worker
        self.streams: dict[bytes, StreamState] = {}
        self.replays: dict[bytes, Replay] = {}

    def track(self, spec: TaskSpec) -> None:
        """On the loop, at submission: a streaming task's items will come."""
        backpressure = backpressure_of(spec.num_returns)
        if backpressure is not None:
            self.streams[spec.task_id] = StreamState(spec.task_id, spec.name, backpressure)

    # -- from the worker ----------------------------------------------------------------
    def on_item(self, spec: TaskSpec, stream: PushStream, item: GeneratorItem) -> None:
        if self.replays:
            replay = self.replays.get(spec.task_id)
            if replay is not None:
                self._on_replayed(spec, replay, stream, item)
                return
        state = self.streams.get(spec.task_id)
        if state is None:
            self._relocate(return_id(spec.task_id, item.index + 1), item.obj)
            return
        if state.stream is not stream:
            state.stream = stream
            if state.backpressure and state.consumed:
                # A new attempt: it may run as far as the caller has read.
                stream.send(GeneratorAck(spec.task_id, state.consumed))
        worker = self._worker
        object_id = return_id(spec.task_id, item.index + 1)
        if item.index != state.received:
            if item.index < state.received:  # reported by an earlier attempt already
                state.pinned = state.pinned or bool(item.nested)
                self._relocate(object_id, item.obj)
                if state.lost:
                    _wake_lost(state, item.index)
            return
        if state.dropped:  # nobody will read it: out of the store at once
            worker.store.put(object_id, item.obj)
            worker.objects.free_owned([object_id])
            state.received += 1
            return
        worker.refs.add_owned(object_id, 1)  # held until the caller takes it
        worker.objects.call_sites[object_id] = f"{state.name}() item {item.index}"
        worker.store.put(object_id, item.obj)
        if item.obj.metadata == METADATA_IN_STORE:
            state.in_store.append(object_id)
        if item.nested:
            state.pinned = True
            worker.ownership.contain(
                object_id, [Reference(oid, owner, worker) for oid, owner in item.nested]
            )
        state.received += 1
        _wake(state)

    def _relocate(self, object_id: bytes, obj: SerializedObject) -> bool:
        """An item reported again (a retry, a replay): its new copy replaces the
        old one if the item is still referenced, else it goes at once. Whether
        it replaced it."""
        worker = self._worker
        if object_id not in worker.refs:
            if obj.metadata == METADATA_IN_STORE:
                worker.objects.free_copy(object_id, obj)
            return False
        old = worker.store.get_nowait(object_id)
        if old is None or old.metadata != METADATA_IN_STORE or obj.metadata != METADATA_IN_STORE:
            return False  # a value held here, or an error: nothing lives in a store
        if store_location(old)[1] == store_location(obj)[1]:
            return False  # the same copy
        worker.store.put(object_id, obj)
        worker.objects.free_copy(object_id, old)  # (gone already if its node died)
        return True

    async def reported_again(self, object_id: bytes) -> None:
        """On the loop: returns once a later attempt of the running stream has
        reported the item again (its copy was lost), or the task has ended."""
        state = self.streams.get(task_of(object_id))
        if state is None or state.total is not None:
            return
        waiter = asyncio.get_running_loop().create_future()
        state.lost.append((return_index(object_id) - 1, waiter))
        await waiter

    # -- replays ------------------------------------------------------------------------
    def replay(self, task_id: bytes) -> Replay:
        """The task runs again to rebuild lost items: its reports go to a replay."""
        replay = self.replays[task_id] = Replay()
        return replay

    def _on_replayed(
        self, spec: TaskSpec, replay: Replay, stream: PushStream, item: GeneratorItem
    ) -> None:
        if replay.stream is not stream:
            replay.stream = stream
            if backpressure_of(spec.num_returns):
                stream.send(GeneratorAck(spec.task_id, _UNBOUNDED))  # nobody reads a replay
        replay.reported = max(replay.reported, item.index + 1)
        object_id = return_id(spec.task_id, item.index + 1)
        if item.nested:
            replay.pinned = True
        if self._relocate(object_id, item.obj) and item.nested:
            worker = self._worker
            worker.ownership.contain(
                object_id, [Reference(oid, owner, worker) for oid, owner in item.nested]
            )

    def on_end(
        self, spec: TaskSpec, total: int | None, error: SerializedObject | None
    ) -> list[bytes]:
        """The task ended: with ``total`` items, or with ``error`` (then stored as
        the next item). Returns its items held in a store and still referenced
        (its lineage keeps them rebuildable); none for a replay."""
        if self.replays:
            replay = self.replays.pop(spec.task_id, None)
            if replay is not None:
                replay.error = error
                self._release_pins(spec.task_id, replay.pinned, replay.stream)
                return []
        state = self.streams.get(spec.task_id)
        if state is None:
            return []
        refs = self._worker.refs
        kept = [object_id for object_id in state.in_store if object_id in refs]
        if error is not None:
            # The error is told as an item; the task's own return is not read.
            self._worker.objects.errors_read.add(return_id(spec.task_id, 0))
            index = state.received
            state.received += 1
            if not state.dropped:
                object_id = return_id(spec.task_id, index + 1)
                self._worker.refs.add_owned(object_id, 1)
                self._worker.store.put(object_id, error)
            total = state.received
        state.total = state.received if total is None else max(total, state.received)
        self._release_pins(spec.task_id, state.pinned, state.stream)
        _wake(state)
        _wake_lost(state, None)
        if state.dropped:
            del self.streams[spec.task_id]
        return kept

    def _release_pins(self, task_id: bytes, pinned: bool, stream: PushStream | None) -> None:
        """The worker held the refs inside items for us; let it go once our own
        registrations of them are done."""
        if pinned and stream is not None:
            self._worker.ownership.after_registrations(lambda: stream.send(ReleasePins(task_id)))

    # -- the caller -------------------------------------------------------------------------
    def ready(self, task_id: bytes) -> bool:
        """Whether ``next_item`` would answer at once."""
        state = self.streams.get(task_id)
        return state is None or state.consumed < state.received or state.over

    async def wait_ready(self, task_id: bytes) -> None:
        """On the loop: returns once ``ready(task_id)``."""
        state = self.streams.get(task_id)
        while state is not None and not self.ready(task_id):
            waiter = asyncio.get_running_loop().create_future()
            state.waiters.append(waiter)
            await waiter

    def finished(self, task_id: bytes) -> bool:
        state = self.streams.get(task_id)
        return state is None or state.over

    async def next_item(self, task_id: bytes, lend_cpu: bool = False) -> bytes | None:
        """On the loop: the id of the next item (its count now the caller's), or
        None at the end. ``lend_cpu``: the caller is a sync task, which lends
        its CPU while it waits (the generator may need it to make the item)."""
        if lend_cpu and not self.ready(task_id):
            async with self._worker.reader.task_blocked(True):
                return await self.next_item(task_id)
        state = self.streams.get(task_id)
        while state is not None and state.consumed >= state.received and not state.over:
            waiter = asyncio.get_running_loop().create_future()
            state.waiters.append(waiter)
            await waiter
        if state is None or state.over:
            return None
        index = state.consumed
        state.consumed += 1
        if state.backpressure and state.stream is not None:
            state.stream.send(GeneratorAck(task_id, state.consumed))
        return return_id(task_id, index + 1)

    def drop(self, task_id: bytes) -> None:
        """On the loop: the caller's generator is gone; the items it did not take go."""
        state = self.streams.get(task_id)
        if state is None:
            return
        state.dropped = True
        for index in range(state.consumed, state.received):
            self._worker.objects.drop_local(return_id(task_id, index + 1))
        state.consumed = state.received
        if state.backpressure and state.stream is not None and state.total is None:
            state.stream.send(GeneratorAck(task_id, _UNBOUNDED))
        if state.total is not None:
            del self.streams[task_id]


def _wake_lost(state: StreamState, reported: int | None) -> None:
    """Wakes the readers of lost items up to ``reported`` (all: None)."""
    waiting, state.lost = state.lost, []
    for index, waiter in waiting:
        if reported is None or index <= reported:
            if not waiter.done():
                waiter.set_result(None)
        else:
            state.lost.append((index, waiter))


def _wake(state: StreamState) -> None:
    waiters, state.waiters = state.waiters, []
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
