"""Task errors and worker deaths."""

from __future__ import annotations

import os
import signal
import tempfile
import time

import pytest
from conftest import assert_no_orphans, process_running, wait_until

import runtime
from runtime.exceptions import ActorDiedError, TaskError, WorkerCrashedError


class CustomError(Exception):
    def __init__(self, code):
        super().__init__(f"custom {code}")
        self.code = code


@runtime.remote
def raises_value_error():
    raise ValueError("the remote message")


@runtime.remote
def raises_custom():
    raise CustomError(42)


@runtime.remote
def fail_times(path, times, how):
    """Fails (by ``how``) the first ``times`` calls, counted in a file."""
    with open(path, "a+") as f:
        f.seek(0)
        count = len(f.read())
        f.write("x")
    if count < times:
        if how == "exit":
            os._exit(1)
        if how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if how == "raylet":  # as a call into this node's dead raylet raises
            raise runtime.exceptions.LocalRayletDiedError("this node's raylet is gone")
        raise RuntimeError(f"attempt {count}")
    return count


@pytest.fixture
def counter_file():
    fd, path = tempfile.mkstemp()
    os.close(fd)
    yield path
    os.unlink(path)


def test_task_error_is_an_instance_of_the_cause(cluster):
    with pytest.raises(ValueError) as info:
        runtime.get(raises_value_error.remote())
    err = info.value
    assert isinstance(err, TaskError)
    assert "the remote message" in str(err)
    assert "raises_value_error" in str(err) and "Traceback" in str(err)
    assert "_executor.py" not in str(err)


def test_a_function_sent_by_value_names_its_file_and_line(cluster):
    # Local, so pickled by value (cloudpickle alone would name "<dynamic-code>").
    def local_failure():
        raise KeyError("from a local function")

    with pytest.raises(KeyError) as info:
        runtime.get(runtime.remote(local_failure).remote())
    message = str(info.value)
    assert f'File "{__file__}"' in message and "<dynamic-code>" not in message
    assert 'raise KeyError("from a local function")' in message  # the source line


def test_custom_exception_keeps_its_fields(cluster):
    with pytest.raises(CustomError) as info:
        runtime.get(raises_custom.remote())
    assert info.value.code == 42


class Abort(BaseException):
    """Not an Exception: ``except Exception`` in the runtime would let it through."""


@runtime.remote(max_retries=0)
def raises_base(how):
    if how == "group":
        raise ExceptionGroup("several", [ValueError("a"), KeyError("b")])
    raise Abort("stop")


@runtime.remote(max_retries=0)
async def raises_base_async():
    raise Abort("stop, async")


@runtime.remote(max_retries=0)
def yields_then_raises_base():
    yield 1
    raise Abort("stop, streaming")


@runtime.remote
class Aborting:
    def sync_call(self):
        raise Abort("stop, in a sync method")

    def ok(self):
        return "still serving"


def test_a_base_exception_fails_the_task_and_the_worker_serves_on(cluster):
    # Once, it ended the loop's task that serves the worker: every call hung.
    for _ in range(2):
        with pytest.raises(Abort, match="stop") as info:
            runtime.get(raises_base.remote("base"), timeout=60)
        assert isinstance(info.value, TaskError)
    with pytest.raises(Abort, match="stop, async"):
        runtime.get(raises_base_async.remote(), timeout=60)
    gen = yields_then_raises_base.remote()
    assert runtime.get(next(gen), timeout=60) == 1
    with pytest.raises(Abort, match="stop, streaming"):
        runtime.get(next(gen), timeout=60)
    actor = Aborting.remote()
    with pytest.raises(Abort, match="in a sync method"):
        runtime.get(actor.sync_call.remote(), timeout=60)
    assert runtime.get(actor.ok.remote(), timeout=60) == "still serving"
    # An exception group arrives as one, so except* sorts it as in Ray.
    try:
        runtime.get(raises_base.remote("group"), timeout=60)
    except* ValueError as values:
        assert [str(e) for e in values.exceptions] == ["a"]
    except* KeyError as keys:
        assert len(keys.exceptions) == 1


