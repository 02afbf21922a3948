"""Placement groups' synchronous parts: the gcs's bundle policy, the raylet's
bundle accounting, and the names that turn a task's resources into a group's."""

from __future__ import annotations

from runtime._private import placement
from runtime._private.resources import to_fixed
from runtime.gcs._bundle_policy import NodeRoom, place
from runtime.protocol.rt import PlacementStrategy
from runtime.raylet._scheduler import (
    BundleState,
    Cancel,
    Grant,
    KillWorker,
    LeaseRequest,
    LeaseScheduler,
)

PG = "ab" * 16
A, B, C = b"a" * 16, b"b" * 16, b"c" * 16


def cpus(n: float) -> dict[str, int]:
    return to_fixed({"CPU": n})


def rooms(*free: float, total: float = 4) -> list[NodeRoom]:
    return [NodeRoom(n, cpus(f), cpus(total)) for n, f in zip((A, B, C), free, strict=False)]


def bundles(*sizes: float) -> dict[int, dict[str, int]]:
    return {i: cpus(s) for i, s in enumerate(sizes)}


# -- the policy --------------------------------------------------------------------------


def zoned(*free: float) -> list[NodeRoom]:
    """Nodes A, B, C in zones a, b, c."""
    out = rooms(*free)
    for node, zone in zip(out, "abc", strict=False):
        node.labels = {"zone": zone}
    return out


def test_bundles_go_only_to_nodes_their_selectors_match() -> None:
    out = place(
        bundles(1, 1, 1),
        {},
        PlacementStrategy.PACK,
        zoned(4, 4, 4),
        {0: {"zone": "c"}, 1: {"zone": "in(b, c)"}},
    )
    assert out.placed and out.assignment == {0: C, 1: C, 2: C}  # packed where 0 must go
    out = place(bundles(1, 1), {}, PlacementStrategy.SPREAD, zoned(4, 4, 4), {1: {"zone": "!a"}})
    assert out.placed and out.assignment[1] != A and out.assignment[0] != out.assignment[1]


def test_a_bundle_no_node_matches_is_infeasible_and_says_which() -> None:
    out = place(bundles(1, 1), {}, PlacementStrategy.PACK, zoned(4, 4), {1: {"zone": "c"}})
    assert out.infeasible and "bundle 1's label selector" in out.reason
    # One node for all, but the selectors name two: STRICT_PACK cannot.
    out = place(
        bundles(1, 1),
        {},
        PlacementStrategy.STRICT_PACK,
        zoned(4, 4),
        {0: {"zone": "a"}, 1: {"zone": "b"}},
    )
    assert out.infeasible and "STRICT_PACK" in out.reason


def test_pack_puts_everything_on_one_node_when_one_fits() -> None:
    out = place(bundles(1, 1), {}, PlacementStrategy.PACK, rooms(4, 2, 3))
    assert out.placed and len(set(out.assignment.values())) == 1
    # The fullest node that fits, so the emptier ones stay free for others.
    assert set(out.assignment.values()) == {B}


def test_pack_spills_over_when_no_node_holds_all() -> None:
    out = place(bundles(2, 2, 1), {}, PlacementStrategy.PACK, rooms(2, 3, 0))
    assert out.placed and len(out.assignment) == 3


def test_strict_pack_waits_rather_than_splitting() -> None:
    out = place(bundles(2, 2), {}, PlacementStrategy.STRICT_PACK, rooms(2, 3))
    assert not out.placed and not out.infeasible  # a 4-CPU node could once it frees up
    out = place(bundles(3, 3), {}, PlacementStrategy.STRICT_PACK, rooms(4, 4))
    assert not out.placed and out.infeasible and "STRICT_PACK" in out.reason


def test_spread_uses_distinct_nodes_and_shares_only_when_it_must() -> None:
    out = place(bundles(1, 1, 1), {}, PlacementStrategy.SPREAD, rooms(4, 4, 4))
    assert sorted(out.assignment.values()) == [A, B, C]
    out = place(bundles(1, 1, 1), {}, PlacementStrategy.SPREAD, rooms(4, 4))
    assert out.placed and len(set(out.assignment.values())) == 2


def test_strict_spread_needs_a_node_per_bundle() -> None:
    out = place(bundles(1, 1, 1), {}, PlacementStrategy.STRICT_SPREAD, rooms(4, 4))
    assert not out.placed and out.infeasible and "3 nodes" in out.reason
    out = place(bundles(1, 1, 1), {}, PlacementStrategy.STRICT_SPREAD, rooms(4, 4, 1))
    assert sorted(out.assignment.values()) == [A, B, C]


def test_rescheduling_keeps_the_strategy_with_the_bundles_still_placed() -> None:
    # STRICT_SPREAD lost bundle 1: it may not go where bundle 0 or 2 is.
    out = place(bundles(1, 1, 1), {0: A, 2: C}, PlacementStrategy.STRICT_SPREAD, rooms(4, 4, 4))
    assert out.assignment == {1: B}
    # STRICT_PACK lost one bundle: it goes back beside the others, or waits.
    out = place(bundles(1, 1), {0: B}, PlacementStrategy.STRICT_PACK, rooms(4, 4))
    assert out.assignment == {1: B}
    out = place(bundles(1, 1), {0: B}, PlacementStrategy.STRICT_PACK, rooms(4, 0))
    assert not out.placed


