"""Several nodes (separate raylets) on one machine: placement, transfer, failure."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import numpy as np
import pytest
from conftest import assert_no_orphans, cluster_of, wait_until

import runtime
from runtime import exceptions
from runtime.testing import Cluster, Node
from runtime.util.scheduling_strategies import NodeAffinitySchedulingStrategy

pytestmark = pytest.mark.timeout(120)

# Fast health checks, so that a hung node is declared dead within about two seconds
# (only where a test hangs one: a killed node is noticed at once, by its connection).
FAST_HEALTH = {
    "health_check_period_s": 0.25,
    "health_check_timeout_s": 1.0,
    "health_check_failure_threshold": 3,
}


@pytest.fixture
def cluster2() -> Iterator[tuple[Cluster, str]]:
    """A head with 1 CPU and a node with 2 CPUs and a custom resource; a driver."""
    with cluster_of(head_node_args={"num_cpus": 1}) as cluster:
        node = cluster.add_node(num_cpus=2, resources={"special": 1})
        cluster.wait_for_nodes()
        runtime.init(address=cluster.address)
        yield cluster, node.node_id


@runtime.remote(num_cpus=0)
def node_of() -> str:
    return runtime.get_runtime_context().get_node_id()


def head_id(cluster: Cluster) -> str:
    assert cluster.head_node is not None
    return cluster.head_node.node_id


def test_nodes_and_resources_add_up(cluster2: tuple[Cluster, str]) -> None:
    cluster, node_id = cluster2
    nodes = {n["NodeID"]: n for n in runtime.nodes()}
    assert set(nodes) == {head_id(cluster), node_id}
    assert all(n["Alive"] for n in nodes.values())
    assert nodes[head_id(cluster)]["IsHead"] and not nodes[node_id]["IsHead"]
    total = runtime.cluster_resources()
    assert total["CPU"] == 3 and total["special"] == 1


def test_custom_resource_places_tasks_and_actors(cluster2: tuple[Cluster, str]) -> None:
    _, node_id = cluster2
    assert runtime.get(node_of.options(resources={"special": 1}).remote()) == node_id

    @runtime.remote(resources={"special": 0.5})
    class Where:
        def node(self) -> str:
            return runtime.get_runtime_context().get_node_id()

    assert runtime.get(Where.remote().node.remote()) == node_id


def _gather_at(path: str, count: int) -> str:
    """Marks this task started, then waits (not lending its CPU) until
    ``count`` tasks have: they can only all start if they run in parallel."""
    import time

    node = runtime.get_runtime_context().get_node_id()
    with open(os.path.join(path, f"{os.getpid()}-{time.monotonic_ns()}"), "w") as f:
        f.write(node)
    deadline = time.monotonic() + 60
    while len(os.listdir(path)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError("the tasks did not run in parallel")
        time.sleep(0.01)
    return node


def test_spillback_when_the_local_node_is_full(cluster2: tuple[Cluster, str], tmp_path) -> None:
    cluster, node_id = cluster2
    gather = runtime.remote(_gather_at)
    # 3 one-CPU tasks at once: the head (1 CPU) runs one, the node (2 CPUs) two.
    nodes = runtime.get([gather.remote(str(tmp_path), 3) for _ in range(3)], timeout=90)
    assert sorted(nodes) == sorted([head_id(cluster), node_id, node_id])


def test_spread_places_actors_on_every_node(cluster2: tuple[Cluster, str]) -> None:
    cluster, node_id = cluster2

    @runtime.remote
    class Where:
        def node(self) -> str:
            return runtime.get_runtime_context().get_node_id()

    actors = [Where.options(scheduling_strategy="SPREAD").remote() for _ in range(4)]
    nodes = runtime.get([a.node.remote() for a in actors])
    assert set(nodes) == {head_id(cluster), node_id}


def test_spread_runs_parallel_tasks_on_every_node(cluster2: tuple[Cluster, str], tmp_path) -> None:
    cluster, node_id = cluster2
    gather = runtime.remote(_gather_at).options(num_cpus=0.5, scheduling_strategy="SPREAD")
    nodes = runtime.get([gather.remote(str(tmp_path), 2) for _ in range(2)], timeout=90)
    assert set(nodes) == {head_id(cluster), node_id}


def test_node_affinity(cluster2: tuple[Cluster, str]) -> None:
    cluster, node_id = cluster2
    hard = NodeAffinitySchedulingStrategy(node_id, soft=False)
    assert runtime.get(node_of.options(scheduling_strategy=hard).remote()) == node_id
    by_object = NodeAffinitySchedulingStrategy(runtime.NodeID.from_hex(node_id), soft=False)
    assert by_object == hard  # (Ray's ``get_runtime_context().node_id`` is one)
    head = NodeAffinitySchedulingStrategy(head_id(cluster), soft=False)
    assert runtime.get(node_of.options(scheduling_strategy=head).remote()) == head_id(cluster)
    missing = "ab" * 16
    soft = NodeAffinitySchedulingStrategy(missing, soft=True)
    assert runtime.get(node_of.options(scheduling_strategy=soft).remote()) in {
        head_id(cluster),
        node_id,
    }
    with pytest.raises(exceptions.TaskUnschedulableError, match="not in the cluster"):
        runtime.get(
            node_of.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(missing, soft=False)
            ).remote()
        )

    @runtime.remote
    class Pinned:
        def ping(self) -> int:
            return 1

    pinned = Pinned.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(missing, soft=False)
    ).remote()
    with pytest.raises(exceptions.ActorDiedError, match="cannot be scheduled"):
        runtime.get(pinned.ping.remote())


def test_bad_strategies_are_refused_at_the_call_site(cluster2: tuple[Cluster, str]) -> None:
    with pytest.raises(ValueError, match="scheduling_strategy"):
        node_of.options(scheduling_strategy="EVERYWHERE")
    with pytest.raises(ValueError, match="not a node id"):
        NodeAffinitySchedulingStrategy("nope", soft=False)
    with pytest.raises(TypeError, match="hex str"):
        NodeAffinitySchedulingStrategy(b"x" * 16, soft=False)  # type: ignore[arg-type]


@runtime.remote(max_retries=2)
def make_array(mb: int) -> np.ndarray:
    return np.full(mb * 1024 * 1024 // 8, 7.0)


def test_objects_move_between_nodes(cluster2: tuple[Cluster, str]) -> None:
    cluster, node_id = cluster2
    on_node = NodeAffinitySchedulingStrategy(node_id, soft=False)
    on_head = NodeAffinitySchedulingStrategy(head_id(cluster), soft=False)
    ref = make_array.options(scheduling_strategy=on_node).remote(20)
    # The driver (on the head) pulls it.
    arr = runtime.get(ref)
    assert arr.shape == (20 * 1024 * 1024 // 8,) and arr[0] == 7.0 and not arr.flags.writeable

    @runtime.remote
    def total(a: np.ndarray) -> float:
        return float(a.sum())

    expected = 7.0 * arr.size
    # An argument held by another node is pulled before the task runs ...
    assert runtime.get(total.options(scheduling_strategy=on_head).remote(ref)) == expected
    # ... and a driver's put is pulled by a task on another node.
    put = runtime.put(np.ones(3 * 1024 * 1024))
    assert runtime.get(total.options(scheduling_strategy=on_node).remote(put)) == 3 * 1024 * 1024


def test_concurrent_gets_share_one_pull(cluster2: tuple[Cluster, str]) -> None:
    from runtime.api import _context
    from runtime.protocol.rt import Empty

    _, node_id = cluster2
    ref = make_array.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)
    ).remote(30)
    runtime.wait([ref], fetch_local=False)
    worker = _context.current()

    async def many() -> list[float]:
        arrays = await asyncio.gather(*(runtime.get_async(ref) for _ in range(8)))
        return [float(a[-1]) for a in arrays]

    assert asyncio.run(many()) == [7.0] * 8
    stats = worker.bridge.run_blocking(worker.raylet.get_node_stats(Empty()))
    assert stats.num_pulls == 1
    assert stats.bytes_pulled < 2 * 30 * 1024 * 1024


def test_infeasible_waits_for_a_node_that_fits(caplog: pytest.LogCaptureFixture) -> None:
    with cluster_of(head_node_args={"num_cpus": 1}) as cluster:
        runtime.init(address=cluster.address)
        ref = node_of.options(resources={"accelerator": 1}).remote()

        @runtime.remote(resources={"accelerator": 1})
        class Accel:
            def node(self) -> str:
                return runtime.get_runtime_context().get_node_id()

        actor = Accel.remote()
        call = actor.node.remote()
        ready, _ = runtime.wait([ref, call], num_returns=2, timeout=0.5)
        assert ready == []
        wait_until(
            lambda: (
                "task node_of() needs resources" in caplog.text
                and "actor Accel needs resources" in caplog.text
            ),
            what="the infeasible warnings",
        )
        node = cluster.add_node(num_cpus=1, resources={"accelerator": 2})
        assert runtime.get(ref, timeout=60) == node.node_id
        assert runtime.get(call, timeout=60) == node.node_id


@pytest.mark.parametrize("how", ["killed", "removed"])
def test_node_death_retries_tasks_and_restarts_actors(tmp_path, how: str) -> None:
    with cluster_of(head_node_args={"num_cpus": 1}) as cluster:
        victim = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        runtime.init(address=cluster.address)
        prefer_victim = NodeAffinitySchedulingStrategy(victim.node_id, soft=True)
        marker = tmp_path / "attempts"

        @runtime.remote(max_retries=2)
        def long_task(path: str) -> str:
            import time

            with open(path, "a") as f:
                f.write("x")
            with open(path) as f:
                first = f.read() == "x"
            while first:  # the first attempt waits until its node is killed
                time.sleep(0.01)
            return runtime.get_runtime_context().get_node_id()

        @runtime.remote(max_restarts=1, max_task_retries=1)
        class Where:
            def node(self) -> str:
                return runtime.get_runtime_context().get_node_id()

        actor = Where.options(scheduling_strategy=prefer_victim).remote()
        assert runtime.get(actor.node.remote()) == victim.node_id
        ref = long_task.options(scheduling_strategy=prefer_victim).remote(str(marker))
        wait_until(lambda: marker.exists(), timeout=60, what="the task to start")
        if how == "killed":
            victim.kill()  # a crash: SIGKILL
        else:
            cluster.remove_node(victim)  # a clean stop: it unregisters
        assert runtime.get(ref, timeout=60) == head_id(cluster)
        assert runtime.get(actor.node.remote(), timeout=60) == head_id(cluster)
        dead = [n for n in runtime.nodes() if n["NodeID"] == victim.node_id]
        assert dead and not dead[0]["Alive"]


def test_object_lost_with_its_node_is_rebuilt_or_reported() -> None:
    with cluster_of(head_node_args={"num_cpus": 1}) as cluster:
        victim = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        runtime.init(address=cluster.address)
        prefer_victim = NodeAffinitySchedulingStrategy(victim.node_id, soft=True)
        rebuildable = make_array.options(scheduling_strategy=prefer_victim).remote(5)
        once = make_array.options(scheduling_strategy=prefer_victim, max_retries=0).remote(5)

        @runtime.remote(max_restarts=1, max_task_retries=1)
        class Maker:
            def make(self) -> np.ndarray:
                return np.full(5 * 1024 * 1024 // 8, 9.0)

        @runtime.remote(max_retries=1)
        def double(array: np.ndarray) -> np.ndarray:
            return array * 2

        maker = Maker.options(scheduling_strategy=prefer_victim).remote()
        mortal = Maker.options(scheduling_strategy=prefer_victim, max_restarts=0).remote()
        made = maker.make.remote()
        base = make_array.options(scheduling_strategy=prefer_victim).remote(5)
        derived = double.options(scheduling_strategy=prefer_victim).remote(base)
        del base  # only the lineage of ``derived`` keeps how to make it
        # Ready (held by the victim's store), but never copied to the head.
        runtime.wait([rebuildable, once, made, derived], num_returns=4, fetch_local=False)
        runtime.get(mortal.__ray_ready__.remote())
        victim.kill()
        cluster.wait_for_dead(victim)
        assert float(runtime.get(rebuildable, timeout=60)[0]) == 7.0
        assert float(runtime.get(made, timeout=60)[0]) == 9.0  # by the restarted actor
        with pytest.raises(exceptions.ActorDiedError, match="died with its node"):
            runtime.get(mortal.make.remote(), timeout=60)
        # Its lost argument first, then itself, with the argument where it is now.
        assert float(runtime.get(derived, timeout=60)[0]) == 14.0
        with pytest.raises(exceptions.ObjectLostError):
            runtime.get(once, timeout=60)


@pytest.fixture
def with_victim() -> Iterator[tuple[Cluster, Node]]:
    """A head with 1 CPU and a node with the custom resource ``victim``; a driver."""
    with cluster_of(head_node_args={"num_cpus": 1}) as cluster:
        victim = cluster.add_node(num_cpus=1, resources={"victim": 1})
        cluster.wait_for_nodes()
        runtime.init(address=cluster.address)
        yield cluster, victim


def test_streamed_items_lost_with_their_node_come_back(
    with_victim: tuple[Cluster, Node], tmp_path
) -> None:
    # Items read before the node died: those of a stream still running come
    # from its retry; once it has ended, from a replay of the generator.
    cluster, victim = with_victim
    runs = tmp_path / "runs"

    @runtime.remote(resources={"victim": 1}, max_retries=3)
    def stream(path: str):
        import time

        with open(path, "a") as f:
            f.write("x")
        with open(path) as f:
            first = len(f.read()) == 1
        for i in range(4):
            while first and i == 2:  # the first run stalls until its node dies
                time.sleep(0.01)
            yield np.full(1024 * 1024 // 8, i)

    gen = stream.remote(str(runs))
    early = [next(gen), next(gen)]  # held by the victim's store only
    victim.kill()
    cluster.wait_for_dead(victim)
    second = cluster.add_node(num_cpus=1, resources={"victim": 1})
    assert int(runtime.get(early[0], timeout=60)[0]) == 0  # waits for the retry's
    rest = list(gen)
    runtime.wait(rest, num_returns=len(rest), fetch_local=False)
    assert len(runs.read_text()) == 2
    second.kill()  # now the stream has ended: its lost items need a replay
    cluster.wait_for_dead(second)
    cluster.add_node(num_cpus=1, resources={"victim": 1})
    assert [int(a[0]) for a in runtime.get(early + rest, timeout=60)] == [0, 1, 2, 3]
    assert len(runs.read_text()) == 3


def test_a_task_whose_node_dies_under_it_is_retried(
    with_victim: tuple[Cluster, Node], tmp_path
) -> None:
    # Its raylet gone, the task's put fails (LocalRayletDiedError) before its
    # worker is gone too: a system failure, retried elsewhere, not its own error.
    cluster, victim = with_victim
    marker = tmp_path / "attempts"

    @runtime.remote(max_retries=1, resources={"victim": 0.001})
    def doomed(raylet_pid: int, path: str) -> str:
        import signal

        if not os.path.exists(path):
            open(path, "w").close()
            os.kill(raylet_pid, signal.SIGKILL)
            runtime.put(np.zeros(1 << 20))
        return runtime.get_runtime_context().get_node_id()

    ref = doomed.remote(victim.pid, str(marker))
    wait_until(marker.exists, 60, "the first attempt")
    cluster.wait_for_dead(victim)
    replacement = cluster.add_node(num_cpus=1, resources={"victim": 1})
    assert runtime.get(ref, timeout=60) == replacement.node_id


def test_health_checks_mark_a_hung_node_dead(tmp_path) -> None:
    import signal

    with cluster_of(head_node_args={"num_cpus": 1}, system_config=FAST_HEALTH) as cluster:
        hung = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        runtime.init(address=cluster.address)
        prefer_hung = NodeAffinitySchedulingStrategy(hung.node_id, soft=True)
        marker = tmp_path / "attempts"

        @runtime.remote(num_cpus=0, max_restarts=1, max_task_retries=1)
        class Where:
            def node(self) -> str:
                return runtime.get_runtime_context().get_node_id()

        @runtime.remote(max_retries=1)
        def stuck_first_time(path: str) -> str:
            import time

            with open(path, "a") as f:
                f.write("x")
            with open(path) as f:
                first = f.read() == "x"
            while first:  # the first attempt never ends (its node hangs)
                time.sleep(0.01)
            return runtime.get_runtime_context().get_node_id()

        actor = Where.options(scheduling_strategy=prefer_hung).remote()
        assert runtime.get(actor.node.remote()) == hung.node_id
        ref = stuck_first_time.options(scheduling_strategy=prefer_hung).remote(str(marker))
        wait_until(lambda: marker.exists(), timeout=60, what="the task to start")
        # The raylet hangs; its workers (and the task) still run, unaware.
        os.kill(hung.pid, signal.SIGSTOP)
        try:
            cluster.wait_for_dead(hung, timeout=30)
            assert runtime.get(ref, timeout=60) == head_id(cluster)
            assert runtime.get(actor.node.remote(), timeout=60) == head_id(cluster)
        finally:
            os.kill(hung.pid, signal.SIGCONT)
        # Woken up, it learns it was declared dead and exits; a new node joins anew.
        hung.process.popen.wait(timeout=30)
        again = cluster.add_node(num_cpus=1)
        assert again.node_id != hung.node_id
        cluster.nodes.remove(hung)
        cluster.wait_for_nodes()


@pytest.mark.parametrize("how", ["worker", "node"])
def test_objects_die_with_an_owner_on_another_node(how: str) -> None:
    from runtime.api import _context

    with cluster_of(head_node_args={"num_cpus": 1}) as cluster:
        far = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        runtime.init(address=cluster.address)
        store = _context.current().store_client
        assert store is not None
        baseline = store.stats().num_objects
        on_head = NodeAffinitySchedulingStrategy(head_id(cluster), soft=False)

        @runtime.remote(num_cpus=0)
        class Owner:
            def make(self) -> int:
                # Owned by this actor (on the far node), held by the head's store.
                self.ref = make_array.options(scheduling_strategy=on_head).remote(2)
                runtime.wait([self.ref], fetch_local=False)
                return 1

        owner = Owner.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(far.node_id, soft=False)
        ).remote()
        assert runtime.get(owner.make.remote()) == 1
        assert store.stats().num_objects == baseline + 1
        if how == "worker":
            runtime.kill(owner)
        else:
            far.kill()
        wait_until(
            lambda: store.stats().num_objects == baseline,
            timeout=30,
            what="the dead owner's object to leave the head's store",
        )


def test_a_hung_node_releases_lease_requests_and_pulls_waiting_on_it(tmp_path) -> None:
    import signal

    slot = {"slot": 1}  # one per node: the actor below takes one, never a CPU
    with cluster_of(
        head_node_args={"num_cpus": 1, "resources": slot}, system_config=FAST_HEALTH
    ) as cluster:
        hung = cluster.add_node(num_cpus=1, resources=slot)
        cluster.wait_for_nodes()
        runtime.init(address=cluster.address)
        on_hung = NodeAffinitySchedulingStrategy(hung.node_id, soft=False)
        prefer_hung = NodeAffinitySchedulingStrategy(hung.node_id, soft=True)
        release = tmp_path / "release"

        @runtime.remote(max_retries=0)
        def hold(path: str, started: str) -> str:
            import time

            open(started, "w").close()
            while not os.path.exists(path):
                time.sleep(0.01)
            return runtime.get_runtime_context().get_node_id()

        # An object only the soon-hung node holds, not copied anywhere yet.
        array = make_array.options(scheduling_strategy=prefer_hung).remote(4)
        runtime.wait([array], fetch_local=False)
        # Both CPUs busy; a task that prefers the hung node waits at its raylet.
        on_head = hold.remote(str(release), str(tmp_path / "a"))
        stuck = hold.options(scheduling_strategy=on_hung, resources=slot).remote(
            str(tmp_path / "never"), str(tmp_path / "b")
        )
        wait_until(
            lambda: (tmp_path / "a").exists() and (tmp_path / "b").exists(),
            timeout=60,
            what="both CPUs to be taken",
        )
        waiting = node_of.options(num_cpus=1, scheduling_strategy=prefer_hung).remote()

        @runtime.remote(num_cpus=0, resources=slot)
        class Where:
            def node(self) -> str:
                return runtime.get_runtime_context().get_node_id()

        # The gcs's lease request for this actor waits at the hung node too.
        actor = Where.options(scheduling_strategy=prefer_hung).remote()
        placed = actor.node.remote()
        ready, _ = runtime.wait([waiting, placed], timeout=0.5)
        assert ready == []
        os.kill(hung.pid, signal.SIGSTOP)
        try:
            release.write_text("go")  # the head's CPU frees up for what moves there
            # A get started now pulls from the hung node: it must not wait forever,
            # and rebuilds the object on the head once the node is declared dead.
            assert float(runtime.get(array, timeout=60)[0]) == 7.0
            assert runtime.get(on_head, timeout=60) == head_id(cluster)
            assert runtime.get(waiting, timeout=60) == head_id(cluster)
            assert runtime.get(placed, timeout=60) == head_id(cluster)
            with pytest.raises(exceptions.WorkerCrashedError):
                runtime.get(stuck, timeout=60)
        finally:
            os.kill(hung.pid, signal.SIGCONT)


def test_tasks_run_where_their_arguments_are(cluster2: tuple[Cluster, str]) -> None:
    from runtime.api import _context
    from runtime.protocol.rt import Empty

    _, node_id = cluster2
    ref = make_array.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)
    ).remote(20)
    runtime.wait([ref], fetch_local=False)

    @runtime.remote
    def where(a: np.ndarray) -> str:
        return runtime.get_runtime_context().get_node_id()

    # The head has a free CPU, but the 20 MB argument is on the node, which has room:
    # the lease is asked of the node's raylet, and it runs there.
    assert [runtime.get(where.remote(ref)) for _ in range(3)] == [node_id] * 3
    worker = _context.current()
    stats = worker.bridge.run_blocking(worker.raylet.get_node_stats(Empty()))
    assert stats.num_pulls == 0


def test_the_multinode_example_runs(tmp_path) -> None:
    import subprocess
    import sys

    from conftest import ROOT

    env = {**os.environ, "RUNTIME_SESSION_ROOT": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "multinode.py")],
        capture_output=True,
        text=True,
        timeout=100,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "moved 210 MB between nodes" in result.stdout
    assert_no_orphans(str(tmp_path))


def test_an_object_too_big_for_this_nodes_store_is_copied_to_disk() -> None:
    with cluster_of(head_node_args={"num_cpus": 1, "object_store_memory": 32 << 20}) as cluster:
        big = cluster.add_node(num_cpus=1, object_store_memory=256 << 20)
        cluster.wait_for_nodes()
        runtime.init(address=cluster.address)
        there = NodeAffinitySchedulingStrategy(big.node_id, soft=False)
        ref = make_array.options(scheduling_strategy=there).remote(64)
        runtime.wait([ref], fetch_local=False)
        # Twice this node's store: its copy here is a fallback allocation on disk.
        value = runtime.get(ref, timeout=60)
        assert value.nbytes == 64 << 20 and float(value[0]) == 7.0
        from runtime.api import _context

        assert _context.current().store_client.stats().fallback_bytes >= 64 << 20


def test_wait_fetches_ready_objects_unless_told_not_to(cluster2: tuple[Cluster, str]) -> None:
    from runtime.api import _context
    from runtime.protocol.rt import Empty

    _, node_id = cluster2
    worker = _context.current()

    def pulls() -> int:
        stats = worker.bridge.run_blocking(worker.raylet.get_node_stats(Empty()))
        return int(stats.num_pulls)

    there = NodeAffinitySchedulingStrategy(node_id, soft=False)
    kept_there = make_array.options(scheduling_strategy=there).remote(2)
    fetched = make_array.options(scheduling_strategy=there).remote(2)
    assert runtime.wait([kept_there], fetch_local=False)[0] == [kept_there]
    assert pulls() == 0
    assert runtime.wait([fetched], timeout=60)[0] == [fetched]
    assert pulls() == 1
    runtime.get(fetched)  # already here: no second transfer
    assert pulls() == 1

    async def waits() -> int:
        ready, _ = await runtime.wait_async([kept_there], timeout=60)
        return len(ready)

    assert asyncio.run(waits()) == 1
    assert pulls() == 2


def test_memory_tables_cover_every_node(cluster2: tuple[Cluster, str]) -> None:
    from runtime import util

    _, node_id = cluster2

    @runtime.remote(num_cpus=0)
    class Holder:
        def __init__(self) -> None:
            self.ref = runtime.put(np.zeros(1 << 18))  # owned on the far node

        def node(self) -> str:
            return runtime.get_runtime_context().get_node_id()

    holder = Holder.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)
    ).remote()
    assert runtime.get(holder.node.remote()) == node_id
    tables = util.memory_tables()
    far = [t for t in tables if t.info.address and t.info.address.node_id.hex() == node_id]
    assert any(row.owned and row.in_store for t in far for row in t.rows)
    assert "LOCAL_REFERENCE" in util.memory_summary()
