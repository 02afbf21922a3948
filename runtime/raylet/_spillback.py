"""Which queued lease requests should go to another node, and the replies that
send requests away (synchronous, no I/O)."""

from __future__ import annotations

from collections.abc import Iterable

from .._private import resources as res
from ..protocol.rt import LeaseReply, LeaseStatus, NodeAddress
from ._cluster_view import ClusterView, Decision, Placement
from ._scheduler import LeaseRequest


def redirects(
    queue: Iterable[LeaseRequest], available: res.Fixed, view: ClusterView
) -> list[tuple[LeaseRequest, Decision]]:
    """The queued requests another node should take now, with where: those
    that will not be granted here soon and that another node has room for (or,
    when no node here could ever fit them, that another node could fit)."""
    ahead = dict(available)  # what the requests before it leave
    moves: list[tuple[LeaseRequest, Decision]] = []
    for req in list(queue):
        if not req.infeasible and res.fits(ahead, req.resources):
            res.subtract(ahead, req.resources)
            continue  # granted here soon enough
        if req.spilled and not req.infeasible:
            continue  # another raylet chose this node for it
        decision = view.decide(
            req.resources, req.strategy, spilled=req.spilled, local_available=ahead
        )
        if decision.placement not in (Placement.SPILL, Placement.FAIL):
            continue
        node = decision.node
        if (
            node is not None
            and not req.infeasible
            and any(node.available.get(k, 0) < 0 for k in req.resources)
        ):
            # Waiting there would be no better than waiting here: stay.
            res.add(node.available, req.resources)
            continue
        moves.append((req, decision))
    return moves


def redirect_reply(decision: Decision) -> LeaseReply:
    """The reply for a request this node does not queue."""
    if decision.placement is Placement.FAIL:
        return LeaseReply(status=LeaseStatus.FAILED, error=decision.error)
    node = decision.node
    assert node is not None
    return LeaseReply(
        status=LeaseStatus.SPILLBACK,
        retry_at=NodeAddress(node_id=node.node_id, host=node.host, port=node.port),
    )


def cancelled_reply(group_removed: bool, env_error: str = "") -> LeaseReply:
    """The reply for a request withdrawn here (its job finished, its placement
    group was removed, or its runtime environment could not be set up)."""
    if env_error:
        return LeaseReply(status=LeaseStatus.FAILED, error=env_error, runtime_env_failed=True)
    if group_removed:
        return LeaseReply(
            status=LeaseStatus.FAILED,
            error="the placement group it was scheduled into was removed",
            placement_group_removed=True,
        )
    return LeaseReply(status=LeaseStatus.CANCELLED)
