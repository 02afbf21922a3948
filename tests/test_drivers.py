"""Drivers as in Ray: what init() returns, auto-init, init() inside tasks,
discovery of a running cluster, drivers started from any folder."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from conftest import ROOT, assert_no_orphans, run_driver

import runtime


def _run(
    argv: list[str], env: dict[str, str], cwd: object = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, cwd=cwd)


def test_init_context_has_attribute_and_dict_access():
    with runtime.init(num_cpus=1) as ctx:
        assert ctx["address"] == ctx.address == ctx.address_info["gcs_address"]
        assert ctx["node_id"] == runtime.get_runtime_context().get_node_id()
        assert ctx["session_dir"] and os.path.isdir(ctx.session_dir)
        assert "node_ip_address" in ctx and ctx.python_version
        assert runtime.init(ignore_reinit_error=True)["address"] == ctx.address
        with pytest.raises(RuntimeError, match="already called"):
            runtime.init()
    assert not runtime.is_initialized()  # the with block shut it down
    assert_no_orphans(ctx.session_dir)


@runtime.remote
def init_inside():
    ctx = runtime.init(ignore_reinit_error=True)
    try:
        runtime.init()
    except RuntimeError as e:
        refused = str(e)
    return ctx["address"], refused, len(runtime.nodes())


def test_init_inside_a_task_never_starts_a_second_cluster(cluster):
    address, refused, nodes = runtime.get(init_inside.remote())
    assert address == cluster.address
    assert "worker" in refused and nodes == 1
    sessions = os.listdir(os.environ["RUNTIME_SESSION_ROOT"])
    assert len([s for s in sessions if s.startswith("session_2")]) >= 1


def test_first_remote_call_starts_a_local_cluster():
    code = (
        "import logging, runtime\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "@runtime.remote\n"
        "def f(x): return x + 1\n"
        "assert not runtime.is_initialized()\n"
        "print(runtime.get(f.remote(1)))\n"
        "assert runtime.is_initialized()\n"
        "runtime.shutdown()\n"
    )
    out = run_driver(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"
    assert out.stderr.count("auto-init") == 1


def test_driver_started_from_the_temp_folder_with_a_runtime_folder(tmp_path):
    # A folder named like the package where the script runs must not shadow it.
    (tmp_path / "runtime").mkdir()
    script = tmp_path / "job.py"
    script.write_text(
        "import runtime\n"
        "@runtime.remote\n"
        "def f(x): return x * 3\n"
        "runtime.init(num_cpus=1)\n"
        "print(runtime.get(f.remote(2)))\n"
        "runtime.shutdown()\n"
    )
    out = _run([sys.executable, str(script)], dict(os.environ), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "6"


def test_init_finds_a_standing_cluster_then_env_address(tmp_path):
    env = dict(os.environ, RUNTIME_SESSION_ROOT=str(tmp_path))
    cli = [sys.executable, "-m", "runtime.cli"]
    start = _run([*cli, "start", "--head", "--port", "0", "--num-cpus", "1"], env)
    assert start.returncode == 0, start.stderr
    try:
        code = (
            "import logging, runtime\n"
            "logging.basicConfig(level=logging.INFO)\n"
            "ctx = runtime.init()\n"
            "print(ctx.address)\n"
            "runtime.shutdown()\n"
        )
        joined = run_driver(code, env=env)
        assert joined.returncode == 0, joined.stderr
        assert "started with 'runtime start'" in joined.stderr
        address = joined.stdout.strip()
        refused = run_driver("import runtime; runtime.init(num_cpus=2)", env=env)
        assert "address='local'" in refused.stderr
        status = _run([*cli, "status"], env)
        assert status.returncode == 0 and "1 alive" in status.stdout
        # RAY_ADDRESS is honoured as RUNTIME_ADDRESS is.
        elsewhere = dict(env, RUNTIME_SESSION_ROOT=str(tmp_path / "none"), RAY_ADDRESS=address)
        by_env = run_driver(code, env=elsewhere)
        assert by_env.returncode == 0, by_env.stderr
        assert by_env.stdout.strip() == address
    finally:
        _run([*cli, "stop"], env)


def test_status_finds_a_driver_started_cluster(cluster):
    status = _run([sys.executable, "-m", "runtime.cli", "status"], dict(os.environ))
    assert status.returncode == 0, status.stderr
    assert "1 alive" in status.stdout


def _lost_part_driver(
    setup: str, role: str, error: str, get_says: str, calls: str, says: str
) -> str:
    """A driver that starts ``running`` (after ``setup``), SIGKILLs its cluster's
    ``role`` process, then checks that the get and each of ``calls`` raise
    ``error`` naming the lost part. Prints its session folder, then "ok"."""
    return f"""