class PairError(Exception):
    def __init__(self, a, b):  # its args are one message: pickle cannot call this back
        super().__init__(f"pair {a}-{b}")
        self.a = a


@runtime.remote
def raises_pair():
    raise PairError(1, 2)


@runtime.remote
def raises_from_its_own_module():
    import only_here  # on the worker's path only (its working_dir)

    raise only_here.LocalError("from a module the driver cannot import")


def test_an_exception_that_pickle_cannot_rebuild_still_arrives(cluster, tmp_path):
    # An __init__ that does not take back its args: rebuilt without calling it.
    with pytest.raises(PairError, match="pair 1-2") as info:
        runtime.get(raises_pair.remote())
    assert isinstance(info.value, TaskError) and info.value.a == 1
    assert isinstance(info.value.cause, PairError) and "raise PairError" in str(info.value)
    # A class the driver cannot import: the error and its traceback, saying so.
    (tmp_path / "only_here.py").write_text("class LocalError(Exception):\n    pass\n")
    env = {"working_dir": str(tmp_path)}
    with pytest.raises(TaskError) as info:
        runtime.get(raises_from_its_own_module.options(runtime_env=env).remote(), timeout=60)
    text = str(info.value)
    assert "only_here.LocalError: from a module the driver cannot import" in text
    assert "could not be rebuilt here" in text and "only_here" in text
    assert info.value.cause is None


def test_failed_dependency_fails_the_dependent(cluster):
    @runtime.remote
    def use(x):
        return x

    with pytest.raises(ValueError, match="the remote message"):
        runtime.get(use.remote(raises_value_error.remote()))


def test_arguments_already_here_pass_at_once_in_order_and_a_failed_one_fails(cluster):
    """Ref arguments found ready at submission are resolved with no wait; a
    call so resolved still runs after an earlier call of the same caller that
    waits for its own; a ref that has already failed fails the task or call."""

    @runtime.remote
    def use(x):
        return x

    @runtime.remote
    def later(x):
        time.sleep(0.3)  # the work: the call after it must not overtake it
        return x

    @runtime.remote
    class Log:
        def __init__(self):
            self.seen = []

        def add(self, x):
            self.seen.append(x)
            return x

        def read(self):
            return self.seen

    failed = raises_value_error.remote()
    runtime.wait([failed])  # failed by now: the submissions below find it here
    ready = runtime.put(5)
    log = Log.remote()
    assert runtime.get([use.remote(ready), log.add.remote(ready)]) == [5, 5]
    log.add.remote(later.remote(1))
    log.add.remote(ready)
    assert runtime.get(log.read.remote()) == [5, 1, 5]
    for ref in (use.remote(failed), log.add.remote(failed)):
        with pytest.raises(ValueError, match="the remote message"):
            runtime.get(ref)


def test_worker_exit_is_retried(cluster, counter_file):
    assert runtime.get(fail_times.remote(counter_file, 2, "exit"), timeout=60) == 2


@runtime.remote(max_retries=0)
def my_pid():
    return os.getpid()


def test_a_task_never_goes_to_a_lingering_lease_whose_worker_died():
    """A lease lingers after its last task (here for a minute); if its worker
    dies meanwhile, the next task of that shape goes to another worker and
    spends no retry (it has none) on the dead one."""
    ctx = runtime.init(num_cpus=1, _system_config={"lease_linger_s": 60.0})
    assert ctx.session_dir is not None
    try:
        pid = runtime.get(my_pid.remote())
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not process_running(pid), what="the worker's end")
        # A round trip of another shape: this process's loop has turned over
        # the dead worker's closed connection by its end.
        assert runtime.get(my_pid.options(num_cpus=0).remote(), timeout=60) != pid
        assert runtime.get(my_pid.remote(), timeout=60) != pid
    finally:
        runtime.shutdown()
        assert_no_orphans(ctx.session_dir)


