"""The raylet's lease scheduler: a synchronous state machine.

It owns the node's resource accounting, its workers' states and the queue of
lease requests. Every event (a request, a worker registering, a lease
returned, a worker dying or blocking) is a method call that changes the
state and returns the *actions* the caller must carry out: grant a lease,
start a worker, kill a worker, cancel a request. It never does I/O, so it is
tested by feeding events.

Invariants (checked by :meth:`validate`):
- ``available == total - sum(lease.resources for held leases) + released
  - sum(bundle.resources for prepared and committed bundles)``, where a
  blocked lease has released its CPU, and ``total`` includes the group
  resources of committed bundles (see ``_private.placement``);
- a worker is LEASED iff exactly one lease names it;
- every pending request is granted at most once (it leaves the queue when
  granted or cancelled);
- each GPU id's free units plus what the leases hold on it equal its
  capacity (see ``_gpus``);
- a worker only ever runs leases with the same GPU ids (``devices``): the
  libraries that read ``CUDA_VISIBLE_DEVICES`` read it once per process;
- a worker only ever runs leases of the runtime environment it was started
  with (``env``): its variables, folders and packages are set at start.
"""

from __future__ import annotations

import enum
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._private import placement
from .._private import resources as res
from .._private.ids import worker_id
from .._private.resources import Fixed
from . import _gpus as gpus

#: Removed placement groups a raylet remembers (a request for one fails at once).
_REMOVED_KEPT = 100_000


class WorkerState(enum.Enum):
    STARTING = "STARTING"  # process started, not registered yet
    IDLE = "IDLE"  # registered, holds no lease
    LEASED = "LEASED"  # holds exactly one lease
    EXITING = "EXITING"  # idle too long; asked whether it may stop
    RETIRING = "RETIRING"  # ran a function's max_calls: never leased again, exits itself
    DEAD = "DEAD"


@dataclass(eq=False)
class Worker:
    worker_id: bytes
    job_id: int
    state: WorkerState = WorkerState.STARTING
    port: int = 0
    push_port: int = 0  # its task channel
    pid: int = 0
    lease_id: bytes | None = None
    idle_since: float = 0.0
    # Hosts a detached actor: survives the end of its job.
    detached: bool = False
    # The GPU ids its leases get, fixed by its first lease (None: none yet).
    devices: tuple[int, ...] | None = None
    env: str = ""  # its runtime environment (canonical JSON; "" for none)


@dataclass(eq=False)
class Lease:
    lease_id: bytes
    worker_id: bytes
    job_id: int
    resources: Fixed
    # CPU units given back while the worker is blocked in ``get``.
    released: Fixed = field(default_factory=dict)
    owner: bytes = b""  # the worker that requested it
    gpus: gpus.Assignment = field(default_factory=dict)


class BundleState(enum.Enum):
    PREPARED = "PREPARED"  # its resources are set aside; no one may use them yet
    COMMITTED = "COMMITTED"  # its group resources exist on this node


@dataclass(eq=False)
class Bundle:
    """One bundle of a placement group reserved on this node."""

    pg: str  # the group's id in hex
    index: int
    resources: Fixed  # what it takes of the node's own resources
    state: BundleState = BundleState.PREPARED

    def group_resources(self) -> Fixed:
        return res.to_fixed(
            placement.bundle_resources(self.pg, self.index, res.to_float(self.resources))
        )


@dataclass(eq=False)
class LeaseRequest:
    request_id: int
    job_id: int
    resources: Fixed
    task_name: str = ""
    infeasible: bool = False
    detached: bool = False
    owner: bytes = b""
    # Where the owner wants it run (a SchedulingStrategy; opaque here), and
    # whether another raylet already sent it here (the raylet's concern).
    strategy: Any = None
    spilled: bool = False
    env: str = ""  # the runtime environment its worker needs
    # Its label selector excludes this node: only another node may take it.
    elsewhere: bool = False


# -- actions ------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    request_id: int
    lease_id: bytes
    worker: Worker
    gpu_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class StartWorker:
    worker_id: bytes
    job_id: int
    env: str = ""


@dataclass(frozen=True)
class KillWorker:
    worker_id: bytes