import os, signal, numpy as np, runtime
from runtime.exceptions import {error}
{setup}
print(ctx.session_dir)
runtime.wait([running], timeout=0.5)
pid = [int(line.split()[0]) for line in open(os.path.join(ctx.session_dir, "pids"))
       if {role!r} in line][0]
os.kill(pid, signal.SIGKILL)
try:
    runtime.get(running, timeout=30)
except {error} as e:
    assert {get_says!r} in str(e), e
else:
    raise AssertionError("get succeeded")
for call in ({calls}):
    try:
        call()
    except {error} as e:
        assert {says!r} in str(e)
    else:
        raise AssertionError("no error")
runtime.shutdown()
print("ok")
"""


def test_a_lost_gcs_is_named_by_every_call():
    setup = """
@runtime.remote
def block(name):
    runtime.get(runtime.get_actor(name).wait.remote())
@runtime.remote(num_cpus=0)
class Gate:
    async def wait(self):
        import asyncio
        await asyncio.Event().wait()
ctx = runtime.init(num_cpus=1)
gate = Gate.options(name="g").remote()
running = block.remote("g")
"""
    calls = (
        "lambda: runtime.put(1), lambda: runtime.nodes(), lambda: runtime.get_actor('g'), "
        "lambda: block.remote('g'), lambda: gate.wait.remote()"
    )
    out = run_driver(
        _lost_part_driver(setup, "gcs", "GcsLostError", "control service", calls, "gcs at")
    )
    assert out.returncode == 0, out.stderr
    session_dir, ok = out.stdout.split()
    assert ok == "ok"
    assert "died" not in out.stderr  # no "the worker died" retries
    assert_no_orphans(session_dir)


def test_a_lost_raylet_is_named_by_every_call():
    setup = """
@runtime.remote
def block():
    import threading
    threading.Event().wait()