def test_a_task_whose_raylet_died_under_it_is_retried_as_a_worker_death(cluster, counter_file):
    # Not the task's own error: its worker dies with the node (test_multinode has
    # the real thing; its timing rarely lets the error out before the worker goes).
    assert runtime.get(fail_times.remote(counter_file, 1, "raylet"), timeout=60) == 1
    with pytest.raises(WorkerCrashedError, match="raylet is gone"):
        runtime.get(fail_times.options(max_retries=0).remote(counter_file, 5, "raylet"))


def test_worker_sigkill_is_retried(cluster, counter_file):
    assert runtime.get(fail_times.remote(counter_file, 1, "sigkill"), timeout=60) == 1


def test_worker_crash_without_retries(cluster, counter_file):
    """The error names how the worker's process ended, as its raylet saw it."""
    with pytest.raises(WorkerCrashedError, match=r"fail_times(.|\n)*exited with code 1"):
        runtime.get(fail_times.options(max_retries=0).remote(counter_file, 5, "exit"), timeout=60)
    with pytest.raises(WorkerCrashedError, match=r"\(pid=\d+\) was killed by SIGKILL"):
        runtime.get(fail_times.options(max_retries=0).remote(counter_file, 9, "sigkill"))


@runtime.remote(max_restarts=0)
class Exits:
    def pid(self):
        return os.getpid()

    def exit(self, code):
        os._exit(code)


def test_an_actors_death_names_how_its_process_ended(cluster):
    actor = Exits.remote()
    with pytest.raises(ActorDiedError, match=r"worker process \(pid=\d+\) exited with code 7"):
        runtime.get(actor.exit.remote(7), timeout=60)
    killed = Exits.remote()
    os.kill(runtime.get(killed.pid.remote()), signal.SIGKILL)
    with pytest.raises(ActorDiedError, match="was killed by SIGKILL"):
        runtime.get(killed.pid.remote(), timeout=60)


def test_worker_crash_exhausts_retries(cluster, counter_file):
    ref = fail_times.options(max_retries=2).remote(counter_file, 10, "exit")
    with pytest.raises(WorkerCrashedError, match="max_retries=2"):
        runtime.get(ref, timeout=60)
    with open(counter_file) as f:
        assert len(f.read()) == 3


def test_application_errors_are_not_retried_by_default(cluster, counter_file):
    with pytest.raises(RuntimeError, match="attempt 0"):
        runtime.get(fail_times.remote(counter_file, 1, "raise"))


def test_retry_exceptions(cluster, counter_file, caplog):
    ref = fail_times.options(retry_exceptions=True, max_retries=3).remote(counter_file, 2, "raise")
    assert runtime.get(ref) == 2
    # Each retry is said, as Ray says it (the retries left, and the error).
    said = [r.getMessage() for r in caplog.records if "will be retried" in r.getMessage()]
    assert len(said) == 2 and "There are 3 retries remaining" in said[0], said
    assert "attempt 0" in said[0] and "There are 2 retries remaining" in said[1]


def test_retry_exceptions_list(cluster, counter_file):
    ref = fail_times.options(retry_exceptions=[KeyError], max_retries=3).remote(
        counter_file, 1, "raise"
    )
    with pytest.raises(RuntimeError, match="attempt 0"):
        runtime.get(ref)
    ref = fail_times.options(retry_exceptions=[RuntimeError], max_retries=3).remote(
        counter_file, 2, "raise"
    )
    assert runtime.get(ref) == 2


def test_cluster_keeps_working_after_crashes(cluster, counter_file):
    @runtime.remote
    def ok(i):
        return i

    runtime.get(fail_times.remote(counter_file, 3, "exit"), timeout=60)
    assert runtime.get([ok.remote(i) for i in range(20)]) == list(range(20))
