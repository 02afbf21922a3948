"""Process lifecycle: no orphans, standing clusters, the CLI, worker output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile

import pytest
from conftest import (
    ROOT,
    assert_no_orphans,
    cmdline,
    process_running,
    run_cli,
    run_driver,
    runtime_pids,
    wait_until,
)

import runtime


@pytest.fixture
def session_root():
    with tempfile.TemporaryDirectory(prefix="rt-test-") as root:
        yield root


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env)


def test_no_orphans_after_shutdown():
    ctx = runtime.init(num_cpus=2)

    @runtime.remote
    def pid():
        return os.getpid()

    worker_pid = runtime.get(pid.remote())
    assert ctx.session_dir and runtime_pids(ctx.session_dir)
    runtime.shutdown()
    assert_no_orphans(ctx.session_dir)
    wait_until(lambda: not process_running(worker_pid), what="the worker to exit")


def test_no_orphans_after_driver_sigkill(session_root):
    code = (
        "import runtime, sys\n"
        "ctx = runtime.init(num_cpus=2)\n"
        "@runtime.remote\n"
        "def f(): return 1\n"
        "runtime.get([f.remote() for _ in range(4)])\n"
        "print(ctx.session_dir, flush=True)\n"
        "import time; time.sleep(600)\n"
    )
    env = {**os.environ, "RUNTIME_SESSION_ROOT": session_root}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env
    )
    try:
        assert proc.stdout is not None
        session_dir = proc.stdout.readline().strip()
        assert session_dir.startswith(session_root)
        assert len(runtime_pids(session_dir)) >= 3  # gcs, raylet, workers
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert_no_orphans(session_dir)
    finally:
        proc.kill()
        proc.wait()


def test_ctrl_c_in_a_terminal_interrupts_the_driver_only(session_root, tmp_path):
    # A terminal's Ctrl-C signals its whole foreground process group: the
    # driver's get() is interrupted; the cluster it started lives on.
    started = tmp_path / "started"
    code = (
        "import os, sys, time, runtime\n"
        "@runtime.remote\n"
        "def long(path):\n"
        "    open(path, 'w').close()\n"
        "    time.sleep(60)\n"
        "@runtime.remote\n"
        "def quick(): return 2\n"
        "ctx = runtime.init(num_cpus=2)\n"
        "print(ctx.session_dir, flush=True)\n"
        "ref = long.remote(sys.argv[1])\n"
        "try:\n"
        "    runtime.get(ref)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
        "print('after', runtime.get(quick.remote(), timeout=30), flush=True)\n"
    )
    env = {**os.environ, "RUNTIME_SESSION_ROOT": session_root}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(started)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
        start_new_session=True,  # its own group, as a terminal's foreground job
    )
    try:
        assert proc.stdout is not None
        session_dir = proc.stdout.readline().strip()
        wait_until(started.exists, 30, "the task to start")
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert out.split() == ["interrupted", "after", "2"], err
        assert proc.returncode == 0 and "WORKER_DIED" not in err, err
        assert_no_orphans(session_dir)
    finally:
        proc.kill()
        proc.wait()


def test_a_forked_child_neither_hangs_nor_stops_its_parents_cluster(session_root):
    code = (
        "import os, sys, runtime\n"
        "@runtime.remote\n"
        "def f(): return os.getpid()\n"
        "ctx = runtime.init(num_cpus=1)\n"
        "print(ctx.session_dir, flush=True)\n"
        "runtime.get(f.remote())\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    try:\n"
        "        runtime.get(f.remote())\n"
        "    except runtime.exceptions.RuntimeNotInitializedError as e:\n"
        "        print('child refused:', 'forked' in str(e), flush=True)\n"
        "    own = runtime.init(num_cpus=1)\n"
        "    print('child cluster:', own.session_dir != ctx.session_dir, flush=True)\n"
        "    print(own.session_dir, flush=True)\n"
        "    runtime.get(f.remote())\n"
        "    sys.exit(0)  # atexit: stops the child's cluster, not the parent's\n"
        "os.waitpid(pid, 0)\n"
        "print('parent after:', runtime.get(f.remote(), timeout=30) > 0, flush=True)\n"
    )
    env = {**os.environ, "RUNTIME_SESSION_ROOT": session_root}
    done = run_driver(code, env=env)
    lines = done.stdout.split("\n")
    assert done.returncode == 0, done.stderr
    assert lines[1:3] == ["child refused: True", "child cluster: True"], done.stdout
    assert lines[4] == "parent after: True", done.stdout
    for session_dir in (lines[0], lines[3]):
        assert session_dir.startswith(session_root)
        assert_no_orphans(session_dir)


def test_standing_cluster_joined_by_two_drivers(session_root):
    env = {**os.environ, "RUNTIME_SESSION_ROOT": session_root}
    started = cli("start", "--head", "--port", "0", "--num-cpus", "2", env=env)
    assert started.returncode == 0, started.stderr
    assert "runtime.init(address='auto')" in started.stdout
    try:
        status = cli("status", env=env)
        assert status.returncode == 0, status.stderr
        assert "1 alive" in status.stdout and "0/2 CPU" in status.stdout
        code = (
            "import runtime\n"
            "ctx = runtime.init(address='auto')\n"
            "@runtime.remote\n"
            "def f(x): return x * 2\n"
            "job = runtime.get_runtime_context().job_id.int()\n"
            "print(job, sum(runtime.get([f.remote(i) for i in range(10)])))\n"
            "runtime.shutdown()\n"
        )
        first = run_driver(code, env=env)
        second = run_driver(code, env=env)
        assert first.returncode == 0, first.stderr
        assert second.returncode == 0, second.stderr
        assert first.stdout.split() == ["1", "90"]
        assert second.stdout.split() == ["2", "90"]
        # The cluster outlived both drivers.
        assert "1 alive" in cli("status", env=env).stdout
    finally:
        stopped = cli("stop", env=env)
    assert stopped.returncode == 0
    assert_no_orphans(session_root)


def test_auto_without_a_cluster(session_root):
    env = {**os.environ, "RUNTIME_SESSION_ROOT": session_root}
    result = run_driver("import runtime; runtime.init(address='auto')", env=env)
    assert result.returncode != 0
    assert "runtime start --head" in result.stderr


def test_worker_output_reaches_the_driver(session_root):
    code = (
        "import runtime, sys\n"
        "ctx = runtime.init(num_cpus=1)\n"
        "@runtime.remote\n"
        "def talk():\n"
        "    import os\n"
        "    print('hello from a task')\n"
        "    print('to stderr', file=sys.stderr)\n"
        "    return os.getpid()\n"
        "pid = runtime.get(talk.remote())\n"
        # One write: print() writes its pieces apart, and the lines of the task
        # printed by the runtime's thread meanwhile could land between them.
        "sys.stdout.write(f'PID {pid} {ctx.session_dir}\\n'); sys.stdout.flush()\n"
        "import time\n"
        "time.sleep(1.0)\n"  # the lines travel worker -> raylet -> gcs -> driver
        "runtime.shutdown()\n"
    )
    env = {**os.environ, "RUNTIME_SESSION_ROOT": session_root}
    result = run_driver(code, env=env)
    assert result.returncode == 0, result.stderr
    pid_line = next(line for line in result.stdout.splitlines() if line.startswith("PID"))
    _, pid, session_dir = pid_line.split()
    # Prefixed with the task's name, as Ray's are.
    assert f"(talk pid={pid}) hello from a task" in result.stdout
    assert f"(talk pid={pid}) to stderr" in result.stderr
    logs = os.listdir(os.path.join(session_dir, "logs"))
    outs = [name for name in logs if name.endswith(f"-{pid}.out")]
    assert outs
    with open(os.path.join(session_dir, "logs", outs[0])) as f:
        assert "hello from a task" in f.read()


def test_log_to_driver_false(session_root):
    code = (
        "import runtime\n"
        "runtime.init(num_cpus=1, log_to_driver=False)\n"
        "@runtime.remote\n"
        "def talk():\n"
        "    print('should not be shown')\n"
        "runtime.get(talk.remote())\n"
        "import time\n"
        "time.sleep(0.5)\n"
        "runtime.shutdown()\n"
    )
    env = {**os.environ, "RUNTIME_SESSION_ROOT": session_root}
    result = run_driver(code, env=env)
    assert result.returncode == 0, result.stderr
    assert "should not be shown" not in result.stdout


def test_idle_extra_workers_are_reaped():
    ctx = runtime.init(num_cpus=1, _system_config={"idle_worker_timeout_s": 0.2})
    try:

        @runtime.remote
        def outer():
            @runtime.remote
            def inner():
                return os.getpid()

            return runtime.get(inner.remote())

        runtime.get(outer.remote())  # needs a second worker while outer blocks
        wait_until(
            lambda: len([p for p in runtime_pids(ctx.session_dir) if _is_worker(cmdline(p))]) <= 1,
            what="the extra worker to be reaped",
        )
    finally:
        runtime.shutdown()
        assert_no_orphans(ctx.session_dir)


def _is_worker(cmdline: bytes) -> bool:
    """A worker's command line (not the worker template's, which forks them)."""
    return b"worker_process" in cmdline and b"--template" not in cmdline


def test_detached_named_actor_across_drivers(session_root):
    env = {**os.environ, "RUNTIME_SESSION_ROOT": session_root}
    started = cli("start", "--head", "--port", "0", "--num-cpus", "2", env=env)
    assert started.returncode == 0, started.stderr
    try:
        define = (
            "import runtime\n"
            "runtime.init(address='auto', namespace='shared')\n"
            "@runtime.remote\n"
            "class Store:\n"
            "    def __init__(self): self.items = []\n"
            "    def add(self, x):\n"
            "        self.items.append(x)\n"
            "        return list(self.items)\n"
        )
        first = run_driver(
            define
            + "s = Store.options(name='store', lifetime='detached').remote()\n"
            + "print(runtime.get(s.add.remote(1)))\n"
            + "t = Store.options(name='temp').remote()\n"
            + "runtime.get(t.add.remote(0))\n",
            env=env,
        )
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == "[1]"
        second = run_driver(
            define
            + "s = runtime.get_actor('store')\n"
            + "print(runtime.get(s.add.remote(2)))\n"
            + "try:\n"
            + "    runtime.get_actor('temp')\n"
            + "except ValueError:\n"
            + "    print('temp is gone')\n"
            + "runtime.kill(s)\n",
            env=env,
        )
        assert second.returncode == 0, second.stderr
        assert second.stdout.split("\n")[:2] == ["[1, 2]", "temp is gone"]
        # A driver that creates a detached actor and exits at once: the actor's
        # worker may not be leased yet when the job ends; the actor stays.
        quick = run_driver(
            define + "Store.options(name='quick', lifetime='detached').remote()\n", env=env
        )
        assert quick.returncode == 0, quick.stderr
        third = run_driver(
            define
            + "s = runtime.get_actor('quick')\n"
            + "print(runtime.get(s.add.remote(3), timeout=60))\n"
            + "runtime.kill(s)\n",
            env=env,
        )
        assert third.returncode == 0, third.stderr
        assert third.stdout.strip() == "[3]"
    finally:
        cli("stop", env=env)
    assert_no_orphans(session_root)


def test_cli_node_joins_a_standing_cluster(session_root):
    import re

    env = {**os.environ, "RUNTIME_SESSION_ROOT": session_root}
    started = cli("start", "--head", "--port", "0", "--num-cpus", "1", env=env)
    assert started.returncode == 0, started.stderr
    address = re.search(r"gcs listens on (\S+?)\.\s", started.stdout)
    assert address is not None, started.stdout
    try:
        usage = cli("start", env=env)
        assert usage.returncode == 2 and "--address" in usage.stderr
        wildcard = cli("start", f"--address={address.group(1)}", "--host", "0.0.0.0", env=env)
        assert wildcard.returncode == 2 and "not an address other machines" in wildcard.stderr
        joined = cli(
            "start",
            f"--address={address.group(1)}",
            "--num-cpus",
            "2",
            "--resources",
            '{"far": 1}',
            env=env,
        )
        assert joined.returncode == 0, joined.stderr
        assert "joined the cluster" in joined.stdout
        status = cli("status", env=env)
        assert "2 alive" in status.stdout and "0/3 CPU" in status.stdout, status.stdout
        code = (
            "import runtime\n"
            "runtime.init(address='auto')\n"
            "@runtime.remote(resources={'far': 1})\n"
            "def where(): return runtime.get_runtime_context().get_node_id()\n"
            "heads = [n['NodeID'] for n in runtime.nodes() if n['IsHead']]\n"
            "print(runtime.get(where.remote()) not in heads)\n"
            "runtime.shutdown()\n"
        )
        result = run_driver(code, env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["True"]
    finally:
        stopped = cli("stop", env=env)
    assert stopped.returncode == 0
    assert_no_orphans(session_root)


def test_a_gcs_that_fails_to_start_takes_the_raylet_started_beside_it(session_root):
    """init() starts the raylet beside the gcs (their imports overlap): a gcs
    that cannot start says why, and the raylet waiting for its address ends."""
    import socket

    from runtime._private import cluster
    from runtime._private.config import Config

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = Config.load({"session_root": session_root})
        with pytest.raises(RuntimeError, match=r"runtime\.gcs exited"):
            cluster.start_head(
                config, host="127.0.0.1", port=port, resources={"CPU": 1.0}, standing=False
            )
    (session,) = [e for e in os.listdir(session_root) if e.startswith("session_2")]
    with open(os.path.join(session_root, session, "pids")) as f:
        raylets = [int(line.split()[0]) for line in f if line.split()[1:] == ["raylet"]]
    assert len(raylets) == 1 and not process_running(raylets[0])
    assert_no_orphans(os.path.join(session_root, session))


@runtime.remote
class _Forker:
    def pid(self) -> int:
        return os.getpid()

    def child_gets_sigterm(self) -> int:
        """A child forked by a task (as a multiprocessing pool's are) that gets
        SIGTERM (as a pool's terminate() sends): its exit code."""
        child = os.fork()
        if child == 0:
            os.kill(os.getpid(), signal.SIGTERM)
            os._exit(0)  # not reached: SIGTERM ends a plain process
        _, status = os.waitpid(child, 0)
        return os.waitstatus_to_exitcode(status)


def test_a_tasks_forked_children_have_signals_of_their_own(cluster):
    """A child a task forks shares none of its worker's signal handling: a
    SIGTERM ends the child (not the worker, whose loop once read the child's
    signal from the wakeup pipe they shared, and stopped: a multiprocessing
    pool's terminate() killed the task's worker). Not a pool here: forking a
    process with threads may deadlock the child on a lock another thread
    held, which a test must not depend on."""
    forker = _Forker.remote()
    pid = runtime.get(forker.pid.remote())
    for _ in range(3):
        assert runtime.get(forker.child_gets_sigterm.remote()) == -signal.SIGTERM
    assert runtime.get(forker.pid.remote()) == pid  # the same worker throughout
