"""put, get and wait."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import runtime
from runtime.exceptions import GetTimeoutError, OwnerDiedError


@runtime.remote
def sleepy(seconds, value=None):
    time.sleep(seconds)
    return value


def test_put_get_roundtrip(cluster):
    for value in (1, "text", b"bytes", None, [1, {"a": (2, 3)}], {1, 2}, 3.5):
        assert runtime.get(runtime.put(value)) == value


def test_get_list_keeps_order(cluster):
    refs = [runtime.put(i) for i in range(100)]
    assert runtime.get(refs) == list(range(100))
    assert runtime.get(tuple(refs[:3])) == [0, 1, 2]


def test_object_ref_identity(cluster):
    ref = runtime.put(1)
    assert ref == ref and hash(ref) == hash(ref)
    assert len(ref.hex()) == 40 and ref.binary() == bytes.fromhex(ref.hex())
    assert ref != runtime.put(1)


def test_refs_made_from_ids_alone(cluster):
    # Ray's id protocol: a ref from its bytes or hex reads the object when this
    # process owns it (and holds it as any ref does); any other is ownerless.
    ref = runtime.put(41)
    again = runtime.ObjectRef.from_binary(ref.binary())
    assert again == ref and runtime.ObjectRef.from_hex(ref.hex()) == ref
    del ref
    assert runtime.get(again) == 41
    nil = runtime.ObjectRef.nil()
    assert nil.is_nil() and not again.is_nil()

    @runtime.remote
    def echo(value):
        return value

    unknown = runtime.ObjectRef.from_random()
    for made in (lambda: nil, lambda: unknown, lambda: echo.remote(unknown)):
        with pytest.raises(OwnerDiedError, match="its owner is unknown"):
            runtime.get(made(), timeout=60)
    with pytest.raises(ValueError, match="takes 20 bytes"):
        runtime.ObjectRef.from_binary(b"short")
    with pytest.raises(ValueError, match="is not hex"):
        runtime.ObjectRef.from_hex("zz")


def test_get_timeout(cluster):
    ref = sleepy.remote(2)
    start = time.monotonic()
    with pytest.raises(GetTimeoutError):
        runtime.get(ref, timeout=0.1)
    assert time.monotonic() - start < 1.5
    with pytest.raises(TimeoutError):  # GetTimeoutError is a TimeoutError too
        runtime.get(ref, timeout=0)


def test_wait(cluster):
    fast = [sleepy.remote(0, i) for i in range(3)]
    slow = sleepy.remote(5)
    ready, not_ready = runtime.wait([*fast, slow], num_returns=3, timeout=10)
    assert ready == fast and not_ready == [slow]
    ready, not_ready = runtime.wait([slow], timeout=0.1)
    assert ready == [] and not_ready == [slow]
    assert runtime.wait([]) == ([], [])
    with pytest.raises(ValueError, match="num_returns=4 is more than the 3 ObjectRefs"):
        runtime.wait(fast, num_returns=4)
    with pytest.raises(ValueError, match="at least 1"):
        runtime.wait(fast, num_returns=0)


@runtime.remote
def fails():
    raise ValueError("failed")


@runtime.remote
class Gate:
    def __init__(self):
        self.opened = asyncio.Event()

    async def open(self):
        self.opened.set()

    async def passed(self):
        await self.opened.wait()


def test_wait_for_all_counts_a_failed_object_as_ready_and_waits_for_the_rest(cluster):
    # As in Ray: an error is a ready object like any other; wait for all of
    # them does not return at the first error (get does: it raises it).
    gate = Gate.remote()
    failed, held = fails.remote(), gate.passed.remote()
    runtime.wait([failed])
    opener = threading.Timer(0.3, lambda: gate.open.remote())
    opener.start()
    try:
        ready, rest = runtime.wait([failed, held], num_returns=2, timeout=30)
    finally:
        opener.join()
    assert ready == [failed, held] and rest == []


def test_put_objects_are_ready_once_put_returns(cluster):
    # As in Ray: a wait that does not wait at all finds them (small and large).
    refs = [runtime.put(i) for i in range(100)] + [runtime.put(b"x" * 300_000)]
    ready, not_ready = runtime.wait(refs, num_returns=len(refs), timeout=0)
    assert len(ready) == len(refs) and not not_ready
    # Ray's ref protocol: where it was made, its id's size.
    assert refs[0].call_site().startswith("put at test_objects.py:")
    assert not refs[0].is_nil() and runtime.ObjectRef.size() == len(refs[0].binary())


def test_wait_returns_at_most_num_returns(cluster):
    refs = [runtime.put(i) for i in range(5)]
    ready, not_ready = runtime.wait(refs, num_returns=2)
    assert ready == refs[:2] and not_ready == refs[2:]


def test_wait_one_at_a_time(cluster):
    remaining = [sleepy.remote(0, i) for i in range(50)]
    seen = 0
    while remaining:
        ready, remaining = runtime.wait(remaining)
        seen += len(ready)
    assert seen == 50


def test_future(cluster):
    fut = sleepy.remote(0, 7).future()
    assert fut.result(timeout=10) == 7


def test_refs_inside_put_objects(cluster):
    inner = runtime.put("inner")
    outer = runtime.put({"ref": inner})
    got = runtime.get(outer)
    assert runtime.get(got["ref"]) == "inner"


def test_borrowed_ref_in_task(cluster):
    @runtime.remote
    def read(container):
        return runtime.get(container[0]) + "!"

    assert runtime.get(read.remote([runtime.put("x")])) == "x!"


def test_object_put_by_a_task_and_returned(cluster):
    @runtime.remote
    def make():
        return [runtime.put("made in a task")]

    (ref,) = runtime.get(make.remote())
    assert runtime.get(ref) == "made in a task"


def test_dropped_refs_are_freed(cluster):
    worker = runtime.api._context.current()
    baseline = len(worker.store)
    refs = [runtime.put(i) for i in range(100)]
    runtime.get(refs)
    assert len(worker.store) >= baseline + 100
    del refs
    from conftest import wait_until

    wait_until(lambda: len(worker.store) <= baseline, what="freed objects to leave the store")


def test_a_list_of_thousands_of_borrowed_refs_reads_and_frees(cluster):
    """Read with the collector paused (a large pickle), counted without a post
    object per ref, and released in full when dropped."""
    import gc

    from conftest import wait_until

    @runtime.remote
    def make(n):
        return [runtime.put(i) for i in range(n)]

    worker = runtime.api._context.current()
    baseline = len(worker.refs)
    outer = make.remote(5000)
    assert gc.isenabled()
    refs = runtime.get(outer)
    assert gc.isenabled()
    assert runtime.get(refs[4999]) == 4999
    gc.disable()  # the user's choice is kept
    try:
        assert len(runtime.get(outer)) == 5000
        assert not gc.isenabled()
    finally:
        gc.enable()
    del refs, outer
    wait_until(lambda: len(worker.refs) <= baseline, what="the borrowed refs to be released")


@runtime.remote
def plain_result(size: int) -> bytes:
    return b"x" * size


def test_small_plain_results_travel_inline_and_large_ones_go_to_the_store(cluster):
    from runtime._private import serialization
    from runtime.api import _context

    worker = _context.current()
    limit = worker.config.max_inline_object_size
    for size, in_store in ((10, False), (limit - 64, False), (limit + 1, True), (3 << 20, True)):
        ref = plain_result.remote(size)
        assert runtime.get(ref) == b"x" * size
        held = worker.store.get_nowait(ref.binary())
        assert held is not None
        assert (held.metadata == serialization.METADATA_IN_STORE) is in_store, size


class Guarded:
    """Does not pickle on its own (it holds a lock)."""

    def __init__(self, value):
        import threading

        self.value = value
        self.lock = threading.Lock()


@runtime.remote
def value_of(guarded):
    return guarded.value + 1


def test_register_serializer(cluster):
    """Ray's custom serializers: this process pickles the class by them; the
    deserializer travels with each instance (a worker registers nothing)."""
    from runtime.util import deregister_serializer, register_serializer

    with pytest.raises(TypeError, match="lock"):
        runtime.put(Guarded(1))
    register_serializer(
        Guarded, serializer=lambda g: {"value": g.value}, deserializer=lambda d: Guarded(d["value"])
    )
    try:
        back = runtime.get(runtime.put(Guarded(41)))
        assert type(back) is Guarded and back.value == 41
        assert runtime.get(value_of.remote(Guarded(41))) == 42
    finally:
        deregister_serializer(Guarded)
    with pytest.raises(TypeError, match="lock"):
        runtime.put(Guarded(1))
    with pytest.raises(TypeError, match="callable"):
        register_serializer(Guarded, serializer=1, deserializer=lambda d: d)
    with pytest.raises(TypeError, match="class"):
        register_serializer(Guarded(1), serializer=str, deserializer=str)


class GuardedError(Exception):
    """An exception that does not pickle on its own (it holds a lock)."""

    def __init__(self, message, data):
        import threading

        super().__init__(message, data)
        self.message, self.data = message, data
        self.lock = threading.Lock()


def _error_state(error):
    return {"message": error.message, "data": str(error.data)}


def _error_back(state):
    return GuardedError(state["message"], state["data"])


@runtime.remote
def raise_guarded(register):
    if register:
        runtime.util.register_serializer(
            GuardedError, serializer=_error_state, deserializer=_error_back
        )
    raise GuardedError("went wrong", {"complex": "data"})


def test_a_registered_serializer_carries_a_tasks_exception(cluster):
    """Ray's documented custom exception serializers: the cause arrives whole
    (it arrived as None); without one, the cause is rebuilt from its state."""
    with pytest.raises(runtime.exceptions.RayTaskError) as caught:
        runtime.get(raise_guarded.remote(True), timeout=30)
    cause = caught.value.cause
    assert type(cause) is GuardedError and cause.message == "went wrong"
    assert cause.data == "{'complex': 'data'}" and isinstance(caught.value, GuardedError)
    with pytest.raises(GuardedError) as unregistered:
        runtime.get(raise_guarded.remote(False), timeout=30)
    assert type(unregistered.value.cause) is GuardedError


def _settled(worker):
    """Every ref drop posted so far has been counted (the loop runs them in order)."""
    from conftest import wait_until

    marker = runtime.put("marker")
    marker_id = marker.binary()
    del marker
    wait_until(lambda: marker_id not in worker.store, what="a dropped put to be freed")


def test_a_ref_pickled_by_user_code_pins_its_object(cluster):
    """As Ray's ``ray.cloudpickle``: nothing tells when such a pickle is read,
    so the object stays for the pickling process's lifetime (plain pickle too)."""
    import copy
    import pickle

    worker = runtime.api._context.current()
    ref = runtime.put({"hello": "world"})
    by_cloudpickle = runtime.cloudpickle.dumps(ref)
    other = runtime.put([1, 2])
    by_pickle = pickle.dumps(other)
    assert copy.deepcopy([ref])[0] is ref  # (no pickling: no pin of its own)
    del ref, other
    _settled(worker)
    assert runtime.get(runtime.cloudpickle.loads(by_cloudpickle), timeout=30) == {"hello": "world"}
    assert runtime.get(pickle.loads(by_pickle), timeout=30) == [1, 2]

    @runtime.remote
    def read(data):
        return runtime.get(runtime.cloudpickle.loads(data))

    assert runtime.get(read.remote(by_cloudpickle), timeout=30) == {"hello": "world"}


def test_out_of_band_pickling_may_be_refused():
    from runtime.exceptions import OufOfBandObjectRefSerializationException

    runtime.init(num_cpus=1, _system_config={"allow_out_of_band_object_ref_serialization": False})
    try:
        ref = runtime.put(1)
        with pytest.raises(OufOfBandObjectRefSerializationException, match=ref.hex()):
            runtime.cloudpickle.dumps(ref)

        @runtime.remote
        def inner(refs):
            return runtime.get(refs[0])

        assert runtime.get(inner.remote([ref]), timeout=30) == 1  # in band: allowed
    finally:
        runtime.shutdown()
