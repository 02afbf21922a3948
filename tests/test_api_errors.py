"""Bad input: clear errors at the call site, nothing half-submitted."""

from __future__ import annotations

import threading

import pytest

import runtime


@runtime.remote
def f(x=None):
    return x


@runtime.remote
def anything(*args, **kwargs):
    return args, kwargs


def test_calling_a_remote_function_directly():
    with pytest.raises(TypeError, match=r"f\.remote"):
        f(1)


def test_unknown_option():
    with pytest.raises(ValueError, match="num_cpu"):
        runtime.remote(num_cpu=1)
    with pytest.raises(ValueError, match="bogus"):
        f.options(bogus=True)


def test_wrong_option_types():
    with pytest.raises(TypeError, match="num_cpus"):
        runtime.remote(num_cpus="two")
    with pytest.raises(TypeError, match="max_retries"):
        f.options(max_retries=1.5)
    with pytest.raises(ValueError, match="num_gpus"):
        f.options(num_gpus=-1)
    with pytest.raises(TypeError, match="retry_exceptions"):
        f.options(retry_exceptions=[1])
    with pytest.raises(ValueError, match="num_cpus"):
        f.options(resources={"CPU": 1})
    # Amounts are counted in 1/10000, as in Ray: a finer one would count as none.
    with pytest.raises(ValueError, match="below the smallest amount"):
        f.options(num_cpus=0.00001)
    with pytest.raises(ValueError, match="below the smallest amount"):
        f.options(resources={"custom": 1e-5})
    f.options(num_cpus=0.0001, resources={"custom": 0})


def test_decorator_with_positional_arguments():
    with pytest.raises(TypeError, match="keyword"):
        runtime.remote(1, 2)


def test_api_before_init_without_auto_init(monkeypatch):
    monkeypatch.setenv("RUNTIME_AUTO_INIT", "0")
    with pytest.raises(runtime.exceptions.RuntimeNotInitializedError, match="init"):
        runtime.put(1)


def test_unpicklable_argument_names_it_and_submits_nothing(cluster):
    worker = runtime.api._context.current()
    lock = threading.Lock()
    before = worker.submitter.stats()
    with pytest.raises(TypeError, match=r"argument 1 .*lock"):
        anything.remote(1, lock)
    with pytest.raises(TypeError, match=r"keyword argument 'x'.*inspect_serializability"):
        anything.remote(x=lock)
    assert worker.submitter.stats() == before
    assert runtime.get(f.remote(5)) == 5

    def uses_the_lock() -> int:
        with lock:
            return 1

    with pytest.raises(TypeError, match="inspect_serializability"):
        runtime.remote(uses_the_lock).remote()


def test_inspect_serializability_finds_the_part(capsys):
    from runtime.util import inspect_serializability

    lock = threading.Lock()

    def uses_the_lock() -> int:
        with lock:
            return 1

    class Holder:
        def __init__(self) -> None:
            self.fine = [1, 2]
            self.nested = {"inner": [1, lock]}

    ok, failures = inspect_serializability(uses_the_lock, name="uses_the_lock")
    assert not ok and [(f.name, f.obj) for f in failures] == [("uses_the_lock.lock", lock)]
    ok, failures = inspect_serializability(Holder(), name="holder")
    assert not ok and [f.name for f in failures] == ["holder.nested['inner'][1]"]
    assert "holder.nested['inner'][1]" in capsys.readouterr().out
    assert inspect_serializability({"a": [1, 2]}) == (True, set())
    ok, failures = inspect_serializability(Holder(), depth=0)  # not looked into
    assert not ok and [f.name for f in failures] == ["Holder"]
    with pytest.raises(ValueError, match="depth"):
        inspect_serializability(1, depth=-1)


def test_get_argument_checks(cluster):
    with pytest.raises(TypeError, match="ObjectRef"):
        runtime.get(1)
    with pytest.raises(ValueError, match="ObjectRef"):  # Ray's type for it
        runtime.get(1)
    with pytest.raises(TypeError, match="item 1"):
        runtime.get([runtime.put(1), 2])
    with pytest.raises(ValueError, match="timeout"):
        runtime.get(runtime.put(1), timeout=-1)
    # A remote function or method passed uncalled says what was meant.
    with pytest.raises(TypeError, match=r"call \.remote\(\.\.\.\) on it"):
        runtime.get(f)
    with pytest.raises(TypeError, match=r"the \.remote method itself"):
        runtime.wait([f.remote])


def test_wait_argument_checks(cluster):
    ref = runtime.put(1)
    with pytest.raises(TypeError, match="list"):
        runtime.wait(ref)
    with pytest.raises(ValueError, match="num_returns"):
        runtime.wait([ref], num_returns=2)
    with pytest.raises(ValueError, match="duplicates"):
        runtime.wait([ref, ref])


def test_put_of_a_ref_and_of_unpicklable(cluster):
    ref = runtime.put(1)
    with pytest.raises(TypeError, match="ObjectRef"):
        runtime.put(ref)
    with pytest.raises(TypeError, match="lock"):
        runtime.put(threading.Lock())


def test_init_twice(cluster):
    with pytest.raises(RuntimeError, match="already"):
        runtime.init()
    assert runtime.init(ignore_reinit_error=True).address == cluster.address


