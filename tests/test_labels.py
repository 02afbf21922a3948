"""Node labels and label selectors: which node a task or an actor may run on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import cluster_of

import runtime
from runtime._private import labels
from runtime.testing import Cluster
from runtime.util import state
from runtime.util.placement_group import placement_group, placement_group_table
from runtime.util.scheduling_strategies import (
    DoesNotExist,
    Exists,
    In,
    NodeLabelSchedulingStrategy,
    NotIn,
    PlacementGroupSchedulingStrategy,
)

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({"zone": "a"}, True),
        ({"zone": "b"}, False),
        ({"zone": "!b"}, True),
        ({"zone": "!a"}, False),
        ({"zone": "in(b, a)"}, True),
        ({"zone": "in(b,c)"}, False),
        ({"zone": "!in(b, c)"}, True),
        ({"zone": "!in(a)"}, False),
        ({"gpu": "h100"}, False),  # absent: no value equals it
        ({"gpu": "!h100"}, True),  # absent: not that value
        ({"zone": "a", "kind": "spot"}, True),
        ({"zone": "a", "kind": "!spot"}, False),
        ({"kind": "exists()"}, True),
        ({"gpu": "exists()"}, False),
        ({"gpu": "!exists()"}, True),
        ({"kind": "!exists()"}, False),
    ],
)
def test_a_selector_matches_as_in_ray(selector: dict[str, str], expected: bool) -> None:
    assert labels.matches({"zone": "a", "kind": "spot"}, selector) is expected


def test_labels_and_selectors_are_checked() -> None:
    assert labels.parse_labels(" zone=a, kind=spot ,") == {"zone": "a", "kind": "spot"}
    assert labels.parse_labels('{"zone": "a"}') == {"zone": "a"}
    with pytest.raises(ValueError, match="not a JSON object"):
        labels.parse_labels('{"zone": ')
    assert labels.defaults(b"\1" * 16, {"CPU": 1, "accelerator_type:A100": 1}) == {
        "ray.io/node-id": "01" * 16,
        "ray.io/accelerator-type": "A100",
    }
    no_label = labels.defaults(b"\1" * 16, {"accelerator_type:NVIDIA A100": 1})
    assert no_label["ray.io/accelerator-type"] == ""
    with pytest.raises(ValueError, match="not key=value"):
        labels.parse_labels("zone")
    with pytest.raises(ValueError, match="reserved"):
        labels.check_node_labels({"ray.io/zone": "a"})
    with pytest.raises(ValueError, match="label key '-x'"):
        labels.check_node_labels({"-x": "a"})
    with pytest.raises(TypeError, match="must be a str"):
        labels.check_node_labels({"zone": 1})
    for bad in ("in()", "in(a,", "!!a", "a b", "in(a, b!c)"):
        with pytest.raises(ValueError, match="is not a condition"):
            labels.check_selector({"zone": bad})
    with pytest.raises(TypeError, match="dict"):
        labels.check_selector(["zone"])
    assert labels.wire_error({"zone": "in(a"}, selector=True)
    assert not labels.wire_error({"ray.io/node-id": "ab12"}, selector=False)


def test_a_labels_file_is_read_and_checked(tmp_path: Any) -> None:
    good = tmp_path / "labels.yaml"
    good.write_text("zone: a\nkind: spot\n")
    assert labels.read_labels_file(str(good)) == {"zone": "a", "kind": "spot"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("zone: [a, b]\n")
    with pytest.raises(TypeError, match="must be a str"):
        labels.read_labels_file(str(bad))
    assert labels.read_labels_file("") == {}


def test_init_refuses_bad_labels_before_starting_anything() -> None:
    with pytest.raises(ValueError, match="reserved"):
        runtime.init(num_cpus=1, labels={"ray.io/node-id": "mine"})
    assert not runtime.is_initialized()


@pytest.fixture
def zones() -> Iterator[tuple[Cluster, str, str]]:
    """A head in zone a, a node in zone b with an accelerator label; a driver."""
    with cluster_of(head_node_args={"num_cpus": 1, "labels": {"zone": "a"}}) as cluster:
        node = cluster.add_node(num_cpus=1, labels={"zone": "b", "accel": "h100"})
        cluster.wait_for_nodes()
        runtime.init(address=cluster.address)
        assert cluster.head_node is not None
        yield cluster, cluster.head_node.node_id, node.node_id


@runtime.remote(num_cpus=0)
def where() -> str:
    return runtime.get_runtime_context().get_node_id()


@runtime.remote(num_cpus=0)
class Placed:
    def where(self) -> tuple[str, dict[str, str]]:
        context = runtime.get_runtime_context()
        return context.get_node_id(), context.get_node_labels()


def test_nodes_report_their_labels(zones: tuple[Cluster, str, str]) -> None:
    _, head, other = zones
    found = {n["NodeID"]: n["Labels"] for n in runtime.nodes()}
    assert found[head] == {"zone": "a", "ray.io/node-id": head, "ray.io/accelerator-type": ""}
    assert found[other] == {
        "zone": "b",
        "accel": "h100",
        "ray.io/node-id": other,
        "ray.io/accelerator-type": "",
    }
    assert runtime.get_runtime_context().get_node_labels() == found[head]
    rows = {row["node_id"]: row["labels"] for row in state.list_nodes()}
    assert rows == found


def test_tasks_run_where_their_selector_says(zones: tuple[Cluster, str, str]) -> None:
    _, head, other = zones
    cases = [
        ({"zone": "b"}, other),
        ({"zone": "!b"}, head),
        ({"zone": "in(c, b)"}, other),
        ({"accel": "!in(h100)"}, head),
        ({"ray.io/node-id": other}, other),
        ({"ray.io/node-id": head}, head),
    ]
    for selector, node in cases:
        ran = runtime.get([where.options(label_selector=selector).remote() for _ in range(4)])
        assert set(ran) == {node}, selector


def test_an_actor_is_placed_where_its_selector_says(zones: tuple[Cluster, str, str]) -> None:
    _, _, other = zones
    actor = Placed.options(label_selector={"accel": "h100"}).remote()
    node, node_labels = runtime.get(actor.where.remote())
    assert node == other and node_labels["zone"] == "b"


@runtime.remote(num_cpus=0)
class AsyncPlaced:
    async def labels(self) -> dict[str, str]:
        return runtime.get_runtime_context().get_node_labels()  # (on the loop: no lookup)


def test_an_async_actor_reads_its_node_labels_on_its_loop(
    zones: tuple[Cluster, str, str],
) -> None:
    _, _, other = zones
    actor = AsyncPlaced.options(label_selector={"zone": "b"}).remote()
    assert runtime.get(actor.labels.remote())["ray.io/node-id"] == other


def test_a_task_no_node_matches_waits_for_one_that_does(
    zones: tuple[Cluster, str, str],
) -> None:
    cluster, _, _ = zones
    pending = where.options(label_selector={"zone": "c"}).remote()
    ready, _ = runtime.wait([pending], timeout=1.0)
    assert not ready  # no node of zone c: it waits, as in Ray
    joined = cluster.add_node(num_cpus=1, labels={"zone": "c"})
    assert runtime.get(pending, timeout=60) == joined.node_id


def test_a_fallback_strategy_is_used_when_no_node_matches(
    zones: tuple[Cluster, str, str],
) -> None:
    # Ray's fallback_strategy: the first selector some node able to hold the
    # request matches; the selector itself when one does.
    _, head, other = zones
    prefer_c = {"label_selector": {"zone": "c"}}
    then_b = [{"label_selector": {"zone": "x"}}, {"label_selector": {"zone": "b"}}]
    runs = where.options(**prefer_c, fallback_strategy=then_b)
    assert set(runtime.get([runs.remote() for _ in range(4)])) == {other}
    own = where.options(label_selector={"zone": "a"}, fallback_strategy=then_b)
    assert runtime.get(own.remote()) == head
    # An empty selector: anywhere (Ray's way to make a selector a preference).
    anywhere = where.options(**prefer_c, fallback_strategy=[{"label_selector": {}}])
    assert runtime.get(anywhere.remote()) in (head, other)
    actor = Placed.options(**prefer_c, fallback_strategy=then_b).remote()
    assert runtime.get(actor.where.remote())[0] == other
    with pytest.raises(ValueError, match="only 'label_selector'"):
        where.options(fallback_strategy=[{"num_cpus": 1}])
    with pytest.raises(TypeError, match="list"):
        where.options(fallback_strategy={"label_selector": {}})
    with pytest.raises(ValueError, match="is not a condition"):
        Placed.options(fallback_strategy=[{"label_selector": {"zone": "in()"}}])


def test_ray_s_node_label_strategy(zones: tuple[Cluster, str, str]) -> None:
    """Ray's NodeLabelSchedulingStrategy: hard conditions must hold; soft ones
    are preferred when a node meeting them can hold the request."""
    _, head, other = zones
    cases = [
        (NodeLabelSchedulingStrategy({"zone": In("b", "c")}), {other}),
        (NodeLabelSchedulingStrategy({"zone": NotIn("b")}), {head}),
        (NodeLabelSchedulingStrategy({"accel": Exists()}), {other}),
        (NodeLabelSchedulingStrategy({"accel": DoesNotExist()}), {head}),
        (NodeLabelSchedulingStrategy({}, soft={"accel": Exists()}), {other}),
        (NodeLabelSchedulingStrategy({"zone": In("a")}, soft={"accel": Exists()}), {head}),
        (NodeLabelSchedulingStrategy({}, soft={"zone": In("c")}), {head, other}),
    ]
    for strategy, nodes in cases:
        ran = runtime.get([where.options(scheduling_strategy=strategy).remote() for _ in range(4)])
        assert set(ran) <= nodes, strategy
    actor = Placed.options(scheduling_strategy=cases[2][0]).remote()
    assert runtime.get(actor.where.remote())[0] == other
    with pytest.raises(ValueError, match="cannot both be empty"):
        NodeLabelSchedulingStrategy({})
    with pytest.raises(ValueError, match="must be In"):
        NodeLabelSchedulingStrategy({"zone": "a"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="at least one value"):
        In()
    with pytest.raises(ValueError, match="must be a map"):
        NodeLabelSchedulingStrategy([("zone", In("a"))])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="label key"):
        NodeLabelSchedulingStrategy({"-bad": Exists()})
    with pytest.raises(ValueError, match="not both"):
        where.options(scheduling_strategy=cases[0][0], label_selector={"zone": "a"}).remote()


def test_bad_selectors_fail_at_the_call(zones: tuple[Cluster, str, str]) -> None:
    with pytest.raises(ValueError, match="is not a condition"):
        where.options(label_selector={"zone": "in()"})
    with pytest.raises(TypeError, match="dict"):
        Placed.options(label_selector="zone=a")
    group = placement_group([{"CPU": 1}])
    strategy = PlacementGroupSchedulingStrategy(group)
    with pytest.raises(ValueError, match="do not combine with a placement group"):
        where.options(label_selector={"zone": "a"}, scheduling_strategy=strategy).remote()


def test_a_group_s_bundles_go_where_their_selectors_say(zones: tuple[Cluster, str, str]) -> None:
    _, head, other = zones
    group = placement_group(
        [{"CPU": 1}, {"CPU": 1}], strategy="SPREAD", bundle_label_selector=[{"zone": "b"}, {}]
    )
    assert group.wait(timeout_seconds=30)
    assert placement_group_table(group)["bundles_to_node_id"] == {0: other, 1: head}
    in_bundle = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0)
    assert runtime.get(where.options(scheduling_strategy=in_bundle).remote()) == other
    with pytest.raises(ValueError, match="one label selector per bundle"):
        placement_group([{"CPU": 1}], bundle_label_selector=[{}, {}])
    with pytest.raises(ValueError, match=r"bundle_label_selector\[0\]"):
        placement_group([{"CPU": 1}], bundle_label_selector=[{"zone": "in()"}])
