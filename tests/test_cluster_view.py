"""The raylet's placement decisions, fed views of a cluster (no processes)."""

from __future__ import annotations

from runtime._private import resources as res
from runtime.protocol.rt import (
    LabelSelector,
    NodeInfo,
    ResourceView,
    SchedulingStrategy,
    StrategyKind,
)
from runtime.raylet._cluster_view import ClusterView, Placement

A, B, C = b"a" * 16, b"b" * 16, b"c" * 16


def node(node_id: bytes, cpus: float, **extra: float) -> NodeInfo:
    total = {"CPU": cpus, **extra}
    return NodeInfo(
        node_id=node_id,
        host="127.0.0.1",
        raylet_port=1000 + node_id[0],
        resources_total=total,
        resources_available=dict(total),
        alive=True,
    )


def view(*nodes: NodeInfo, local: bytes = A) -> ClusterView:
    v = ClusterView(local)
    for n in nodes:
        assert v.update_node(n)
    return v


def cpu(n: float, **extra: float) -> dict[str, int]:
    return res.to_fixed({"CPU": n, **extra})


def test_default_stays_local_while_it_fits() -> None:
    v = view(node(A, 2), node(B, 2))
    d = v.decide(cpu(1), None, spilled=False, local_available=cpu(2))
    assert d.placement is Placement.LOCAL


def test_default_spills_to_the_least_busy_node_with_room_and_debits_it() -> None:
    v = view(node(A, 1), node(B, 2), node(C, 4))
    v.update_resources(ResourceView(node_id=B, resources=res.encode_sets({"CPU": 1}, {})))
    first = v.decide(cpu(1), None, spilled=False, local_available=cpu(0))
    assert first.placement is Placement.SPILL and first.node is not None
    assert first.node.node_id == C
    # The view is debited at once: a burst spreads instead of piling up.
    seen = [v.decide(cpu(1), None, spilled=False, local_available=cpu(0)) for _ in range(4)]
    assert [d.node.node_id for d in seen if d.node] == [C, B, C, C]
    last = v.decide(cpu(1), None, spilled=False, local_available=cpu(0))
    assert last.placement is Placement.LOCAL  # nobody has room: wait here


def test_a_spilled_request_is_not_spilled_again_if_it_fits_here() -> None:
    v = view(node(A, 1), node(B, 2))
    d = v.decide(cpu(1), None, spilled=True, local_available=cpu(0))
    assert d.placement is Placement.LOCAL


def test_custom_resources_and_infeasible() -> None:
    v = view(node(A, 2), node(B, 2, gpu_like=1))
    d = v.decide(cpu(1, gpu_like=1), None, spilled=False, local_available=cpu(2))
    assert d.placement is Placement.SPILL and d.node is not None and d.node.node_id == B
    d = v.decide(cpu(1, other=1), None, spilled=False, local_available=cpu(2))
    assert d.placement is Placement.INFEASIBLE
    # A node that fits joins: the same request now goes there.
    assert v.update_node(node(C, 1, other=1))
    d = v.decide(cpu(1, other=1), None, spilled=False, local_available=cpu(2))
    assert d.placement is Placement.SPILL and d.node is not None and d.node.node_id == C


def test_spread_goes_round_robin() -> None:
    v = view(node(A, 4), node(B, 4), node(C, 4))
    spread = SchedulingStrategy(kind=StrategyKind.SPREAD)
    picks = []
    for _ in range(6):
        d = v.decide(cpu(1), spread, spilled=False, local_available=cpu(4))
        picks.append(A if d.placement is Placement.LOCAL else d.node.node_id)  # type: ignore[union-attr]
    assert picks == [A, B, C, A, B, C]


