"""Shared fixtures: real clusters of real processes, and orphan checks."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import runtime
from runtime.testing import Cluster

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SESSIONS: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    """The suite's sessions (logs, sockets, spill files) go to a folder of their own,
    removed at the end, rather than piling up in the machine's <tmp>/runtime-sessions. (A hook,
    not module code: worker processes import this module too, with the tests' functions.)"""
    if "RUNTIME_SESSION_ROOT" not in os.environ:
        _SESSIONS.append(tempfile.mkdtemp(prefix="rt-tests-"))
        os.environ["RUNTIME_SESSION_ROOT"] = _SESSIONS[0]
    # A standing cluster's token file too (never the user's own ~/.runtime).
    if "RUNTIME_AUTH_TOKEN_PATH" not in os.environ:
        home = tempfile.mkdtemp(prefix="rt-tests-home-")
        _SESSIONS.append(home)
        os.environ["RUNTIME_AUTH_TOKEN_PATH"] = os.path.join(home, "auth_token")


def pytest_unconfigure(config: pytest.Config) -> None:
    for path in _SESSIONS:
        shutil.rmtree(path, ignore_errors=True)


def cmdline(pid: int) -> bytes:
    """A process's command line (empty once it is gone, or a zombie)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def runtime_pids(marker: str) -> list[int]:
    """Pids of the runtime's processes whose command line mentions ``marker``."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        line = cmdline(int(name))
        if marker.encode() in line and b"runtime." in line and b"pytest" not in line:
            pids.append(int(name))
    return pids


def process_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie awaiting its reaper is not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def wait_until(
    predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def live_gcs(cluster: Cluster) -> list[int]:
    """The cluster's gcs processes running (its supervisor records each one it starts)."""
    assert cluster.head is not None
    with open(os.path.join(cluster.head.session.path, "pids")) as f:
        pids = [int(line.split()[0]) for line in f if line.split()[1:] == ["gcs"]]
    return [pid for pid in pids if process_running(pid)]


def gcs_pid(cluster: Cluster) -> int:
    """The cluster's running gcs process."""
    wait_until(lambda: bool(live_gcs(cluster)), 60, "a gcs process to run")
    return live_gcs(cluster)[-1]


def assert_no_orphans(session_dir: str) -> None:
    """No process of the session lives on, and no socket outlives them."""
    wait_until(
        lambda: not runtime_pids(session_dir), what=f"the processes of {session_dir} to exit"
    )
    sockets = os.path.join(session_dir, "sockets")
    wait_until(
        lambda: not os.path.isdir(sockets) or not os.listdir(sockets),
        what=f"the sockets of {session_dir} to be removed",
    )


@pytest.fixture
def cluster() -> Iterator[runtime.RuntimeContext]:
    """A local cluster with 2 CPUs for one test; checks nothing outlives it."""
    ctx = runtime.init(num_cpus=2)
    assert ctx.session_dir is not None
    try:
        yield ctx
    finally:
        runtime.shutdown()
        assert_no_orphans(ctx.session_dir)


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Runs the ``runtime`` command line."""
    return subprocess.run(
        [sys.executable, "-m", "runtime.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


def sleep_until_alarm() -> str:
    """Sleeps until a SIGALRM its own handler turns into an error ("alarm"),
    or 60 s ("slept"): what code on a worker's main thread can do."""
    import signal

    def on_alarm(signum: int, frame: object) -> None:
        raise TimeoutError("alarm")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(1)
    try:
        time.sleep(60)
    except TimeoutError as e:
        return str(e)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return "slept"


def run_driver(
    code: str, timeout: float = 60.0, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Runs ``code`` as a separate driver program."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        **kwargs,  # type: ignore[arg-type]
    )


@contextlib.contextmanager
def cluster_of(**args: Any) -> Iterator[Cluster]:
    """A ``Cluster(**args)`` for one test; at the end the driver and every node
    stop, and no process of its session may outlive them."""
    cluster = Cluster(**args)
    assert cluster.head is not None
    session = cluster.head.session.path
    try:
        yield cluster
    finally:
        runtime.shutdown()
        cluster.shutdown()
        assert_no_orphans(session)


@pytest.fixture
def redis_server(tmp_path: Any) -> Iterator[str]:
    """A real redis-server on a free loopback port, for this test; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (.ci/run installs Debian's redis-server)")
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path), "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    try:
        wait_until(answers, 15, "redis-server to answer")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.kill()
        server.wait()