ctx = runtime.init(num_cpus=1)
stored = runtime.put(np.ones(1 << 20))
running = block.options(max_retries=3).remote()
"""
    calls = (
        "lambda: runtime.put(np.ones(1 << 20)), lambda: runtime.get(stored), lambda: block.remote()"
    )
    code = _lost_part_driver(
        setup, "raylet", "LocalRayletDiedError", "raylet", calls, "this node's raylet"
    )
    out = run_driver(code)
    assert out.returncode == 0, out.stderr
    session_dir, ok = out.stdout.split()
    assert ok == "ok"
    assert "Error" not in out.stderr, out.stderr  # no bare OSError, no retry noise
    assert_no_orphans(session_dir)


def test_get_actor_of_a_missing_name(cluster):
    with pytest.raises(ValueError, match="no actor named 'missing'"):
        runtime.get_actor("missing")


def test_shutdown_with_work_in_flight_is_quiet(tmp_path):
    # What its own teardown ends (a running task, one whose ref was dropped, an
    # actor call, a generator) is no worker death and no unhandled error to report.
    marker = tmp_path / "started"
    code = (
        "import os, time, runtime\n"
        "@runtime.remote\n"
        "def hang(path=None):\n"
        "    if path: open(path, 'w').close()\n"
        "    time.sleep(60)\n"
        "@runtime.remote\n"
        "class Slow:\n"
        "    def call(self): time.sleep(60)\n"
        "@runtime.remote\n"
        "def items():\n"
        "    yield 1\n"
        "    time.sleep(60)\n"
        "    yield 2\n"
        "context = runtime.init(num_cpus=4)\n"
        f"held = hang.remote({str(marker)!r})\n"
        "hang.remote()\n"
        "actor = Slow.remote(); call = actor.call.remote()\n"
        "gen = items.remote(); next(gen)\n"
        "deadline = time.monotonic() + 30\n"
        f"while not os.path.exists({str(marker)!r}) and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "runtime.shutdown()\n"
        "print(context.session_dir)\n"
    )
    out = run_driver(code)
    assert out.returncode == 0, out.stderr
    assert marker.exists()
    for noise in ("WORKER_DIED", "ACTOR_DIED", "Unhandled error", "Traceback"):
        assert noise not in out.stderr, out.stderr
    assert_no_orphans(out.stdout.strip())


def test_init_takes_rays_logging_and_temp_dir_arguments(tmp_path):
    with pytest.raises(ValueError, match="local_mode"):
        runtime.init(local_mode=True)
    with pytest.raises(ValueError, match="logging_level"):
        runtime.init(logging_level="LOUD")
    assert not runtime.is_initialized()
    logger = logging.getLogger("runtime")
    saved = (logger.level, logger.propagate, list(logger.handlers))
    root = tmp_path / "sessions"
    ctx = runtime.init(
        num_cpus=1, logging_level="DEBUG", logging_format="%(message)s", _temp_dir=str(root)
    )
    try:
        assert ctx.session_dir is not None and ctx.session_dir.startswith(str(root))
        # As Ray's logger: its level, one handler of its own, not printed twice.
        added = [h for h in logger.handlers if h not in saved[2]]
        assert logger.level == logging.DEBUG and not logger.propagate and len(added) == 1
    finally:
        runtime.shutdown()
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        for handler in [h for h in logger.handlers if h not in saved[2]]:
            logger.removeHandler(handler)
        assert_no_orphans(ctx.session_dir)


@runtime.remote
def env_and_actor() -> tuple[str | None, bool]:
    @runtime.remote(num_cpus=0)
    class Inner:
        pass

    inner = Inner.options(name="made_in_a_task").remote()
    runtime.get(inner.__ray_ready__.remote())
    return os.environ.get("FROM_JOB_CONFIG"), True


def test_init_takes_a_job_config():
    from runtime.job_config import JobConfig
    from runtime.util import state

    for bad, kind in (
        ({"default_actor_lifetime": "forever"}, ValueError),
        ({"code_search_path": ["/java"]}, ValueError),
        ({"metadata": {"a": 1}}, TypeError),
        ({"ray_namespace": 3}, TypeError),
    ):
        with pytest.raises(kind):
            JobConfig(**bad)
    with pytest.raises(TypeError, match="job_config"):
        runtime.init(job_config={"runtime_env": {}})
    with pytest.raises(ValueError, match="dashboard_port"):
        runtime.init(dashboard_port=70000)
    assert not runtime.is_initialized()
    config = JobConfig(
        runtime_env={"env_vars": {"FROM_JOB_CONFIG": "yes"}},
        metadata={"team": "search"},
        ray_namespace="from_job_config",
        default_actor_lifetime="detached",
    )
    config.set_metadata("run", "7")
    ctx = runtime.init(num_cpus=1, job_config=config)
    try:
        assert runtime.get_runtime_context().namespace == "from_job_config"
        assert runtime.get(env_and_actor.remote()) == ("yes", True)

        @runtime.remote(num_cpus=0)
        class Outer:
            pass

        kept = Outer.options(name="made_in_the_driver").remote()
        runtime.get(kept.__ray_ready__.remote())
        # The job's default lifetime, in the driver and in its tasks: detached.
        actors = {a.name: a for a in state.list_actors() if a.name}
        assert actors["made_in_the_driver"].is_detached
        assert actors["made_in_a_task"].is_detached
        jobs = state.list_jobs()
        assert jobs[-1].metadata == {"team": "search", "run": "7"}
    finally:
        runtime.shutdown()
        assert_no_orphans(ctx.session_dir)


def test_a_handle_kept_across_shutdown_fails_at_once():
    @runtime.remote(num_cpus=0)
    class Kept:
        def ping(self) -> int:
            return 1

    first = runtime.init(num_cpus=1)
    try:
        kept = Kept.remote()
        assert runtime.get(kept.ping.remote()) == 1
    finally:
        runtime.shutdown()
    second = runtime.init(num_cpus=1)
    try:
        # Another cluster: no 10 s wait for its gcs to learn of the actor.
        with pytest.raises(runtime.exceptions.ActorDiedError, match="comes from the cluster"):
            kept.ping.remote()
        assert runtime.get(Kept.remote().ping.remote()) == 1
    finally:
        runtime.shutdown()
        for ctx in (first, second):
            assert_no_orphans(ctx.session_dir)
