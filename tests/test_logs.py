"""Logs by task, actor and pid, on one node and on another; the driver's
prefixes; ``runtime logs`` with --tail and --follow."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ROOT, assert_no_orphans, cluster_of, run_cli, run_driver, wait_until

import runtime
from runtime._private import worker_logs
from runtime.protocol.rt import LogBatch
from runtime.raylet._worker_output import read_output
from runtime.util import state

pytestmark = pytest.mark.timeout(120)

FAST_EVENTS = {"task_events_report_interval_s": 0.05}


@runtime.remote
def talk(i: int) -> int:
    print(f"line {i} of talk")
    print(f"err {i}", file=sys.stderr)
    return os.getpid()


@runtime.remote
class Speaker:
    def say(self, text: str) -> int:
        print(text)
        return os.getpid()


@runtime.remote(resources={"far": 1})
class FarSpeaker:
    def say(self, text: str) -> str:
        print(text)
        return runtime.get_runtime_context().get_node_id()


def _task_id(name: str, n: int) -> list[str]:
    rows: list[Any] = []

    def ran() -> bool:
        rows[:] = [t for t in state.list_tasks(filters=[("name", "=", name)]) if t.worker_id]
        return len(rows) >= n

    wait_until(ran, 20, f"{n} {name} tasks reported")
    return [t.task_id for t in rows]


@pytest.fixture
def one_cpu() -> Iterator[None]:
    ctx = runtime.init(num_cpus=1, _system_config=FAST_EVENTS)
    try:
        yield
    finally:
        runtime.shutdown()
        assert_no_orphans(ctx.session_dir)


def test_logs_by_task_actor_and_pid(one_cpu: None) -> None:
    pids = runtime.get([talk.remote(i) for i in range(3)])
    assert len(set(pids)) == 1  # one CPU: one worker ran them all
    ids = _task_id("talk", 3)
    for task_id in ids:
        lines = state.get_log(task_id=task_id)
        assert len(lines) == 1 and lines[0].startswith("line ") and lines[0].endswith("of talk")
        assert state.get_log(task_id=task_id, suffix="err")[0].startswith("err ")
    everything = state.get_log(pid=pids[0])
    assert sorted(everything) == [f"line {i} of talk" for i in range(3)]
    assert not any("RT-TASK" in line for line in everything)

    speaker = Speaker.remote()
    pid = runtime.get(speaker.say.remote("hello from the actor"))
    actor_id = state.list_actors()[0].actor_id
    wait_until(lambda: "hello from the actor" in state.get_log(actor_id=actor_id), 10)

    listing = state.list_logs()
    (files,) = listing.values()
    names = {f.name for f in files}
    assert {"gcs.log", "raylet.log"} <= names
    assert any(f.pid == pid and f.name.endswith(".out") for f in files)

    with pytest.raises(ValueError, match="no such log file"):
        state.get_log("../cluster.json")
    with pytest.raises(ValueError, match="suffix"):
        state.get_log(pid=pid, suffix="log")
    address = runtime.get_runtime_context().gcs_address
    tail = run_cli("logs", "--pid", str(pid), "--tail", "1", "--address", address)
    assert tail.returncode == 0 and tail.stdout.splitlines() == ["hello from the actor"]
    missing = run_cli("logs", "--actor-id", "ff" * 16, "--address", address)
    assert missing.returncode == 1 and "no actor" in missing.stderr


def test_driver_prints_task_output_under_its_name() -> None:
    code = (
        "import runtime\n"
        "@runtime.remote\n"
        "def greet():\n"
        "    print('hi there')\n"
        "@runtime.remote\n"
        "class Host:\n"
        "    def __init__(self):\n"
        "        print('from the constructor')\n"
        "    def speak(self):\n"
        "        print('from the actor')\n"
        "@runtime.remote(num_cpus=0)\n"
        "class Shard(Host.__ray_actor_class__):\n"
        "    def __init__(self, index):\n"
        "        self.index = index\n"
        "    def __repr__(self):\n"
        "        return f'Shard[{self.index}]'\n"
        "runtime.init(num_cpus=1)\n"
        "runtime.get(greet.remote())\n"
        "h = Host.remote()\n"
        "runtime.get(h.speak.remote())\n"
        "runtime.get(Shard.remote(3).speak.remote())\n"
        "runtime.shutdown()\n"
    )
    done = run_driver(code)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("(greet pid=") and line.endswith(") hi there") for line in lines)
    assert any(line.startswith("(Host pid=") and "from the actor" in line for line in lines)
    # The constructor's lines too (not "Host.__init__"), as in Ray.
    assert any(line.startswith("(Host pid=") and "from the constructor" in line for line in lines)
    # As in Ray: an actor whose class defines __repr__ is named by it.
    assert any(line.startswith("(Shard[3] pid=") and "from the actor" in line for line in lines)
    assert "RT-TASK" not in done.stdout + done.stderr


async def test_worker_output_publishes_whole_lines_under_their_task(tmp_path: Any) -> None:
    """The raylet's reader of a worker's pipe, fed by hand: lines end at "\\n"
    only, markers name the task and are filed but never published, an endless
    line goes out in pieces, the last line without a newline at the end; a
    drain returns once what the pipe held is published."""
    r, w = os.pipe()
    got: list[tuple[list[str], str]] = []
    log = tmp_path / "worker.out"
    batch = lambda lines, task: LogBatch(lines=lines, prefix=task)  # noqa: E731
    output = await read_output(r, str(log), batch, lambda b: got.append((b.lines, b.prefix)))
    os.write(w, b"before\n" + worker_logs.marker_line(b"\x01" * 16, "f").encode())
    os.write(w, b"page\x0cbreak \x1e kept\r\nhalf")
    assert output.unread() > 0  # not read yet: the loop has not run
    await asyncio.wait_for(output.drained(), 5)  # read, filed and published
    assert output.unread() == 0 and output.received > 0
    assert got == [(["before"], ""), (["page\x0cbreak \x1e kept"], "f")]
    # More than a pipe holds: written from a thread while the loop reads.
    await asyncio.to_thread(os.write, w, b" done\n" + b"x" * (70 * 1024))
    os.close(w)
    await asyncio.wait_for(output.closed, 5)
    assert got[2] == (["half done"], "f")
    assert "".join(line for lines, _ in got[3:] for line in lines) == "x" * (70 * 1024)
    assert output.unread() == 0
    text = log.read_text()
    assert text.startswith("before\n" + worker_logs.MARKER) and text.endswith("x" * 100)


LINES = 5000


def test_every_line_printed_before_shutdown_reaches_the_driver() -> None:
    """A driver that stops right after its last call still prints all its
    workers' output, from this node's workers and from another node's."""
    with cluster_of(head_node_args={"num_cpus": 1}) as c:
        c.add_node(num_cpus=1, resources={"far": 1})
        code = (
            "import sys, runtime\n"
            f"runtime.init(address={c.address!r})\n"
            "@runtime.remote\n"
            "def near():\n"
            f"    for i in range({LINES}):\n"
            "        print(f'near {i}')\n"
            "        print(f'near-err {i}', file=sys.stderr)\n"
            "@runtime.remote(resources={'far': 1})\n"
            "class Far:\n"
            "    def speak(self):\n"
            f"        for i in range({LINES}):\n"
            "            print(f'far {i}')\n"
            "far = Far.remote()\n"
            "runtime.get([near.remote(), far.speak.remote()])\n"
            "runtime.shutdown()\n"
        )
        done = run_driver(code)
    assert done.returncode == 0, done.stderr[-2000:]
    out, err = done.stdout.splitlines(), done.stderr.splitlines()
    for text, lines in (("near", out), ("near-err", err), ("far", out)):
        seen = {line.rpartition(") ")[2] for line in lines if line.startswith("(")}
        assert {f"{text} {i}" for i in range(LINES)} <= seen, text