def test_init_argument_checks():
    with pytest.raises(TypeError, match="num_cpus"):
        runtime.init(num_cpus="4")
    with pytest.raises(ValueError, match="joining"):
        runtime.init(address="127.0.0.1:1", num_cpus=2)
    with pytest.raises(TypeError):
        runtime.init(bogus=1)  # type: ignore[call-arg]
    # A Ray Client or dashboard URL says what it is (it was looked up as a host name).
    with pytest.raises(ValueError, match="Ray Client"):
        runtime.init(address="ray://127.0.0.1:10001")
    with pytest.raises(ValueError, match="web address"):
        runtime.init(address="http://127.0.0.1:8265")
    assert not runtime.is_initialized()


def test_rays_exception_names_and_classes():
    # Ray code that catches any of Ray's errors by name runs (an except clause
    # naming a missing one would fail as soon as anything is raised).
    e = runtime.exceptions
    lost = (
        "OwnerDiedError",
        "ObjectFreedError",
        "ObjectReconstructionFailedError",
        "ObjectReconstructionFailedMaxAttemptsExceededError",
        "ObjectReconstructionFailedLineageEvictedError",
        "ObjectFetchTimedOutError",
        "ReferenceCountingAssertionError",
        "StreamingGeneratorReplayInconsistentError",
    )
    assert all(issubclass(getattr(e, name), e.ObjectLostError) for name in lost)
    assert issubclass(e.StreamingGeneratorReplayInconsistentError, e.RaySystemError)  # as Ray's
    others = (
        "ActorUnavailableError",
        "AsyncioActorExit",
        "OutOfMemoryError",
        "OutOfDiskError",
        "RayActorError",
        "RayTaskError",
        "TaskCancelledError",
        "WorkerCrashedError",
        "RuntimeEnvSetupError",
        "ObjectStoreFullError",
        "AuthenticationError",
        "PendingCallsLimitExceeded",
        "ActorHandleNotFoundError",
        "RpcError",
        "UserCodeException",
        "UnserializableException",
        "ObjectRefStreamEndOfStreamError",
    )
    assert all(issubclass(getattr(e, name), e.RayError) for name in others)
    # As in Ray, catching RayActorError catches every error of an actor's call.
    assert issubclass(e.ActorDiedError, e.RayActorError)
    assert issubclass(e.ActorUnavailableError, e.RayActorError)
    assert issubclass(e.ActorAlreadyExistsError, ValueError)
    assert issubclass(e.GetTimeoutError, TimeoutError)
    assert set(lost + others) <= set(e.__all__)


def test_rays_module_paths_resolve_after_import_runtime_alone():
    # Ray's docs write ray.util.scheduling_strategies.X and ray.actor.ActorMethod
    # with only ``import ray``; the same lines run with ``import runtime as ray``.
    import runtime.remote_function

    u = runtime.util
    assert u.scheduling_strategies.NodeAffinitySchedulingStrategy is (
        runtime.api.NodeAffinitySchedulingStrategy
    )
    assert callable(u.placement_group)  # the function, as in Ray, not the module
    assert u.accelerators.NVIDIA_TESLA_V100 == "V100"
    assert runtime.actor.ActorMethod is runtime.api.ActorMethod
    assert runtime.actor.method is runtime.method

    @runtime.remote
    def f() -> None: ...

    assert isinstance(f, runtime.remote_function.RemoteFunction)


def test_log_once_logs_each_key_once(monkeypatch):
    from runtime.util import debug

    monkeypatch.setattr(debug, "_logged", set())
    monkeypatch.setattr(debug, "_disabled", False)
    assert runtime.util.log_once("k") and not runtime.util.log_once("k")
    assert runtime.util.log_once("other")
    debug.reset_log_once("k")
    assert runtime.util.log_once("k")
    runtime.util.disable_log_once_globally()
    assert not runtime.util.log_once("new")


def test_rays_id_classes_round_trip_and_refuse_bad_input() -> None:
    for kind, size in ((runtime.NodeID, 16), (runtime.ActorID, 16), (runtime.JobID, 4)):
        made = kind.from_random()
        assert kind.from_hex(made.hex()) == made == kind.from_binary(made.binary())
        assert kind.size() == size and kind.nil().is_nil() and not made.is_nil()
        assert made != runtime.UniqueID(b"\0" * 16) and hash(made) == hash(kind(made.binary()))
    with pytest.raises(ValueError, match="is not hex"):
        runtime.NodeID.from_hex("zz")
    with pytest.raises(ValueError, match="JobID takes 4 bytes"):
        runtime.JobID(b"12345")
    # Ray's job ids are little-endian: job 1's hex is 01000000.
    assert runtime.JobID.from_int(1).hex() == "01000000"
    # A nil ref needs no runtime (a placeholder, as in Ray).
    nil = runtime.ObjectRef.nil()
    assert nil.is_nil() and nil == runtime.ObjectRef.nil() and nil.call_site() == ""
    assert not runtime.ObjectRef.from_random().is_nil()
    assert runtime.JobID.from_hex("02000000").int() == 2
    with pytest.raises(ValueError, match="from_int"):
        runtime.JobID.from_int(-1)
    assert runtime.ObjectID is runtime.ObjectRef