# -- the names ------------------------------------------------------------------------------


def test_a_task_in_a_group_asks_for_the_groups_names() -> None:
    asked = placement.task_resources({"CPU": 1}, PG, 0)
    assert asked == {
        f"CPU_group_{PG}": 1,
        f"CPU_group_0_{PG}": 1,
        f"bundle_group_{PG}": placement.TASK_MARKER,
        f"bundle_group_0_{PG}": placement.TASK_MARKER,
    }
    assert placement.group_of(asked) == (PG, 0)
    assert placement.group_of(placement.task_resources({}, PG, -1)) == (PG, -1)
    assert placement.base_amounts(asked) == {"CPU": 1}
    assert placement.groups_in(asked) == {PG}
    assert not placement.is_group_resource("CPU") and placement.parse("x_group_1") is None


# -- the raylet's accounting -------------------------------------------------------------


def scheduler(n: float = 4) -> LeaseScheduler:
    s = LeaseScheduler({"CPU": n}, soft_worker_limit=int(n), max_starting=8, idle_timeout_s=1.0)
    s.prestart(1, int(n))
    for w in list(s.workers.values()):
        s.worker_registered(w.worker_id, 1, 1, 0.0)
    return s


def grants(actions: list) -> list[Grant]:
    return [a for a in actions if isinstance(a, Grant)]


def test_prepare_is_all_or_nothing_and_commit_adds_the_groups_resources() -> None:
    s = scheduler(4)
    assert "not enough" in s.prepare_bundles(PG, [(0, cpus(3)), (1, cpus(2))])
    assert s.available == cpus(4) and not s.bundles
    assert s.prepare_bundles(PG, [(0, cpus(2)), (1, cpus(1))]) == ""
    assert s.available == cpus(1)
    assert s.prepare_bundles(PG, [(0, cpus(2))]) == ""  # a retry: kept once
    s.validate()
    s.commit_bundles(PG, [0, 1])
    assert all(b.state is BundleState.COMMITTED for b in s.bundles.values())
    assert s.total[f"CPU_group_{PG}"] == cpus(3)["CPU"]
    assert s.total[f"CPU_group_1_{PG}"] == cpus(1)["CPU"]
    s.validate()


def test_reserved_resources_serve_only_the_group() -> None:
    s = scheduler(2)
    s.prepare_bundles(PG, [(0, cpus(2))])
    s.commit_bundles(PG, [0])
    outside = grants(s.request(LeaseRequest(1, 1, cpus(1))))
    assert not outside and len(s.queue) == 1  # the node's own CPUs are all reserved
    inside = grants(
        s.request(LeaseRequest(2, 1, to_fixed(placement.task_resources({"CPU": 1}, PG, 0))))
    )
    assert [g.request_id for g in inside] == [2]
    s.validate()


def test_removing_a_group_kills_its_leases_fails_its_requests_and_frees_it() -> None:
    s = scheduler(2)
    s.prepare_bundles(PG, [(0, cpus(1))])
    s.commit_bundles(PG, [0])
    in_group = to_fixed(placement.task_resources({"CPU": 1}, PG, 0))
    granted = grants(s.request(LeaseRequest(1, 1, in_group)))
    assert granted
    s.request(LeaseRequest(2, 1, in_group))  # waits behind the first
    actions = s.group_removed(PG)
    assert Cancel(2, group_removed=True) in actions
    assert KillWorker(granted[0].worker.worker_id) in actions
    assert s.available == cpus(2) and s.total == cpus(2) and not s.bundles
    assert s.request(LeaseRequest(3, 1, in_group)) == [Cancel(3, group_removed=True)]
    assert s.prepare_bundles(PG, [(0, cpus(1))]) != ""  # removed for good
    s.validate()


def test_a_rollback_returns_prepared_bundles() -> None:
    s = scheduler(2)
    s.prepare_bundles(PG, [(0, cpus(1)), (1, cpus(1))])
    s.return_bundles(PG, [1])
    assert s.available == cpus(1) and list(s.bundles) == [(PG, 0)]
    s.validate()


def test_a_blocked_worker_in_a_group_lends_its_group_cpu() -> None:
    s = scheduler(1)
    s.prepare_bundles(PG, [(0, cpus(1))])
    s.commit_bundles(PG, [0])
    in_group = to_fixed(placement.task_resources({"CPU": 1}, PG, -1))
    first = grants(s.request(LeaseRequest(1, 1, in_group)))[0]
    assert not grants(s.request(LeaseRequest(2, 1, in_group)))
    actions = s.set_blocked(first.worker.worker_id, True)
    started = [a for a in actions if type(a).__name__ == "StartWorker"]
    assert started  # the lent CPU lets request 2 go: it needs a worker
    later = s.worker_registered(started[0].worker_id, 1, 1, 0.0)
    assert [g.request_id for g in grants(later)] == [2]
    s.validate()
