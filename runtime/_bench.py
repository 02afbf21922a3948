"""``runtime microbenchmark``: throughput rows named as in Ray's microbenchmark.

Each row is timed as Ray times its own: a warm-up, then four timed runs;
it prints ``NAME per second MEAN +- STD`` (calls per second times the
row's multiplier). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import runtime


@runtime.remote
def _noop() -> None:
    return None


@runtime.remote
async def _anoop() -> None:
    return None


class _SyncActorImpl:
    def small_value(self) -> bytes:
        return b"ok"


class _AsyncActorImpl:
    async def small_value(self) -> bytes:
        return b"ok"


@runtime.remote
def _object_containing_refs() -> Any:
    return runtime.put([runtime.put(1) for _ in range(10_000)])


@runtime.remote
def _produce(n: int) -> Any:
    import numpy as np

    return np.ones(n, dtype=np.int64)


@runtime.remote
def _consume(array: Any) -> int:
    return int(array[-1])


# Wrapped rather than decorated: type checkers do not see class decorators.
_Actor = runtime.remote(_SyncActorImpl)
_AsyncActor = runtime.remote(_AsyncActorImpl)


def _timeit(
    name: str, fn: Callable[[], Any], duration: float, multiplier: float = 1
) -> dict[str, Any]:
    def run(seconds: float) -> float:
        count = 0
        start = time.perf_counter()
        while True:
            fn()
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return count * multiplier / elapsed

    run(min(1.0, duration / 2))
    rates = [run(duration) for _ in range(4)]
    mean, std = statistics.mean(rates), statistics.pstdev(rates)
    print(f"{name} per second {mean:.2f} +- {std:.2f}", flush=True)
    return {"name": name, "mean": mean, "std": std}


def _store_rows(want: Callable[[str], bool]) -> list[tuple[str, Callable[[], Any], float]]:
    """Rows that move large arrays through the shared-memory store."""
    try:
        import numpy as np
    except ImportError:  # numpy is optional for the runtime
        return []
    rows: list[tuple[str, Callable[[], Any], float]] = []
    if want("single client put gigabytes"):
        big = np.zeros(100 * 1024 * 1024, dtype=np.int64)  # 800 MiB
        rows.append(("single client put gigabytes", lambda: runtime.put(big), 0.8))
    if want("single client get gigabytes"):
        stored = runtime.put(np.zeros(100 * 1024 * 1024, dtype=np.int64))
        rows.append(("single client get gigabytes", lambda: runtime.get(stored), 0.8))
    if want("task passing 100 MB array"):
        n = 100 * 1024 * 1024 // 8
        rows.append(
            (
                "task passing 100 MB array to another",
                lambda: runtime.get(_consume.remote(_produce.remote(n))),
                1,
            )
        )
    return rows


def main(args: argparse.Namespace) -> int:
    duration = float(args.duration)
    rows: list[dict[str, Any]] = []

    def want(name: str) -> bool:
        return args.filter in name

    start = time.perf_counter()
    runtime.init()
    runtime.get(_noop.remote())
    first = time.perf_counter() - start
    if want("init to first result"):
        print(f"seconds from init() to the first task result {first:.3f}", flush=True)
        rows.append({"name": "init to first result (s)", "mean": first, "std": 0.0})
    try:
        value = runtime.put(0)
        table: list[tuple[str, Callable[[], Any], float]] = [
            ("single client get calls", lambda: runtime.get(value), 1),
            ("single client put calls", lambda: runtime.put(0), 1),
            ("single client tasks sync", lambda: runtime.get(_noop.remote()), 1),
            (
                "single client tasks async",
                lambda: runtime.get([_noop.remote() for _ in range(1000)]),
                1000,
            ),
            (
                "single client async-def tasks async",
                lambda: runtime.get([_anoop.remote() for _ in range(1000)]),
                1000,
            ),
        ]
        actor = _Actor.remote()
        concurrent_actor = _Actor.options(max_concurrency=16).remote()
        async_actor = _AsyncActor.remote()
        runtime.get([actor.small_value.remote(), async_actor.small_value.remote()])
        table += [
            ("1:1 actor calls sync", lambda: runtime.get(actor.small_value.remote()), 1),
            (
                "1:1 actor calls async",
                lambda: runtime.get([actor.small_value.remote() for _ in range(1000)]),
                1000,
            ),
            (
                "1:1 actor calls concurrent",
                lambda: runtime.get([concurrent_actor.small_value.remote() for _ in range(1000)]),
                1000,
            ),
            (
                "1:1 async-actor calls sync",
                lambda: runtime.get(async_actor.small_value.remote()),
                1,
            ),
            (
                "1:1 async-actor calls async",
                lambda: runtime.get([async_actor.small_value.remote() for _ in range(1000)]),
                1000,
            ),
        ]
        containing = runtime.get(_object_containing_refs.remote())

        def wait_one_at_a_time() -> None:
            pending = [_noop.remote() for _ in range(1000)]
            while pending:
                _, pending = runtime.wait(pending)

        table += [
            (
                "single client get object containing 10k refs",
                lambda: runtime.get(containing),
                1,
            ),
            ("single client wait 1k refs", wait_one_at_a_time, 1),
        ]
        table += _store_rows(want)
        for name, fn, multiplier in table:
            if want(name):
                rows.append(_timeit(name, fn, duration, multiplier))
    finally:
        runtime.shutdown()

    name = "asyncio driver gather 1000 task refs"
    if want(name):

        async def bench_async() -> None:
            await runtime.init_async()
            try:
                loop_rows: list[float] = []

                async def batch() -> None:
                    await asyncio.gather(*[_noop.remote() for _ in range(1000)])

                await batch()
                for _ in range(4):
                    count, t0 = 0, time.perf_counter()
                    while time.perf_counter() - t0 < duration:
                        await batch()
                        count += 1000
                    loop_rows.append(count / (time.perf_counter() - t0))
                mean, std = statistics.mean(loop_rows), statistics.pstdev(loop_rows)
                print(f"{name} per second {mean:.2f} +- {std:.2f}", flush=True)
                rows.append({"name": name, "mean": mean, "std": std})
            finally:
                await runtime.shutdown_async()

        asyncio.run(bench_async())

    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
    return 0