def test_lines_of_a_node_missing_from_the_drivers_view_are_flushed_too() -> None:
    """The flush asks the gcs which nodes to flush, not only the driver's own
    view of them (emptied here, as when its first look-up failed). The far
    raylet is stopped while the actor prints, so its lines wait unread in the
    pipe when the driver stops; the flush waits for them."""
    with cluster_of(head_node_args={"num_cpus": 1}) as c:
        far = c.add_node(num_cpus=1, resources={"far": 1})
        code = (
            "import asyncio, os, signal, threading, runtime\n"
            "from runtime.api import _context\n"
            f"runtime.init(address={c.address!r})\n"
            "@runtime.remote(resources={'far': 1})\n"
            "class Far:\n"
            "    def ready(self):\n"
            "        pass\n"
            "    def speak(self):\n"
            f"        for i in range({LINES}):\n"
            "            print(f'far {i}')\n"
            "far = Far.remote()\n"
            "runtime.get(far.ready.remote())\n"
            "async def forget():\n"
            "    _context.current().cluster.nodes.clear()\n"
            "asyncio.run_coroutine_threadsafe(forget(), _context.runtime_loop()).result(30)\n"
            f"os.kill({far.pid}, signal.SIGSTOP)\n"
            "runtime.get(far.speak.remote())\n"
            f"threading.Timer(0.5, os.kill, ({far.pid}, signal.SIGCONT)).start()\n"
            "runtime.shutdown()\n"
        )
        try:
            done = run_driver(code)
        finally:
            os.kill(far.pid, signal.SIGCONT)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = {line.rpartition(") ")[2] for line in done.stdout.splitlines()}
    assert {f"far {i}" for i in range(LINES)} <= seen


