"""GPU ids per task and actor: CUDA_VISIBLE_DEVICES, get_gpu_ids, no mixed reuse.

The machine has no GPUs: the cluster is told it has two, as Ray allows, and
the tests check what each task and actor is told it may use.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from conftest import assert_no_orphans

import runtime

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def gpu_cluster() -> Iterator[runtime.RuntimeContext]:
    ctx = runtime.init(num_cpus=4, num_gpus=2)
    try:
        yield ctx
    finally:
        runtime.shutdown()
        assert ctx.session_dir is not None
        assert_no_orphans(ctx.session_dir)


def seen() -> tuple[list, str | None, dict, int]:
    return (
        runtime.get_gpu_ids(),
        os.environ.get("CUDA_VISIBLE_DEVICES"),
        runtime.get_runtime_context().get_accelerator_ids(),
        os.getpid(),
    )


@runtime.remote
def task_sees():
    return seen()


@runtime.remote(num_cpus=0)
class Holder:
    def sees(self):
        return seen()


def test_actors_get_whole_or_shared_gpus(gpu_cluster):
    whole = [Holder.options(num_gpus=1).remote() for _ in range(2)]
    views = runtime.get([h.sees.remote() for h in whole])
    assert sorted(ids for ids, *_ in views) == [[0], [1]]
    for ids, env, accel, _ in views:
        assert env == str(ids[0]) and accel == {"GPU": [str(ids[0])]}
    for h in whole:
        runtime.kill(h)
    # Halves share one id (they wait for the whole actors' GPUs to come back).
    halves = [Holder.options(num_gpus=0.5).remote() for _ in range(2)]
    views = runtime.get([h.sees.remote() for h in halves], timeout=60)
    assert views[0][0] == views[1][0] and len(views[0][0]) == 1
    assert views[0][1] == views[1][1] == str(views[0][0][0])


def test_tasks_see_their_gpus_and_cpu_tasks_none(gpu_cluster):
    ids, env, accel, _ = runtime.get(task_sees.options(num_gpus=2).remote())
    assert ids == [0, 1] and env == "0,1" and accel == {"GPU": ["0", "1"]}
    ids, env, accel, _ = runtime.get(task_sees.remote())
    assert ids == [] and env == "" and accel == {"GPU": []}
    assert runtime.get_gpu_ids() == []  # a driver holds none


def test_a_worker_is_not_reused_across_visible_devices(gpu_cluster):
    gpu_task = task_sees.options(num_gpus=1, max_calls=0)
    first = runtime.get(gpu_task.remote())
    again = runtime.get(gpu_task.remote())
    # The same id may reuse the worker (max_calls=0 keeps it); a CPU task never does.
    cpu_pids = {runtime.get(task_sees.remote())[3] for _ in range(4)}
    assert first[3] not in cpu_pids and again[3] not in cpu_pids
    if again[0] == first[0]:
        assert again[3] == first[3]
    # By default a GPU task's worker exits after it (Ray's max_calls=1 for GPUs).
    pids = {runtime.get(task_sees.options(num_gpus=1).remote())[3] for _ in range(2)}
    assert len(pids) == 2


def test_gpu_amounts_above_one_are_whole():
    with pytest.raises(ValueError, match="whole numbers"):
        task_sees.options(num_gpus=1.5)
