"""The worker template: workers forked from a process that has imported their
code, each one a worker as a started one would be; a template that dies or
is not wanted leaves workers starting on their own."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
from typing import Any

import pytest
from conftest import assert_no_orphans, cmdline, process_running, runtime_pids, wait_until

import runtime


def _pids(session_dir: str, needle: bytes) -> list[int]:
    return [p for p in runtime_pids(session_dir) if needle in cmdline(p)]


_TEMPLATE = b"\x00--template\x00"  # (a raylet's has --template-fd)


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[1])


def _template(session_dir: str) -> int:
    """The template's pid (a child it has just forked shows its command line
    until it sets its own)."""
    wait_until(lambda: bool(_pids(session_dir, _TEMPLATE)), what="the worker template")
    pids = _pids(session_dir, _TEMPLATE)
    (pid,) = [p for p in pids if _ppid(p) not in pids]
    return pid


def _raylet(session_dir: str) -> int:
    (pid,) = _pids(session_dir, b"runtime.raylet")
    return pid


@runtime.remote
def whoami() -> dict[str, object]:
    with open(f"/proc/{os.getpid()}/cmdline", "rb") as f:
        cmdline = f.read()
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "random": random.random(),
        "cmdline": cmdline,
        "argv": sys.argv[1:],
        "stdin": os.readlink("/proc/self/fd/0"),
        "main": sys.modules["__main__"].__spec__.name,  # type: ignore[union-attr]
    }


@runtime.remote
class Who:
    def random(self) -> float:
        return random.random()

    def pid(self) -> tuple[int, int]:
        return os.getpid(), os.getppid()


def test_workers_are_forked_from_the_template(cluster: runtime.RuntimeContext) -> None:
    assert cluster.session_dir is not None
    template = _template(cluster.session_dir)
    actors = [Who.remote() for _ in range(2)]
    seen = runtime.get([a.pid.remote() for a in actors])
    assert {ppid for _, ppid in seen} == {template}
    assert len({pid for pid, _ in seen}) == 2
    rows = runtime.get([whoami.remote() for _ in range(4)])
    for row in rows:
        assert row["ppid"] == template
        # It looks, to ps and to itself, as a worker started on its own does.
        assert b"runtime.api.worker_process --host" in row["cmdline"]  # type: ignore[operator]
        assert b"--template" not in row["cmdline"]  # type: ignore[operator]
        assert "--worker-id" in row["argv"] and "--parent-fd" in row["argv"]  # type: ignore[operator]
        assert row["stdin"] == os.devnull
        assert row["main"] == "runtime.api.worker_process"
    # Each worker has a random sequence of its own, not the template's.
    by_pid = {row["pid"]: row["random"] for row in rows}
    by_pid[seen[0][0]] = runtime.get(actors[0].random.remote())
    by_pid[seen[1][0]] = runtime.get(actors[1].random.remote())
    assert len(set(by_pid.values())) == len(by_pid)


def _pid_of(actor: object) -> int | None:
    try:
        return runtime.get(actor.pid.remote())[0]  # type: ignore[attr-defined,no-any-return]
    except runtime.exceptions.RayActorError:
        return None  # a call that met the death


def test_a_killed_template_leaves_the_node_working() -> None:
    ctx = runtime.init(num_cpus=2)
    assert ctx.session_dir is not None
    try:
        template = _template(ctx.session_dir)
        raylet = _raylet(ctx.session_dir)
        forked = Who.options(max_restarts=1).remote()
        pid, ppid = runtime.get(forked.pid.remote())
        assert ppid == template
        os.kill(template, signal.SIGKILL)
        wait_until(lambda: not process_running(template), what="the template to die")
        # Its workers live on; new ones start on their own (the raylet's children).
        assert runtime.get(forked.pid.remote())[0] == pid
        # (the first may take a worker forked before, idle since: ask for more)
        fresh = runtime.get([a.pid.remote() for a in [Who.remote() for _ in range(3)]])
        assert raylet in {ppid for _, ppid in fresh}
        # A worker it had forked still tells the raylet of its death.
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: _pid_of(forked) not in (pid, None), what="a restart")
        assert runtime.get(forked.pid.remote())[1] == raylet
    finally:
        runtime.shutdown()
        assert_no_orphans(ctx.session_dir)


def test_the_template_ends_with_its_raylet() -> None:
    ctx = runtime.init(num_cpus=1)
    assert ctx.session_dir is not None
    try:
        template = _template(ctx.session_dir)
        worker = runtime.get(whoami.remote())["pid"]
        os.kill(_raylet(ctx.session_dir), signal.SIGKILL)
        wait_until(lambda: not process_running(template), what="the template to end")
        wait_until(lambda: not process_running(worker), what="its worker to end")  # type: ignore[arg-type]
    finally:
        runtime.shutdown()
        assert_no_orphans(ctx.session_dir)


def test_workers_of_an_environment_are_forked_with_it(tmp_path: Any) -> None:
    """env_vars, working_dir and py_modules take effect in a forked worker as
    in a started one (OMP_NUM_THREADS, read by the worker's code at import,
    is the environment's); what only a start reads is not forked."""
    (tmp_path / "shipped_mod.py").write_text("VALUE = 'from the working_dir'\n")
    env = {"env_vars": {"TEMPLATE_TEST": "1", "OMP_NUM_THREADS": "3"}, "working_dir": str(tmp_path)}
    ctx = runtime.init(num_cpus=1, runtime_env=env)
    assert ctx.session_dir is not None
    try:
        template = _template(ctx.session_dir)

        @runtime.remote
        def inside() -> tuple[int, str | None, str | None, str, str]:
            import shipped_mod

            return (
                os.getppid(),
                os.environ.get("TEMPLATE_TEST"),
                os.environ.get("OMP_NUM_THREADS"),
                shipped_mod.VALUE,
                os.path.basename(os.getcwd()),
            )

        ppid, flag, omp, value, cwd = runtime.get(inside.remote())
        assert ppid == template
        assert (flag, omp, value) == ("1", "3", "from the working_dir")
        assert cwd != os.path.basename(os.getcwd())  # the working_dir's copy

        @runtime.remote(runtime_env={"env_vars": {"PYTHONHASHSEED": "0"}})
        def started() -> tuple[int, int]:
            return os.getppid(), sys.flags.hash_randomization

        # A new interpreter (it read the variable at its start), the
        # template's child all the same.
        assert runtime.get(started.remote()) == (template, 0)
    finally:
        runtime.shutdown()
        assert_no_orphans(ctx.session_dir)


def test_no_template_when_turned_off() -> None:
    ctx = runtime.init(num_cpus=1, _system_config={"worker_template": False})
    assert ctx.session_dir is not None
    try:
        assert runtime.get(whoami.remote())["ppid"] == _raylet(ctx.session_dir)
        assert not _pids(ctx.session_dir, _TEMPLATE)
    finally:
        runtime.shutdown()
        assert_no_orphans(ctx.session_dir)


def test_a_hung_template_is_replaced_by_workers_starting_on_their_own() -> None:
    ctx = runtime.init(num_cpus=1, _system_config={"worker_template_timeout_s": 1.0})
    assert ctx.session_dir is not None
    template = _template(ctx.session_dir)
    try:
        runtime.get(whoami.remote())  # the prestarted worker, forked
        os.kill(template, signal.SIGSTOP)
        # New workers (the first actor may take the idle one): a fork is not
        # answered; the template is killed and the worker starts on its own.
        pids = runtime.get([a.pid.remote() for a in [Who.remote() for _ in range(2)]])
        assert _raylet(ctx.session_dir) in {ppid for _, ppid in pids}
        wait_until(lambda: not process_running(template), what="the hung template to end")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(template, signal.SIGCONT)
        runtime.shutdown()
        assert_no_orphans(ctx.session_dir)


@runtime.remote(max_restarts=1)
class Spawner:
    def spawn(self, detached: bool) -> tuple[int, int]:
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=detached
        )
        return os.getpid(), child.pid

    def pid(self) -> tuple[int, int]:
        return os.getpid(), os.getppid()