def test_logs_of_an_actor_on_another_node_and_follow() -> None:
    with cluster_of(head_node_args={"num_cpus": 1}, system_config=FAST_EVENTS) as c:
        far = c.add_node(num_cpus=1, resources={"far": 1})
        c.wait_for_nodes()
        runtime.init(address=c.address)
        actor = FarSpeaker.remote()
        assert runtime.get(actor.say.remote("first words")) == far.node_id
        actor_id = state.list_actors()[0].actor_id
        lines = state.get_log(actor_id=actor_id)
        assert lines == ["first words"]
        listing = state.list_logs(node_id=far.node_id)
        assert list(listing) == [far.node_id]
        assert "gcs.log" not in {f.name for f in listing[far.node_id]}

        follow = subprocess.Popen(
            [sys.executable, "-m", "runtime.cli", "logs", "--actor-id", actor_id,
             "--follow", "--address", c.address],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        try:
            assert follow.stdout is not None
            assert follow.stdout.readline().rstrip() == "first words"
            runtime.get(actor.say.remote("said later"))
            assert follow.stdout.readline().rstrip() == "said later"
        finally:
            follow.kill()
            follow.wait()


def test_error_channel_prints_each_death_once_at_the_driver() -> None:
    """A worker that dies under a task and an actor that dies unasked are told
    to the job's driver, once each, even when they come from a nested owner."""
    code = (
        "import os, runtime\n"
        "@runtime.remote(max_retries=0)\n"
        "def die():\n"
        "    os._exit(3)\n"
        "@runtime.remote\n"
        "def nested():\n"
        "    try:\n"
        "        runtime.get(die.remote())\n"
        "    except runtime.exceptions.WorkerCrashedError:\n"
        "        return 'crashed'\n"
        "@runtime.remote(max_restarts=1)\n"
        "class A:\n"
        "    def pid(self):\n"
        "        return os.getpid()\n"
        "    def die(self):\n"
        "        os._exit(1)\n"
        "runtime.init(num_cpus=2)\n"
        "assert runtime.get(nested.remote()) == 'crashed'\n"
        "a = A.remote()\n"
        "runtime.get(a.pid.remote())\n"
        "try:\n"
        "    runtime.get(a.die.remote())\n"
        "except runtime.exceptions.ActorUnavailableError:\n"
        "    pass\n"
        "runtime.get(a.pid.remote())\n"
        "runtime.shutdown()\n"
    )
    done = run_driver(code)
    assert done.returncode == 0, done.stderr
    died = [line for line in done.stderr.splitlines() if "WORKER_DIED" in line]
    assert len(died) == 1 and "die()" in died[0], done.stderr
    actor = [line for line in done.stderr.splitlines() if "ACTOR_DIED" in line]
    assert len(actor) == 1 and "actor A" in actor[0] and "restarting" in actor[0], done.stderr


def test_logging_config_is_checked_where_it_is_made() -> None:
    with pytest.raises(ValueError, match="encoding must be one of TEXT, JSON"):
        runtime.LoggingConfig(encoding="XML")
    with pytest.raises(ValueError, match="unknown log_level"):
        runtime.LoggingConfig(log_level="LOUD")
    with pytest.raises(ValueError, match="unknown standard attribute"):
        runtime.LoggingConfig(additional_log_standard_attrs=["nope"])
    with pytest.raises(TypeError, match=r"must be a runtime\.LoggingConfig"):
        runtime.init(num_cpus=1, logging_config={"encoding": "JSON"})  # type: ignore[arg-type]
    assert not runtime.is_initialized()
    config = runtime.LoggingConfig(encoding="JSON", log_level="debug")
    assert runtime.LoggingConfig.from_dict(config.to_dict()) == runtime.LoggingConfig(
        encoding="JSON", log_level="DEBUG"
    )


STRUCTURED = """
import json, logging, runtime
runtime.init(num_cpus=1, logging_config=runtime.LoggingConfig(
    encoding="JSON", log_level="INFO", additional_log_standard_attrs=["name"]))

@runtime.remote
def task():
    logging.getLogger("in.task").info("from a task")
    logging.getLogger("in.task").debug("below the level")

@runtime.remote
class Actor:
    def method(self):
        logging.getLogger("in.actor").warning("from an actor")

logging.getLogger("in.driver").info("from the driver", extra={"request": "r1"})
runtime.get(task.remote())
actor = Actor.options(name="logger").remote()
runtime.get(actor.method.remote())
runtime.shutdown()
"""


def test_a_jobs_logging_config_structures_every_process_lines() -> None:
    done = run_driver(STRUCTURED)
    assert done.returncode == 0, done.stderr
    rows = {}
    for line in (done.stdout + done.stderr).splitlines():
        start = line.find("{")
        if start >= 0 and '"message"' in line:
            row = json.loads(line[start:])
            rows[row["message"]] = row
    assert "below the level" not in rows
    driver, task, actor = rows["from the driver"], rows["from a task"], rows["from an actor"]
    assert driver["name"] == "in.driver" and driver["request"] == "r1"
    assert driver["job_id"] == task["job_id"] == actor["job_id"]
    assert "task_id" not in driver and driver["levelname"] == "INFO"
    assert task["task_name"] == "task" and task["task_func_name"] == "__main__.task"
    assert task["name"] == "in.task" and task["node_id"] == driver["node_id"]
    assert actor["actor_name"] == "logger" and actor["task_name"] == "Actor.method"
    assert actor["levelname"] == "WARNING" and len(actor["actor_id"]) == 32
    assert isinstance(task["timestamp_ns"], int) and task["worker_id"] != driver["worker_id"]


def test_a_tasks_own_logging_setup_takes_effect() -> None:
    # As in Ray (and a plain process), the worker leaves the root logger to the
    # user: basicConfig() in a task configures it, and its INFO lines arrive.
    code = (
        "import logging, runtime\n"
        "@runtime.remote\n"
        "def chatty():\n"
        "    logging.basicConfig(level=logging.INFO, format='CFG %(levelname)s %(message)s')\n"
        "    logging.getLogger('app').info('an info line')\n"
        "runtime.init(num_cpus=1)\n"
        "runtime.get(chatty.remote())\n"
        "runtime.shutdown()\n"
    )
    done = run_driver(code)
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    assert "CFG INFO an info line" in out, out
