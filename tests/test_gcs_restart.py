"""GCS fault tolerance on real processes: with its tables in SQLite or a real
Redis server, the gcs is killed with SIGKILL five times under a workload of
tasks and actor calls; its supervisor starts it again, raylets and core
workers reconnect, and nothing fails or is lost."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import cluster_of, gcs_pid, live_gcs, process_running, wait_until

import runtime
from runtime.testing import Cluster
from runtime.util.scheduling_strategies import NodeAffinitySchedulingStrategy

pytestmark = pytest.mark.timeout(240)


@runtime.remote
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def incr(self) -> int:
        self.n += 1
        return self.n

    def node(self) -> str:
        return runtime.get_runtime_context().get_node_id()


@runtime.remote
def square(x: int) -> int:
    return x * x


@runtime.remote(num_cpus=0)
def node_id() -> str:
    return runtime.get_runtime_context().get_node_id()


class Workload:
    """Tasks and actor calls in a loop on a thread of its own, checking each answer."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self.rounds = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.expected_count = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                assert runtime.get([square.remote(i) for i in range(8)], timeout=60) == [
                    i * i for i in range(8)
                ]
                call = self.actor.incr.remote()
                try:
                    count = runtime.get(call, timeout=60)
                except runtime.exceptions.GetTimeoutError as e:  # (it happened, rarely)
                    raise AssertionError(stuck([self.actor], [call], [])) from e
                self.expected_count += 1
                assert count == self.expected_count, (count, self.expected_count)
                self.rounds += 1
            except BaseException as e:  # any failure is the test's failure
                self.errors.append(e)
                return

    def __enter__(self) -> Workload:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def wait_rounds(self, more: int) -> None:
        target = self.rounds + more
        wait_until(lambda: self.rounds >= target or bool(self.errors), 60, "workload rounds")
        assert not self.errors, self.errors


@pytest.fixture(params=["sqlite", "redis"])
def durable_cluster(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Cluster]:
    if request.param == "sqlite":
        storage = f"sqlite://{tmp_path}/gcs.sqlite"
    else:
        storage = request.getfixturevalue("redis_server")
    config = {"gcs_storage": storage, "gcs_reconnect_timeout_s": 60.0}
    with cluster_of(head_node_args={"num_cpus": 2}, system_config=config) as cluster:
        runtime.init(address=cluster.address)
        yield cluster


def stuck(actors: list[Any], calls: list[Any], ready: list[Any]) -> str:
    """What the gcs and this driver say of the actors whose calls did not answer."""
    worker = runtime.api._context.current()
    rows = {row["actor_id"]: row for row in runtime.util.state.list_actors()}
    lines = []
    for actor, call in zip(actors, calls, strict=True):
        if call in ready:
            continue
        key = actor._actor_id
        queue = worker.actor_client.actors.existing(key)
        row = rows.get(key.hex(), {})
        pid = row.get("pid") or 0
        lines.append(
            f"actor {key.hex()}: gcs {row.get('state')} restarts={row.get('num_restarts')} "
            f"pid={pid} running={bool(pid) and process_running(pid)}; driver queue "
            f"{None if queue is None else (queue.state, len(queue.in_flight), len(queue.lost))}"
        )
    return "calls that did not answer: " + "; ".join(lines)


def test_a_cluster_rides_through_five_gcs_kills(durable_cluster: Cluster) -> None:
    cluster = durable_cluster
    keeper = Counter.options(name="keeper", lifetime="detached").remote()
    assert runtime.get(keeper.incr.remote()) == 1
    worker = Counter.remote()
    made_during_outages = []
    with Workload(worker) as load:
        load.wait_rounds(3)
        for _ in range(5):
            old = gcs_pid(cluster)
            os.kill(old, signal.SIGKILL)
            # An actor created while the gcs is down is created once it is back.
            fresh = Counter.remote()
            assert runtime.get(fresh.incr.remote(), timeout=60) == 1
            made_during_outages.append(fresh)
            wait_until(lambda old=old: live_gcs(cluster)[-1:] not in ([], [old]), 60, "a new gcs")
            load.wait_rounds(2)  # tasks and calls went on through it
    assert not load.errors, load.errors
    # The detached named actor made before the kills is found, state intact.
    assert runtime.get(runtime.get_actor("keeper").incr.remote()) == 2
    calls = [a.incr.remote() for a in made_during_outages]
    ready, _ = runtime.wait(calls, num_returns=len(calls), timeout=60)
    assert len(ready) == len(calls), stuck(made_during_outages, calls, ready)
    assert runtime.get(calls) == [2] * 5
    # A node joins the restarted gcs and runs work; another starts while the
    # gcs is down, and joins once it is back.
    joined = cluster.add_node(num_cpus=1)
    os.kill(gcs_pid(cluster), signal.SIGKILL)
    late = cluster.add_node(num_cpus=1)  # returns once the new gcs knows it
    cluster.wait_for_nodes()
    for node in (joined, late):
        here = NodeAffinitySchedulingStrategy(node.node_id, soft=False)
        assert runtime.get(node_id.options(scheduling_strategy=here).remote()) == node.node_id


def test_a_gcs_on_memory_storage_is_not_restarted(tmp_path: Any) -> None:
    """Without a durable storage a gcs death still ends the cluster at once, naming it."""
    with cluster_of(head_node_args={"num_cpus": 1}) as cluster:
        runtime.init(address=cluster.address)
        assert runtime.get(square.remote(3)) == 9
        pid = gcs_pid(cluster)
        os.kill(pid, signal.SIGKILL)
        lost = (runtime.exceptions.GcsLostError, runtime.exceptions.LocalRayletDiedError)
        with pytest.raises(lost):
            for _ in range(200):
                runtime.get(square.remote(3), timeout=10)
                runtime.get(runtime.put(1))
        assert cluster.head_node is not None
        wait_until(lambda: not cluster.head_node.alive(), 30, "the raylet to stop")
