"""The command line's manners: help, version, clear one-line refusals."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess

import numpy as np
from conftest import run_cli, wait_until

import runtime
from runtime import cli


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env={**os.environ, **env})


def test_no_command_prints_help_and_version_is_known():
    out = run()
    assert out.returncode == 0 and "usage: runtime" in out.stdout and "start" in out.stdout
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("runtime ")


def test_every_flag_has_help():
    top = cli.parser()
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"runtime {name} {action.option_strings[0]} has no help"


def test_start_on_a_port_in_use_says_so_and_leaves_nothing(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        root = tmp_path / "sessions"
        out = run("start", "--head", "--port", str(port), RUNTIME_SESSION_ROOT=str(root))
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and f"port {port}" in out.stderr
    assert "in use" in out.stderr
    assert not root.exists() or not list(root.iterdir())


def test_start_with_a_bad_storage_says_so_and_leaves_nothing(tmp_path):
    root = tmp_path / "sessions"
    out = run("start", "--head", "--storage", "mongodb://x", RUNTIME_SESSION_ROOT=str(root))
    assert out.returncode == 2 and "unknown gcs storage 'mongodb://x'" in out.stderr
    assert not root.exists() or not list(root.iterdir())


def test_start_with_bad_labels_says_so_and_leaves_nothing(tmp_path):
    root = tmp_path / "sessions"
    out = run("start", "--head", "--labels", "zone=a,ray.io/x=y", RUNTIME_SESSION_ROOT=str(root))
    assert out.returncode == 2 and "--labels" in out.stderr and "reserved" in out.stderr
    assert not root.exists() or not list(root.iterdir())


def test_start_with_an_unusable_spilling_directory_says_so(tmp_path):
    root, blocker = tmp_path / "sessions", tmp_path / "a-file"
    blocker.write_text("")
    bad = str(blocker / "spill")  # under a file: cannot be made
    out = run("start", "--head", "--object-spilling-directory", bad, RUNTIME_SESSION_ROOT=str(root))
    assert out.returncode == 2 and "object_spilling_directory" in out.stderr, out.stderr
    assert not root.exists() or not list(root.iterdir())


def test_a_standing_cluster_keeps_its_gcs_tables_in_sqlite(tmp_path):
    root, store = tmp_path / "sessions", tmp_path / "gcs"
    env = {"RUNTIME_SESSION_ROOT": str(root), "RUNTIME_DASHBOARD_PORT": "0"}
    out = run("start", "--head", "--port", "0", "--storage-dir", str(store), **env)
    try:
        assert out.returncode == 0, out.stderr
        assert (store / "gcs_storage.sqlite").exists()
    finally:
        assert run("stop", **env).returncode == 0


@runtime.remote(resources={"nowhere": 1})
def never_runs() -> int:
    return 1


def test_status_shows_store_use_and_pending_demands(cluster):
    keep = runtime.put(np.ones(1 << 20))  # 8 MiB in the store
    pending = never_runs.remote()
    seen: list[str] = []

    def shows_everything() -> bool:
        out = run("status", "--address", cluster["address"])
        seen[:] = [out.stdout]
        return "{CPU: 1, nowhere: 1} x 1  (infeasible" in out.stdout and "MiB/" in out.stdout

    wait_until(shows_everything, what="status to show the store and the demand")
    assert "object_store_memory" in seen[0] and "GiB memory" in seen[0]
    del keep, pending


def test_status_shows_placement_groups(cluster):
    from runtime.util.placement_group import placement_group, remove_placement_group

    placed = placement_group([{"CPU": 0.5}], name="placed")
    waiting = placement_group([{"CPU": 64}], name="waiting")
    assert placed.wait(30)
    seen: list[str] = []

    def shows_both() -> bool:
        out = run("status", "--address", cluster["address"])
        seen[:] = [out.stdout]
        return "0.5 reserved in placement groups" in out.stdout

    wait_until(shows_both, what="status to show the reserved CPU")
    assert "'placed'  CREATED  PACK" in seen[0] and "'waiting'  PENDING  PACK" in seen[0]
    assert "(not placed)" in seen[0] and "infeasible" in seen[0]
    assert "_group_" not in seen[0]
    remove_placement_group(placed)
    remove_placement_group(waiting)


@runtime.remote
def stuck_sleeping(seconds: float) -> None:
    import time

    time.sleep(seconds)


@runtime.remote
class Awaiting:
    def pid(self) -> int:
        return os.getpid()

    async def awaits_forever(self) -> None:
        import asyncio

        await asyncio.Event().wait()


def test_stack_shows_where_each_task_waits(cluster):
    # A sync task's thread, an async actor's suspended coroutine, the driver's own.
    stuck = stuck_sleeping.remote(60)
    actor = Awaiting.remote()
    actor_pid = runtime.get(actor.pid.remote())
    waiting = actor.awaits_forever.remote()
    seen: list[str] = []

    def shows_both() -> bool:
        out = run("stack", "--address", cluster["address"])
        seen[:] = [out.stdout + out.stderr]
        return (
            out.returncode == 0
            and "in stuck_sleeping" in out.stdout
            and ("--- coroutine awaits_forever" in out.stdout)
        )

    wait_until(shows_both, what="the task and the coroutine to show")
    assert f"=== driver pid={os.getpid()}" in seen[0]
    one = run("stack", "--address", cluster["address"], "--pid", str(actor_pid))
    assert one.returncode == 0 and one.stdout.count("===") == 2  # one process's header
    assert "awaits_forever" in one.stdout and "stuck_sleeping" not in one.stdout
    nobody = run("stack", "--address", cluster["address"], "--pid", "1")
    assert nobody.returncode == 1 and "no answer from pid 1" in nobody.stderr
    runtime.cancel(stuck, force=True)
    runtime.kill(actor)
    del waiting
