"""Rows of our own for runtime environments: what preparing one costs.

- the time to the first result of a task in a new ``pip`` environment (cold: a
  fresh cluster that installs the package) and in one prepared already (warm:
  another environment with the same requirements, so a new worker, no install);
- tasks per second in a ``working_dir`` environment, beside none.

The pip rows need the package index; without it they are left out, saying so.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import runtime

from ._report import report

#: A small pure-Python package the project does not depend on.
_PACKAGE = "tabulate"


@runtime.remote(num_cpus=0)
def _uses_package() -> int:
    import importlib

    importlib.import_module(_PACKAGE)
    return 1


@runtime.remote
def _nothing() -> int:
    return 1


def rows(
    runs: int, run_s: float, scale: float, want: Callable[[str], bool]
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    cold = "first result in a new pip environment, seconds (ours)"
    warm = "first result in a prepared pip environment, seconds (ours)"
    if want(cold) or want(warm):
        results += _pip_rows(cold, warm, max(1, runs // 2))
    name = "single client tasks async in a working_dir environment (ours)"
    if want(name):
        results.append(_working_dir_row(name, runs, run_s, scale))
    return results


def _first_result(env: dict[str, Any]) -> float:
    start = time.perf_counter()
    runtime.get(_uses_package.options(runtime_env=env).remote(), timeout=300)
    return time.perf_counter() - start


def _pip_rows(cold: str, warm: str, runs: int) -> list[dict[str, Any]]:
    cold_s: list[float] = []
    warm_s: list[float] = []
    for run in range(runs):
        runtime.init(num_cpus=2)
        try:
            try:
                cold_s.append(_first_result({"pip": [_PACKAGE]}))
            except runtime.exceptions.RuntimeEnvSetupError as e:
                print(f"{cold}: left out, the package index is unreachable ({e})", flush=True)
                return []
            env = {"pip": [_PACKAGE], "env_vars": {"RUN": str(run)}}
            warm_s.append(_first_result(env))
        finally:
            runtime.shutdown()
    return [_seconds(cold, cold_s), _seconds(warm, warm_s)]


def _seconds(name: str, values: list[float]) -> dict[str, Any]:
    mean = sum(values) / len(values)
    print(f"{name} {mean:.3f}", flush=True)
    return {"name": name, "mean": mean, "std": 0.0}


def _working_dir_row(name: str, runs: int, run_s: float, scale: float) -> dict[str, Any]:
    count = max(10, int(1000 * scale))
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "data.txt"), "w") as f:
            f.write("payload\n")
        runtime.init(num_cpus=2, runtime_env={"working_dir": folder})
        try:
            runtime.get([_nothing.remote() for _ in range(count)])  # warm-up
            rates = []
            for _ in range(runs):
                done, start = 0, time.perf_counter()
                while time.perf_counter() - start < run_s:
                    runtime.get([_nothing.remote() for _ in range(count)])
                    done += count
                rates.append(done / (time.perf_counter() - start))
        finally:
            runtime.shutdown()
    return report(name, rates)
