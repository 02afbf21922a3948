"""``runtime microbenchmark``: Ray's microbenchmark workloads, under Ray's names.

Each row is timed as Ray times its own: a 1 s warm-up, then four runs of
2 s; it prints ``NAME per second MEAN +- STD``, the calls per second times
the row's multiplier, so the two can be read side by side. Rows marked
*(ours)* measure what Ray's does not: asyncio drivers, start-up, memory.

``--smoke`` runs every row once at a small scale (for CI: the command never
breaks); figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import runtime
from runtime.util.placement_group import placement_group, remove_placement_group

from ._report import report

# -- the workloads' remote functions and actors --------------------------------------


@runtime.remote
def small_value() -> bytes:
    return b"ok"


@runtime.remote
def small_value_batch(n: int) -> int:
    runtime.get([small_value.remote() for _ in range(n)])
    return 0


@runtime.remote
def small_items(n: int) -> Any:
    for _ in range(n):
        yield b"ok"


@runtime.remote
def create_object_containing_ref(n: int) -> list[Any]:
    return [runtime.put(1) for _ in range(n)]


@runtime.remote
def do_put_small(n: int) -> None:
    for _ in range(n):
        runtime.put(0)


@runtime.remote
def do_put(n: int, size: int) -> None:
    import numpy as np

    for _ in range(n):
        runtime.put(np.zeros(size, dtype=np.int64))


class _Actor:
    def small_value(self) -> bytes:
        return b"ok"

    def small_value_arg(self, x: Any) -> bytes:
        return b"ok"

    def small_value_batch(self, n: int) -> None:
        runtime.get([small_value.remote() for _ in range(n)])


class _AsyncActor:
    async def small_value(self) -> bytes:
        return b"ok"

    async def small_items(self, n: int) -> Any:
        for _ in range(n):
            yield b"ok"

    async def small_value_with_arg(self, x: Any) -> bytes:
        return b"ok"


class _Client:
    def __init__(self, servers: Any) -> None:
        self.servers = servers if isinstance(servers, list) else [servers]

    def small_value_batch(self, n: int) -> None:
        refs = []
        for server in self.servers:
            refs.extend([server.small_value.remote() for _ in range(n)])
        runtime.get(refs)

    def small_value_batch_arg(self, n: int) -> None:
        x = runtime.put(0)
        refs = []
        for server in self.servers:
            refs.extend([server.small_value_arg.remote(x) for _ in range(n)])
        runtime.get(refs)


# Wrapped rather than decorated: type checkers do not see class decorators.
Actor = runtime.remote(num_cpus=0)(_Actor)
AsyncActor = runtime.remote(_AsyncActor)
Client = runtime.remote(num_cpus=0)(_Client)


@runtime.remote
def actor_work(actors: list[Any], n: int) -> None:
    runtime.get([actors[i % len(actors)].small_value.remote() for i in range(n)])


# -- timing -------------------------------------------------------------------------------


@dataclass
class Timing:
    warmup_s: float = 1.0
    run_s: float = 2.0
    runs: int = 4


def timeit(
    name: str, fn: Callable[[], Any], timing: Timing, multiplier: float = 1
) -> dict[str, Any]:
    def rate(seconds: float) -> float:
        count = 0
        start = time.perf_counter()
        while True:
            fn()
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return count * multiplier / elapsed

    if timing.warmup_s > 0:
        rate(timing.warmup_s)
    return report(name, [rate(timing.run_s) for _ in range(timing.runs)])


# -- the rows --------------------------------------------------------------------------------


def _rows(scale: float) -> list[tuple[str, Callable[[], Callable[[], Any]], float]]:
    """(name, setup returning the timed function, multiplier) for every row, in Ray's order.

    ``scale`` shrinks the workloads (1.0: Ray's sizes).
    """
    import numpy as np

    def n(x: int) -> int:
        return max(1, int(x * scale))

    cpus = max(1, (os.cpu_count() or 2) // 2)
    rows: list[tuple[str, Callable[[], Callable[[], Any]], float]] = []

    def row(name: str, multiplier: float = 1) -> Callable[..., Any]:
        def register(setup: Callable[[], Callable[[], Any]]) -> Callable[[], Callable[[], Any]]:
            rows.append((name, setup, multiplier))
            return setup

        return register

    @row("single client get calls (Plasma Store)")
    def _() -> Callable[[], Any]:
        value = runtime.put(0)
        return lambda: runtime.get(value)

    @row("single client put calls (Plasma Store)")
    def _() -> Callable[[], Any]:
        return lambda: runtime.put(0)

    @row("multi client put calls (Plasma Store)", n(1000))
    def _() -> Callable[[], Any]:
        return lambda: runtime.get([do_put_small.remote(n(100)) for _ in range(10)])

    @row("single client put gigabytes", 8 * 0.1 * scale)
    def _() -> Callable[[], Any]:
        array = np.zeros(n(100 * 1024 * 1024), dtype=np.int64)
        return lambda: runtime.put(array)

    @row("single client tasks and get batch")
    def _() -> Callable[[], Any]:
        return lambda: runtime.get([small_value.remote() for _ in range(n(1000))])

    @row("multi client put gigabytes", 10 * 8 * 0.1 * scale)
    def _() -> Callable[[], Any]:
        size = n(10 * 1024 * 1024)
        return lambda: runtime.get([do_put.remote(10, size) for _ in range(10)])

    @row("single client get object containing 10k refs")
    def _() -> Callable[[], Any]:
        containing = create_object_containing_ref.remote(n(10_000))
        return lambda: runtime.get(containing)

    @row("single client wait 1k refs")
    def _() -> Callable[[], Any]:
        def wait_one_at_a_time() -> None:
            pending = [small_value.remote() for _ in range(n(1000))]
            while pending:
                _, pending = runtime.wait(pending)

        return wait_one_at_a_time

    @row("single client tasks sync")
    def _() -> Callable[[], Any]:
        return lambda: runtime.get(small_value.remote())

    @row("single client tasks async", n(1000))
    def _() -> Callable[[], Any]:
        return lambda: runtime.get([small_value.remote() for _ in range(n(1000))])

    @row("multi client tasks async", n(10_000) * 4)
    def _() -> Callable[[], Any]:
        actors = [Actor.remote() for _ in range(4)]
        return lambda: runtime.get([a.small_value_batch.remote(n(10_000)) for a in actors])

    @row("1:1 actor calls sync")
    def _() -> Callable[[], Any]:
        actor = Actor.remote()
        return lambda: runtime.get(actor.small_value.remote())

    @row("1:1 actor calls async", n(1000))
    def _() -> Callable[[], Any]:
        actor = Actor.remote()
        return lambda: runtime.get([actor.small_value.remote() for _ in range(n(1000))])

    @row("1:1 actor calls concurrent", n(1000))
    def _() -> Callable[[], Any]:
        actor = Actor.options(max_concurrency=16).remote()
        return lambda: runtime.get([actor.small_value.remote() for _ in range(n(1000))])

    @row("1:n actor calls async", n(5000) * cpus)
    def _() -> Callable[[], Any]:
        client = Client.remote([Actor.remote() for _ in range(cpus)])
        return lambda: runtime.get(client.small_value_batch.remote(n(5000)))

    @row("n:n actor calls async", 4 * n(5000))
    def _() -> Callable[[], Any]:
        actors = [Actor.remote() for _ in range(cpus)]
        return lambda: runtime.get([actor_work.remote(actors, n(5000)) for _ in range(4)])

    @row("n:n actor calls with arg async", n(1000) * cpus)
    def _() -> Callable[[], Any]:
        clients = [Client.remote(Actor.remote()) for _ in range(cpus)]
        return lambda: runtime.get([c.small_value_batch_arg.remote(n(1000)) for c in clients])

    @row("1:1 async-actor calls sync")
    def _() -> Callable[[], Any]:
        actor = AsyncActor.remote()
        return lambda: runtime.get(actor.small_value.remote())

    @row("1:1 async-actor calls async", n(1000))
    def _() -> Callable[[], Any]:
        actor = AsyncActor.remote()
        return lambda: runtime.get([actor.small_value.remote() for _ in range(n(1000))])

    @row("1:1 async-actor calls with args async", n(1000))
    def _() -> Callable[[], Any]:
        actor = AsyncActor.remote()
        return lambda: runtime.get([actor.small_value_with_arg.remote(i) for i in range(n(1000))])

    @row("1:n async-actor calls async", n(5000) * cpus)
    def _() -> Callable[[], Any]:
        client = Client.remote([AsyncActor.remote() for _ in range(cpus)])
        return lambda: runtime.get(client.small_value_batch.remote(n(5000)))

    @row("n:n async-actor calls async", 4 * n(5000))
    def _() -> Callable[[], Any]:
        actors = [AsyncActor.remote() for _ in range(cpus)]
        return lambda: runtime.get([actor_work.remote(actors, n(5000)) for _ in range(4)])

    @row("generator items from one task, read by a for loop (ours)", n(1000))
    def _() -> Callable[[], Any]:
        def consume() -> None:
            for ref in small_items.remote(n(1000)):
                runtime.get(ref)

        return consume

    return rows


# -- rows of our own -----------------------------------------------------------------------------


def _cluster_memory_mb(session_dir: str | None) -> float:
    """Memory of the driver and every process of its local cluster: the sum of
    their proportional set sizes (a page shared by n processes counts 1/n in
    each: forked workers share the worker template's pages, and a sum of
    resident sizes would count those once per worker)."""
    pids = [os.getpid()]
    if session_dir:
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if session_dir.encode() in f.read():
                        pids.append(int(name))
            except OSError:
                continue
    total_kb = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


async def _asyncio_rows(
    timing: Timing, scale: float, want: Callable[[str], bool]
) -> list[dict[str, Any]]:
    out = []
    await runtime.init_async()
    try:
        actor = AsyncActor.remote()
        await actor.small_value.remote()
        batch = max(1, int(1000 * scale))

        async def tasks() -> None:
            await asyncio.gather(*[small_value.remote() for _ in range(batch)])

        async def calls() -> None:
            await asyncio.gather(*[actor.small_value.remote() for _ in range(batch)])

        async def task_items() -> None:
            async for ref in small_items.remote(batch):
                await ref

        async def actor_items() -> None:
            async for ref in actor.small_items.remote(batch):
                await ref

        for name, fn in (
            ("asyncio driver gather 1000 task refs (ours)", tasks),
            ("asyncio driver gather 1000 async-actor calls (ours)", calls),
            ("generator items from one task, read by async for (ours)", task_items),
            (
                "generator items from an async actor's async generator, async for (ours)",
                actor_items,
            ),
        ):
            if not want(name):
                continue
            rates = []
            await fn()
            for _ in range(timing.runs):
                count, start = 0, time.perf_counter()
                while True:
                    await fn()
                    count += batch
                    if time.perf_counter() - start >= timing.run_s:
                        break
                rates.append(count / (time.perf_counter() - start))
            out.append(report(name, rates))
    finally:
        await runtime.shutdown_async()
    return out


def _placement_group_rows(
    timing: Timing, scale: float, want: Callable[[str], bool]
) -> list[dict[str, Any]]:
    """Ray's row on a cluster of its own: 100 one-bundle groups created,
    waited for, then removed."""
    name = "placement group create/removal"
    if not want(name):
        return []
    count = max(1, int(100 * scale))
    runtime.init(resources={"custom": 100})
    try:

        def create_and_remove() -> None:
            groups = [placement_group([{"custom": 0.001}]) for _ in range(count)]
            for group in groups:
                group.wait(timeout_seconds=30)
            for group in groups:
                remove_placement_group(group)

        return [timeit(name, create_and_remove, timing, count)]
    finally:
        runtime.shutdown()


def main(args: argparse.Namespace) -> int:
    smoke = bool(getattr(args, "smoke", False))
    timing = Timing(0.0, 0.0, 1) if smoke else Timing(run_s=float(args.duration))
    scale = 0.01 if smoke else 1.0
    pattern = args.filter or ""

    def want(name: str) -> bool:
        return pattern in name

    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    ctx = runtime.init()
    runtime.get(small_value.remote())
    first = time.perf_counter() - start
    try:
        if want("init"):
            print(f"seconds from init() to the first task result (ours) {first:.3f}", flush=True)
            results.append({"name": "init to first result (s)", "mean": first, "std": 0.0})
        if want("memory of an idle"):
            pss = _cluster_memory_mb(ctx.session_dir)
            print(f"memory of an idle local cluster (PSS), MB (ours) {pss:.1f}", flush=True)
            results.append({"name": "idle cluster PSS MB", "mean": pss, "std": 0.0})
        for name, setup, multiplier in _rows(scale):
            if want(name):
                results.append(timeit(name, setup(), timing, multiplier))
    finally:
        runtime.shutdown()
    results += asyncio.run(_asyncio_rows(timing, scale, want))
    results += _placement_group_rows(timing, scale, want)
    from . import _multinode

    results += _multinode.task_rows(scale, timing.runs, timing.run_s, want)
    results += _multinode.transfer_rows(scale, timing.runs, want)
    from . import _runtime_env

    results += _runtime_env.rows(timing.runs, timing.run_s, scale, want)
    from . import _gcs_storage

    results += _gcs_storage.rows(timing.runs, timing.run_s, scale, want)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0