@dataclass(frozen=True)
class Cancel:
    request_id: int
    # Refused for good: the placement group it asks for was removed.
    group_removed: bool = False
    # Refused: its runtime environment could not be set up (why).
    env_error: str = ""


@dataclass(frozen=True)
class AskExit:
    """Ask an idle worker whether it may stop (not while it owns live objects)."""

    worker_id: bytes


Action = Grant | StartWorker | KillWorker | Cancel | AskExit


class LeaseScheduler:
    def __init__(
        self,
        total: dict[str, float],
        *,
        soft_worker_limit: int,
        max_starting: int,
        idle_timeout_s: float,
        new_id: itertools.count[int] | None = None,
        node_id: bytes = b"",
    ) -> None:
        self.node_id = node_id
        self.total: Fixed = res.to_fixed(total)
        self.available: Fixed = dict(self.total)
        self.gpu_free: list[int] = gpus.instances(self.total.get("GPU", 0))
        self.soft_worker_limit = max(1, soft_worker_limit)
        self.max_starting = max(1, max_starting)
        self.idle_timeout_s = idle_timeout_s
        self.workers: dict[bytes, Worker] = {}
        self.leases: dict[bytes, Lease] = {}
        self.queue: deque[LeaseRequest] = deque()
        self.finished_jobs: set[int] = set()
        self.bundles: dict[tuple[str, int], Bundle] = {}
        # Groups removed (their requests fail), oldest first, up to _REMOVED_KEPT.
        self.removed_groups: dict[str, None] = {}
        self._ids = new_id or itertools.count(1)

    def _new_id(self, prefix: bytes) -> bytes:
        return prefix + next(self._ids).to_bytes(15, "big")

    # -- events ---------------------------------------------------------------
    def request(self, req: LeaseRequest) -> list[Action]:
        if req.job_id in self.finished_jobs and not req.detached:
            return [Cancel(req.request_id)]  # (a detached actor outlives its job)
        if self.removed_groups and placement.groups_in(req.resources) & self.removed_groups.keys():
            return [Cancel(req.request_id, group_removed=True)]
        req.infeasible = req.elsewhere or not res.fits(self.total, req.resources)
        self.queue.append(req)
        return self.schedule()

    def cancel(self, request_id: int) -> bool:
        for req in self.queue:
            if req.request_id == request_id:
                self.queue.remove(req)
                return True
        return False

    def withdraw(self, req: LeaseRequest) -> list[Action]:
        """Takes a queued request away (it goes to another node); the pass
        runs again, as the resources it was waiting for are free for others."""
        if req in self.queue:
            self.queue.remove(req)
        return self.schedule()

    def prestart(self, job_id: int, count: int, env: str = "") -> list[Action]:
        """Starts workers for a new job (in its environment) up to ``count``."""
        have = sum(
            1
            for w in self.workers.values()
            if w.job_id == job_id and w.env == env and w.state is not WorkerState.DEAD
        )
        return [self._start(job_id, env) for _ in range(max(0, count - have))]

    def worker_registered(
        self, worker_id: bytes, port: int, pid: int, now: float, push_port: int = 0
    ) -> list[Action]:
        worker = self.workers.get(worker_id)
        if worker is None or worker.state is not WorkerState.STARTING:
            return [KillWorker(worker_id)]
        worker.state = WorkerState.IDLE
        worker.port = port
        worker.push_port = push_port
        worker.pid = pid
        worker.idle_since = now
        return self.schedule()

    def worker_died(self, worker_id: bytes) -> list[Action]:
        worker = self.workers.pop(worker_id, None)
        if worker is None:
            return []
        if worker.lease_id is not None:
            self._release(worker.lease_id)
        worker.state = WorkerState.DEAD
        return self.schedule()

    def return_lease(
        self, lease_id: bytes, disconnect: bool, now: float, exiting: bool = False
    ) -> list[Action]:
        lease = self.leases.get(lease_id)
        if lease is None:
            return []
        self._release(lease_id)
        worker = self.workers.get(lease.worker_id)
        actions: list[Action] = []
        if worker is not None:
            if exiting and not disconnect:
                worker.state = WorkerState.RETIRING
            elif disconnect or worker.job_id in self.finished_jobs:
                worker.state = WorkerState.DEAD
                actions.append(KillWorker(worker.worker_id))
            else:
                worker.state = WorkerState.IDLE
                worker.idle_since = now
        return actions + self.schedule()

    def owner_died(self, owner: bytes, now: float) -> list[Action]:
        """Leases held by a dead owner end; their workers may hold its work: kill them."""
        actions: list[Action] = []
        for lease in [held for held in self.leases.values() if held.owner == owner and owner]:
            actions += self.return_lease(lease.lease_id, True, now)
        self.queue = deque(r for r in self.queue if r.owner != owner or not owner)
        return actions

    def owners_died(self, dead: Callable[[bytes], bool], now: float) -> list[Action]:
        """``owner_died`` for every owner of a lease that ``dead`` names."""
        actions: list[Action] = []
        for owner in {lease.owner for lease in self.leases.values() if lease.owner}:
            if dead(owner):
                actions += self.owner_died(owner, now)
        return actions

    def set_blocked(self, worker_id: bytes, blocked: bool) -> list[Action]:
        """A leased worker blocked in ``get`` lends its CPU back meanwhile.

        When it unblocks it takes the CPU again at once, even if that puts
        the node over its total for a while: refusing would deadlock nested
        tasks.
        """
        worker = self.workers.get(worker_id)
        if worker is None or worker.lease_id is None:
            return []
        lease = self.leases[worker.lease_id]
        if blocked and not lease.released:
            cpus = {k: v for k, v in lease.resources.items() if _is_cpu(k)}
            if cpus:
                lease.released = cpus
                res.add(self.available, lease.released)
                return self.schedule()
        elif not blocked and lease.released:
            res.subtract(self.available, lease.released)
            lease.released = {}
        return []

    def job_finished(self, job_id: int) -> list[Action]:
        self.finished_jobs.add(job_id)
        actions: list[Action] = []
        for req in [r for r in self.queue if r.job_id == job_id and not r.detached]:
            self.queue.remove(req)
            actions.append(Cancel(req.request_id))
        for worker in self.workers.values():
            if worker.job_id != job_id or worker.detached:
                continue
            if worker.state is not WorkerState.LEASED:
                worker.state = WorkerState.DEAD
            # A leased worker's lease ends when its process does (worker_died).
            actions.append(KillWorker(worker.worker_id))
        return actions

    def reap_idle(self, now: float) -> list[Action]:
        """Kills workers idle too long, beyond the soft limit of live workers."""
        live = [w for w in self.workers.values() if w.state is not WorkerState.DEAD]
        exiting = sum(1 for w in live if w.state in (WorkerState.EXITING, WorkerState.RETIRING))
        excess = len(live) - exiting - self.soft_worker_limit
        if excess <= 0:
            return []
        idle = sorted(
            (
                w
                for w in live
                if w.state is WorkerState.IDLE and now - w.idle_since >= self.idle_timeout_s
            ),
            key=lambda w: w.idle_since,
        )
        actions: list[Action] = []
        for worker in idle[:excess]:
            worker.state = WorkerState.EXITING
            actions.append(AskExit(worker.worker_id))
        return actions

    def exit_answered(self, worker_id: bytes, accepted: bool, now: float) -> list[Action]:
        worker = self.workers.get(worker_id)
        if worker is None or worker.state is not WorkerState.EXITING:
            return []
        if accepted:
            worker.state = WorkerState.DEAD
            return [KillWorker(worker_id)]
        # It still owns objects in use: idle again, asked again later.
        worker.state = WorkerState.IDLE
        worker.idle_since = now
        return self.schedule()

    def uncommitted(self) -> Fixed:
        """What is available once the requests queued here are granted."""
        left = dict(self.available)
        for req in self.queue:
            if not req.infeasible:
                res.subtract(left, req.resources)
        return left

    # -- placement group bundles (the gcs's two-phase commit) ---------------------
    def prepare_bundles(self, pg: str, bundles: list[tuple[int, Fixed]]) -> str:
        """Sets the bundles' resources aside, all or none; why not, or ""."""
        if pg in self.removed_groups:
            return "the placement group was removed"
        new = [(i, r) for i, r in bundles if (pg, i) not in self.bundles]  # retried: kept
        need: Fixed = {}
        for _, resources in new:
            res.add(need, resources)
        if not res.fits(self.available, need):
            return f"not enough free resources for {res.describe(res.to_float(need))}"
        for index, resources in new:
            self.bundles[(pg, index)] = Bundle(pg, index, dict(resources))
            res.subtract(self.available, resources)
        return ""

    def commit_bundles(self, pg: str, indexes: list[int]) -> list[Action]:
        """Prepared bundles become usable: their group resources appear here."""
        for index in indexes:
            bundle = self.bundles.get((pg, index))
            if bundle is None or bundle.state is BundleState.COMMITTED:
                continue
            bundle.state = BundleState.COMMITTED
            added = bundle.group_resources()
            res.add(self.total, added)
            res.add(self.available, added)
        return self._totals_changed()

    def return_bundles(self, pg: str, indexes: list[int] | None) -> list[Action]:
        """Gives the bundles' resources back (``None``: every bundle of the group
        here). Committed ones first end the leases that use the group: their
        workers are killed, as in Ray."""
        chosen = [
            b
            for b in self.bundles.values()
            if b.pg == pg and (indexes is None or b.index in indexes)
        ]
        actions: list[Action] = []
        if any(b.state is BundleState.COMMITTED for b in chosen):
            for lease in list(self.leases.values()):
                if pg in placement.groups_in(lease.resources):
                    # Released without a scheduling pass: nothing may take the
                    # group's resources before they are gone.
                    self._release(lease.lease_id)
                    worker = self.workers.get(lease.worker_id)
                    if worker is not None:
                        worker.state = WorkerState.DEAD
                        actions.append(KillWorker(worker.worker_id))
        for bundle in chosen:
            del self.bundles[(bundle.pg, bundle.index)]
            if bundle.state is BundleState.COMMITTED:
                added = bundle.group_resources()
                res.subtract(self.total, added)
                res.subtract(self.available, added)
            res.add(self.available, bundle.resources)
        _drop_zeros(self.total)
        _drop_zeros(self.available)
        return actions + self._totals_changed()

    def env_failed(self, worker_id: bytes, error: str) -> list[Action]:
        """A starting worker's runtime environment could not be set up: it is
        gone, and the requests waiting for a worker of that environment fail."""
        worker = self.workers.pop(worker_id, None)
        if worker is None:
            return []
        worker.state = WorkerState.DEAD
        failed = [r for r in self.queue if r.job_id == worker.job_id and r.env == worker.env]
        for req in failed:
            self.queue.remove(req)
        return [Cancel(r.request_id, env_error=error) for r in failed] + self.schedule()

    def group_removed(self, pg: str) -> list[Action]:
        """The group is gone for good: its bundles here are returned, and the
        requests waiting for it fail (later ones too)."""
        self.removed_groups[pg] = None
        while len(self.removed_groups) > _REMOVED_KEPT:
            del self.removed_groups[next(iter(self.removed_groups))]
        actions: list[Action] = []
        for req in [r for r in self.queue if pg in placement.groups_in(r.resources)]:
            self.queue.remove(req)
            actions.append(Cancel(req.request_id, group_removed=True))
        return actions + self.return_bundles(pg, None)

    def _totals_changed(self) -> list[Action]:
        for req in self.queue:
            req.infeasible = req.elsewhere or not res.fits(self.total, req.resources)
        return self.schedule()

    # -- the scheduling pass ------------------------------------------------------
    def schedule(self) -> list[Action]:
        """Grants what fits, FIFO, and starts the workers still needed."""
        actions: list[Action] = []
        tentative = dict(self.available)
        tentative_gpus = list(self.gpu_free)
        waiting_for_worker: dict[tuple[int, str], int] = {}
        for req in list(self.queue):
            if req.infeasible or not res.fits(tentative, req.resources):
                continue
            picked = gpus.pick(tentative_gpus, req.resources.get("GPU", 0))
            if picked is None:
                continue
            devices = tuple(sorted(picked))
            worker = self._idle_worker(req.job_id, devices, req.env)
            if worker is None:
                res.subtract(tentative, req.resources)
                gpus.take(tentative_gpus, picked)
                kind = (req.job_id, req.env)
                waiting_for_worker[kind] = waiting_for_worker.get(kind, 0) + 1
                continue
            self.queue.remove(req)
            lease = Lease(
                self._new_id(b"L"),
                worker.worker_id,
                req.job_id,
                dict(req.resources),
                owner=req.owner,
                gpus=picked,
            )
            self.leases[lease.lease_id] = lease
            res.subtract(self.available, req.resources)
            res.subtract(tentative, req.resources)
            gpus.take(self.gpu_free, picked)
            gpus.take(tentative_gpus, picked)
            worker.state = WorkerState.LEASED
            worker.lease_id = lease.lease_id
            worker.detached = req.detached
            worker.devices = devices
            actions.append(Grant(req.request_id, lease.lease_id, worker, devices))
        starting_total = sum(1 for w in self.workers.values() if w.state is WorkerState.STARTING)
        for (job_id, env), needed in waiting_for_worker.items():
            starting = sum(
                1
                for w in self.workers.values()
                if w.job_id == job_id and w.env == env and w.state is WorkerState.STARTING
            )
            for _ in range(needed - starting):
                if starting_total >= self.max_starting:
                    break
                actions.append(self._start(job_id, env))
                starting_total += 1
        return actions

    def _idle_worker(self, job_id: int, devices: tuple[int, ...], env: str) -> Worker | None:
        """An idle worker of the job and environment that ran leases with these
        GPU ids, else a fresh one (none yet); never one that saw other ids."""
        fresh = None
        for worker in self.workers.values():
            if worker.job_id == job_id and worker.env == env and worker.state is WorkerState.IDLE:
                if worker.devices == devices:
                    return worker
                if worker.devices is None and fresh is None:
                    fresh = worker
        return fresh

    def _start(self, job_id: int, env: str = "") -> StartWorker:
        wid = worker_id(b"W", self.node_id, next(self._ids).to_bytes(8, "big"))
        worker = Worker(wid, job_id, env=env)
        self.workers[worker.worker_id] = worker
        return StartWorker(worker.worker_id, job_id, env)

    def _release(self, lease_id: bytes) -> None:
        lease = self.leases.pop(lease_id)
        held = dict(lease.resources)
        res.subtract(held, lease.released)
        res.add(self.available, held)
        gpus.give(self.gpu_free, lease.gpus)
        worker = self.workers.get(lease.worker_id)
        if worker is not None and worker.lease_id == lease_id:
            worker.lease_id = None

    # -- introspection --------------------------------------------------------
    def live_worker(self, worker_id: bytes) -> bool:
        worker = self.workers.get(worker_id)
        return worker is not None and worker.state is not WorkerState.DEAD

    def infeasible_requests(self) -> list[LeaseRequest]:
        return [r for r in self.queue if r.infeasible]

    def validate(self) -> None:
        expected = dict(self.total)
        for lease in self.leases.values():
            held = dict(lease.resources)
            res.subtract(held, lease.released)
            res.subtract(expected, held)
        for bundle in self.bundles.values():
            res.subtract(expected, bundle.resources)
        assert {k: v for k, v in expected.items() if v} == {
            k: v for k, v in self.available.items() if v
        }, (expected, self.available)
        gpu_held = list(self.gpu_free)
        for lease in self.leases.values():
            gpus.give(gpu_held, lease.gpus)
        assert gpu_held == gpus.instances(self.total.get("GPU", 0)), gpu_held
        for worker in self.workers.values():
            holders = [
                lease for lease in self.leases.values() if lease.worker_id == worker.worker_id
            ]
            assert (worker.state is WorkerState.LEASED) == bool(holders), worker
            assert len(holders) <= 1


def _is_cpu(name: str) -> bool:
    """CPU, or a placement group's CPU (what a blocked worker lends back)."""
    parsed = placement.parse(name)
    return (parsed[0] if parsed is not None else name) == "CPU"


def _drop_zeros(resources: Fixed) -> None:
    for name in [k for k, v in resources.items() if not v and placement.is_group_resource(k)]:
        del resources[name]