def test_node_affinity_hard_and_soft() -> None:
    v = view(node(A, 2), node(B, 2))
    to_b = SchedulingStrategy(kind=StrategyKind.NODE_AFFINITY, node_id=B)
    d = v.decide(cpu(1), to_b, spilled=False, local_available=cpu(2))
    assert d.placement is Placement.SPILL and d.node is not None and d.node.node_id == B
    dead_b = node(B, 2)
    dead_b.alive = False
    assert v.update_node(dead_b)
    d = v.decide(cpu(1), to_b, spilled=False, local_available=cpu(2))
    assert d.placement is Placement.FAIL and "dead" in d.error
    soft = SchedulingStrategy(kind=StrategyKind.NODE_AFFINITY, node_id=B, soft=True)
    assert v.decide(cpu(1), soft, spilled=False, local_available=cpu(2)).placement is (
        Placement.LOCAL
    )
    too_big = SchedulingStrategy(kind=StrategyKind.NODE_AFFINITY, node_id=A)
    d = v.decide(cpu(8), too_big, spilled=False, local_available=cpu(2))
    assert d.placement is Placement.FAIL and "resources" in d.error


def test_a_label_selector_narrows_every_kind_to_matching_nodes() -> None:
    v = ClusterView(A, {"zone": "a"})
    in_b = SchedulingStrategy(kind=StrategyKind.DEFAULT, label_selector={"zone": "b"})
    # Before the gcs has told the view of this node, its own labels decide.
    assert v.local_matches(cpu(1), SchedulingStrategy(label_selector={"zone": "in(a, c)"}))
    assert not v.local_matches(cpu(1), in_b)
    for n, zone in ((node(A, 2), "a"), (node(B, 2), "b"), (node(C, 2), "c")):
        n.labels = {"zone": zone}
        v.update_node(n)
    d = v.decide(cpu(1), in_b, spilled=False, local_available=cpu(2))
    assert d.placement is Placement.SPILL and d.node is not None and d.node.node_id == B
    spread = SchedulingStrategy(kind=StrategyKind.SPREAD, label_selector={"zone": "!b"})
    went = set()
    for _ in range(4):
        d = v.decide(cpu(0.1), spread, spilled=False, local_available=cpu(2))
        went.add(A if d.placement is Placement.LOCAL else d.node.node_id if d.node else None)
    assert went == {A, C}
    pinned = SchedulingStrategy(
        kind=StrategyKind.NODE_AFFINITY, node_id=B, label_selector={"zone": "a"}
    )
    failed = v.decide(cpu(1), pinned, spilled=False, local_available=cpu(2))
    assert failed.placement is Placement.FAIL and "label_selector" in failed.error
    nowhere = SchedulingStrategy(label_selector={"zone": "d"})
    assert v.decide(cpu(1), nowhere, spilled=False, local_available=cpu(2)).placement is (
        Placement.INFEASIBLE
    )


def test_a_fallback_selector_is_used_only_when_no_able_node_matches() -> None:
    v = ClusterView(A, {"zone": "a"})
    for n, zone in ((node(A, 2), "a"), (node(B, 2), "b"), (node(C, 8), "c")):
        n.labels = {"zone": zone}
        v.update_node(n)
    fallbacks = [LabelSelector(conditions={"zone": "x"}), LabelSelector(conditions={"zone": "b"})]
    strategy = SchedulingStrategy(label_selector={"zone": "d"}, fallback=fallbacks)
    d = v.decide(cpu(1), strategy, spilled=False, local_available=cpu(2))
    assert d.placement is Placement.SPILL and d.node is not None and d.node.node_id == B
    assert not v.local_matches(cpu(1), strategy)
    # Its own selector while a node that could hold it matches; a fallback
    # only counts nodes big enough (zone b has 2 CPUs, not 4).
    own = SchedulingStrategy(label_selector={"zone": "c"}, fallback=fallbacks)
    d = v.decide(cpu(4), own, spilled=False, local_available=cpu(2))
    assert d.placement is Placement.SPILL and d.node is not None and d.node.node_id == C
    big = SchedulingStrategy(label_selector={"zone": "a"}, fallback=fallbacks)
    assert v.decide(cpu(4), big, spilled=False, local_available=cpu(2)).placement is (
        Placement.INFEASIBLE  # nothing able matches: it waits, by its own selector
    )
