"""joblib's Parallel over tasks (Ray's ``ray.util.joblib``)."""

from __future__ import annotations

import math
import os

import joblib
import pytest

import runtime
from runtime.util.joblib import register_ray


def square(x: int) -> int:
    return x * x


def fails_at_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


def pid(_: int) -> int:
    return os.getpid()


def test_parallel_runs_batches_as_tasks(cluster: runtime.RuntimeContext) -> None:
    register_ray()
    with joblib.parallel_backend("ray"):
        assert joblib.Parallel(n_jobs=-1)(joblib.delayed(square)(i) for i in range(20)) == [
            i * i for i in range(20)
        ]
        # The work ran in the cluster's workers, not here.
        pids = joblib.Parallel(n_jobs=2)(joblib.delayed(pid)(i) for i in range(4))
        assert os.getpid() not in pids
        # A batch's error is the function's own, raised by Parallel.
        with pytest.raises(ValueError, match="three"):
            joblib.Parallel(n_jobs=2)(joblib.delayed(fails_at_three)(i) for i in range(10))
        lazy = joblib.Parallel(n_jobs=2, return_as="generator")
        assert list(lazy(joblib.delayed(square)(i) for i in range(5))) == [0, 1, 4, 9, 16]
    # Under its own name too, with the tasks' options.
    with joblib.parallel_backend("runtime", ray_remote_args={"num_cpus": 0.5}):
        roots = joblib.Parallel(n_jobs=4)(joblib.delayed(math.sqrt)(i) for i in (0, 1, 4))
        assert roots == [0.0, 1.0, 2.0]
