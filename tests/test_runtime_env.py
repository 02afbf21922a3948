"""Runtime environments (env_vars so far): per job, task and actor, merged as
Ray merges them, and never sharing a worker across environments."""

from __future__ import annotations

import os

import pytest
from conftest import cluster_of

import runtime
from runtime.util.scheduling_strategies import NodeAffinitySchedulingStrategy

pytestmark = pytest.mark.timeout(120)


@runtime.remote(num_cpus=0)
def seen() -> tuple[str | None, str | None, int]:
    return os.environ.get("A"), os.environ.get("B"), os.getpid()


@runtime.remote(num_cpus=0)
def child_sees() -> tuple[str | None, str | None, int]:
    return runtime.get(seen.remote())


@runtime.remote(num_cpus=0)
class Holder:
    def seen(self) -> tuple[str | None, str | None]:
        return os.environ.get("A"), os.environ.get("B")


def test_env_vars_of_the_job_task_and_actor_merge() -> None:
    runtime.init(num_cpus=2, runtime_env={"env_vars": {"A": "job", "B": "job"}})
    try:
        assert runtime.get_runtime_context().runtime_env == {"env_vars": {"A": "job", "B": "job"}}
        assert runtime.get(seen.remote())[:2] == ("job", "job")
        own = seen.options(runtime_env={"env_vars": {"B": "task"}})
        assert runtime.get(own.remote())[:2] == ("job", "task")
        # A task's children run in its environment unless told otherwise.
        nested = child_sees.options(runtime_env={"env_vars": {"A": "parent"}})
        assert runtime.get(nested.remote())[:2] == ("parent", "job")
        actor = Holder.options(runtime_env={"env_vars": {"A": "actor"}}).remote()
        assert runtime.get(actor.seen.remote()) == ("actor", "job")
    finally:
        runtime.shutdown()


def test_two_environments_never_share_a_worker(cluster: runtime.RuntimeContext) -> None:
    one = seen.options(runtime_env={"env_vars": {"A": "1"}})
    two = seen.options(runtime_env={"env_vars": {"A": "2"}})
    results = runtime.get([(one if i % 2 else two).remote() for i in range(12)])
    by_env: dict[str | None, set[int]] = {}
    for a, _, pid in results:
        by_env.setdefault(a, set()).add(pid)
    assert set(by_env) == {"1", "2"}
    assert not by_env["1"] & by_env["2"]
    # No environment: the job's own workers, none of the others.
    plain = {pid for _, _, pid in runtime.get([seen.remote() for _ in range(4)])}
    assert not plain & (by_env["1"] | by_env["2"])


def test_env_vars_reach_a_task_on_another_node() -> None:
    with cluster_of(head_node_args={"num_cpus": 1}) as cluster:
        other = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        runtime.init(address=cluster.address, runtime_env={"env_vars": {"A": "everywhere"}})
        there = NodeAffinitySchedulingStrategy(other.node_id, soft=False)
        assert runtime.get(seen.options(scheduling_strategy=there).remote())[0] == "everywhere"


def test_bad_runtime_envs_are_refused_at_the_call_site(cluster: runtime.RuntimeContext) -> None:
    with pytest.raises(ValueError, match="unknown runtime_env field 'envvars'"):
        seen.options(runtime_env={"envvars": {}})
    with pytest.raises(TypeError, match="must be a str"):
        seen.options(runtime_env={"env_vars": {"A": 1}})
    with pytest.raises(ValueError, match="not supported"):
        Holder.options(runtime_env={"conda": "env"})
    with pytest.raises(ValueError, match="not available yet"):
        seen.options(runtime_env={"working_dir": "."})
    with pytest.raises(ValueError, match="setup_timeout_seconds"):
        seen.options(runtime_env={"config": {"setup_timeout_seconds": 0}})
    with pytest.raises(TypeError, match="runtime_env must be a dict"):
        seen.options(runtime_env=["A"])


def test_init_refuses_a_bad_runtime_env_before_starting_anything() -> None:
    with pytest.raises(ValueError, match="unknown runtime_env field"):
        runtime.init(num_cpus=1, runtime_env={"nope": 1})
    assert not runtime.is_initialized()
