"""Rows of our own for the gcs's storage, with each backend (memory, SQLite, Redis):

- actor creations per second (each actor ready, then killed);
- named-actor lookups per second (``get_actor``);
- seconds from a gcs killed with SIGKILL to the first actor created after
  its supervisor started it again (durable backends only).

The Redis rows need ``redis-server`` on the PATH (started here on a free
loopback port); without it they are left out, saying so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import runtime
from runtime.testing import Cluster

from ._report import report


class _ProbeClass:
    def ping(self) -> int:
        return 1


_Probe = runtime.remote(num_cpus=0)(_ProbeClass)


def rows(
    runs: int, run_s: float, scale: float, want: Callable[[str], bool]
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for backend in ("memory", "sqlite", "redis"):
        create = f"actor creations with {backend} gcs storage (ours)"
        lookup = f"named actor lookups with {backend} gcs storage (ours)"
        restart = f"gcs kill to first new actor with {backend} storage, seconds (ours)"
        wanted = [n for n in (create, lookup, restart) if want(n)]
        if backend == "memory" and restart in wanted:
            wanted.remove(restart)  # a gcs on memory is not restarted
        if not wanted:
            continue
        with _storage(backend) as spec:
            if spec is None:
                print(f"{backend} gcs storage rows: left out, redis-server is not installed")
                continue
            cluster = Cluster(head_node_args={"num_cpus": 2}, system_config={"gcs_storage": spec})
            try:
                runtime.init(address=cluster.address)
                if create in wanted:
                    results.append(_creations(create, runs, run_s, scale))
                if lookup in wanted:
                    results.append(_lookups(lookup, runs, run_s, scale))
                if restart in wanted:
                    results.append(_restart(restart, cluster, max(1, runs // 2)))
            finally:
                runtime.shutdown()
                cluster.shutdown()
    return results


def _creations(name: str, runs: int, run_s: float, scale: float) -> dict[str, Any]:
    batch = max(2, int(10 * scale))
    rates = []
    for _ in range(runs):
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < run_s or not done:
            actors = [_Probe.remote() for _ in range(batch)]
            runtime.get([a.ping.remote() for a in actors])
            for actor in actors:
                runtime.kill(actor)
            done += batch
        rates.append(done / (time.perf_counter() - start))
    return report(name, rates)


def _lookups(name: str, runs: int, run_s: float, scale: float) -> dict[str, Any]:
    keep = _Probe.options(name="looked-up").remote()
    runtime.get(keep.ping.remote())
    batch = max(10, int(100 * scale))
    rates = []
    for _ in range(runs):
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < run_s or not done:
            for _ in range(batch):
                runtime.get_actor("looked-up")
            done += batch
        rates.append(done / (time.perf_counter() - start))
    runtime.kill(keep)
    return report(name, rates)


def _restart(name: str, cluster: Cluster, runs: int) -> dict[str, Any]:
    assert cluster.head is not None
    pids = os.path.join(cluster.head.session.path, "pids")
    seconds = []
    for _ in range(runs):
        with open(pids) as f:
            gcs = [int(line.split()[0]) for line in f if line.split()[1:] == ["gcs"]][-1]
        start = time.perf_counter()
        os.kill(gcs, signal.SIGKILL)
        actor = _Probe.remote()
        runtime.get(actor.ping.remote(), timeout=120)
        seconds.append(time.perf_counter() - start)
        runtime.kill(actor)
    mean = sum(seconds) / len(seconds)
    print(f"{name} {mean:.3f}", flush=True)
    return {"name": name, "mean": mean, "std": 0.0}


@contextlib.contextmanager
def _storage(backend: str) -> Iterator[str | None]:
    if backend == "memory":
        yield "memory"
        return
    with tempfile.TemporaryDirectory(prefix="rt-bench-gcs-") as folder:
        if backend == "sqlite":
            yield f"sqlite://{folder}/gcs.sqlite"
            return
        binary = shutil.which("redis-server")
        if binary is None:
            yield None
            return
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", folder],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for_port(port)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.kill()
            server.wait()


def _wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.02)
    raise TimeoutError(f"redis-server did not listen on port {port}")