def test_what_a_worker_started_ends_with_it(cluster: runtime.RuntimeContext) -> None:
    """A forked worker leads a process group of its own; when it ends (killed
    here, or killed by the runtime), so does what its tasks started and did not
    detach, as Ray kills a worker's child processes when it exits."""
    _children_end_with_their_worker(Spawner.remote())


@pytest.mark.parametrize("template", [True, False], ids=["by-the-template", "by-the-raylet"])
def test_what_a_new_interpreter_started_ends_with_it(template: bool) -> None:
    """So does a worker that runs a new interpreter (its environment is read
    only at a start), whether the template or the raylet started it."""
    ctx = runtime.init(num_cpus=1, _system_config={"worker_template": template})
    assert ctx.session_dir is not None
    try:
        env = {"env_vars": {"PYTHONHASHSEED": "0"}}
        _children_end_with_their_worker(Spawner.options(runtime_env=env).remote())
    finally:
        runtime.shutdown()
        assert_no_orphans(ctx.session_dir)


def _children_end_with_their_worker(spawner: Any) -> None:
    worker, child = runtime.get(spawner.spawn.remote(False))
    _, detached = runtime.get(spawner.spawn.remote(True))
    try:
        assert os.getpgid(child) == worker
        os.kill(worker, signal.SIGKILL)
        wait_until(lambda: not process_running(child), what="the worker's child to end")
        assert process_running(detached)  # a new session of its own: left alone
        wait_until(lambda: _pid_of(spawner) not in (worker, None), what="a restart")
        worker, child = runtime.get(spawner.spawn.remote(False))
        runtime.kill(spawner)
        wait_until(lambda: not process_running(child), what="the killed actor's child to end")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(detached, signal.SIGKILL)
