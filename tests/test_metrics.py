"""Prometheus metrics on real clusters: every endpoint found through the service
discovery file and parsed with prometheus_client's parser; user metrics from
a driver, a task and an actor; the token required; bad input refused."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from conftest import assert_no_orphans, cluster_of, wait_until
from prometheus_client.parser import text_string_to_metric_families

import runtime
from runtime._private import auth
from runtime.util.metrics import Counter, Gauge, Histogram

pytestmark = pytest.mark.timeout(120)

FAST = {"metrics_report_interval_s": 0.1, "task_events_report_interval_s": 0.05}


def _targets(session_dir: str) -> list[str]:
    path = os.path.join(session_dir, "prom_metrics_service_discovery.json")
    try:
        with open(path) as f:
            (group,) = json.load(f)
    except (OSError, ValueError):
        return []
    assert group["labels"] == {"job": "runtime"}
    return list(group["targets"])


def _scrape(target: str) -> dict[str, list[Any]]:
    """Samples by name, from one endpoint, parsed by Prometheus's parser."""
    request = urllib.request.Request(
        f"http://{target}/metrics", headers={"Authorization": f"Bearer {auth.token()}"}
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        text = reply.read().decode()
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def _value(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples.get(name, [])
        if all(s.labels.get(k) == v for k, v in labels.items())
    )


@runtime.remote
def step(i: int) -> int:
    Counter("steps", "Steps taken", tag_keys=("kind",)).inc(tags={"kind": "task"})
    return i


@runtime.remote
class Thermometer:
    def __init__(self) -> None:
        self.gauge = Gauge("temperature", "Degrees", tag_keys=("room",))
        self.latency = Histogram("read_seconds", "Reads", boundaries=[0.01, 0.1, 1.0])

    def read(self, value: float) -> None:
        self.gauge.set(value, tags={"room": "lab"})
        self.latency.observe(value / 100)


@pytest.fixture
def two_nodes() -> Iterator[Any]:
    with cluster_of(head_node_args={"num_cpus": 1}, system_config=FAST) as cluster:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        runtime.init(address=cluster.address)
        yield cluster


def test_every_endpoint_is_listed_and_parses(two_nodes: Any) -> None:
    session = two_nodes.head.session.path
    wait_until(lambda: len(_targets(session)) == 3, 20, "the gcs and two raylets listed")
    runtime.get([step.remote(i) for i in range(4)])
    thermometer = Thermometer.remote()
    runtime.get([thermometer.read.remote(21.5), thermometer.read.remote(23.0)])
    ref = runtime.put(np.zeros(1024 * 1024, dtype=np.uint8))  # in a store

    scrapes = {t: _scrape(t) for t in _targets(session)}
    (gcs,) = [s for s in scrapes.values() if "ray_cluster_active_nodes" in s]
    raylets = [s for s in scrapes.values() if "ray_object_store_memory" in s]
    assert len(raylets) == 2

    def finished_steps() -> float:
        return _value(_scrape(_gcs_target(session)), "ray_tasks", Name="step", State="FINISHED")

    wait_until(lambda: finished_steps() == 4, 20, "four finished steps in ray_tasks")
    assert _value(gcs, "ray_actors", Name="Thermometer", State="ALIVE") == 1
    assert _value(gcs, "ray_cluster_active_nodes") == 2
    assert _value(gcs, "ray_grpc_server_req_process_time_ms_count", Method="/rt.Gcs/AddJob") >= 1

    def user_metrics() -> dict[str, list[Any]]:
        merged: dict[str, list[Any]] = {}
        for target in _targets(session):
            for name, samples in _scrape(target).items():
                merged.setdefault(name, []).extend(samples)
        return merged

    wait_until(lambda: _value(user_metrics(), "ray_steps_total", kind="task") == 4, 20, "steps")
    merged = user_metrics()
    assert _value(merged, "ray_temperature", room="lab") == 23.0
    assert _value(merged, "ray_read_seconds_count") == 2
    assert _value(merged, "ray_read_seconds_bucket", le="0.1") == 0
    assert _value(merged, "ray_read_seconds_bucket", le="1.0") == 2
    assert _value(merged, "ray_object_store_memory", Location="MMAP_SHM") >= 1024 * 1024
    assert _value(merged, "ray_resources", Name="CPU") == 2  # used + available, 2 nodes
    assert _value(merged, "ray_workers") >= 1
    assert _value(merged, "ray_internal_num_processes_started_total") >= 1
    for samples in raylets:
        assert all(s.labels["Component"] == "raylet" for s in samples["ray_workers"])
    del ref


def _gcs_target(session: str) -> str:
    # (By a family the gcs always has samples of: ray_tasks has none until the
    # first task events arrive.)
    for target in _targets(session):
        if "ray_cluster_active_nodes" in _scrape(target):
            return target
    raise AssertionError("no endpoint serves ray_cluster_active_nodes")


def test_spilled_and_restored_bytes_and_the_token() -> None:
    ctx = runtime.init(num_cpus=1, object_store_memory=60 * 1024 * 1024, _system_config=FAST)
    try:
        assert ctx.session_dir is not None
        wait_until(lambda: len(_targets(ctx.session_dir)) == 2, 20, "two endpoints")
        refs = [runtime.put(np.full(20 * 1024 * 1024, i, dtype=np.uint8)) for i in range(5)]
        assert int(runtime.get(refs[0])[0]) == 0  # read back: restored from disk
        raylet = next(t for t in _targets(ctx.session_dir) if "ray_workers" in _scrape(t))
        samples = _scrape(raylet)
        assert _value(samples, "ray_spill_manager_spilled_bytes_total") >= 20 * 1024 * 1024
        assert _value(samples, "ray_spill_manager_restored_bytes_total") >= 20 * 1024 * 1024

        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://{raylet}/metrics", timeout=10)
        assert refused.value.code == 401
        del refs
    finally:
        runtime.shutdown()
        assert_no_orphans(ctx.session_dir)


def test_user_metrics_refuse_bad_input(cluster: Any) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        Counter("")
    with pytest.raises(ValueError, match="not valid"):
        Counter("has space")
    with pytest.raises(TypeError, match="tuple"):
        Counter("c", tag_keys=["a"])  # type: ignore[arg-type]
    counter = Counter("c", tag_keys=("a",))
    with pytest.raises(ValueError, match="> 0"):
        counter.inc(0, tags={"a": "x"})
    with pytest.raises(ValueError, match="missing value"):
        counter.inc()
    with pytest.raises(ValueError, match="unrecognized tag keys"):
        counter.inc(tags={"a": "x", "b": "y"})
    with pytest.raises(TypeError, match="str"):
        counter.inc(tags={"a": 1})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="number"):
        Gauge("g").set("hot")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        Gauge("g").set(float("nan"))
    with pytest.raises(ValueError, match="boundaries"):
        Histogram("h")
    with pytest.raises(ValueError, match="> 0"):
        Histogram("h", boundaries=[0, 1])
    with pytest.raises(ValueError, match="increasing"):
        Histogram("h", boundaries=[2, 1])
    counter.set_default_tags({"a": "default"}).inc(3)
    assert counter.info["default_tags"] == {"a": "default"}
    with pytest.raises(ValueError, match="already defined"):
        Gauge("c", tag_keys=("a",)).set(1, tags={"a": "x"})
