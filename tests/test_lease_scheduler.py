"""The raylet's lease scheduler as a state machine: events in, actions out."""

from __future__ import annotations

from runtime._private.resources import to_fixed
from runtime.raylet._scheduler import (
    AskExit,
    Cancel,
    Grant,
    KillWorker,
    LeaseRequest,
    LeaseScheduler,
    StartWorker,
    WorkerState,
)


def make(cpus: float = 2, **extra: float) -> LeaseScheduler:
    return LeaseScheduler(
        {"CPU": cpus, **extra}, soft_worker_limit=int(cpus), max_starting=4, idle_timeout_s=1.0
    )


def request(rid: int, job: int = 1, **resources: float) -> LeaseRequest:
    return LeaseRequest(rid, job, to_fixed(resources or {"CPU": 1}))


def register_all(s: LeaseScheduler, actions, now: float = 0.0):
    out = []
    for a in actions:
        if isinstance(a, StartWorker):
            out += s.worker_registered(a.worker_id, 1000, 1, now)
    return out


def test_request_starts_a_worker_then_grants():
    s = make()
    actions = s.request(request(1))
    assert [type(a) for a in actions] == [StartWorker]
    grants = register_all(s, actions)
    assert [type(a) for a in grants] == [Grant]
    assert grants[0].request_id == 1
    assert s.available["CPU"] == to_fixed({"CPU": 1})["CPU"]
    s.validate()


def test_resources_bound_the_grants():
    s = make(cpus=2)
    s.prestart(1, 2)
    for w in list(s.workers.values()):
        s.worker_registered(w.worker_id, 1, 1, 0.0)
    grants = []
    for rid in range(1, 4):
        grants += [a for a in s.request(request(rid)) if isinstance(a, Grant)]
    assert [g.request_id for g in grants] == [1, 2]
    assert len(s.queue) == 1
    returned = s.return_lease(grants[0].lease_id, False, 1.0)
    assert [a.request_id for a in returned if isinstance(a, Grant)] == [3]
    s.validate()


def test_fractional_resources_do_not_drift():
    s = make(cpus=1)
    s.prestart(1, 1)
    for w in list(s.workers.values()):
        s.worker_registered(w.worker_id, 1, 1, 0.0)
    for rid in range(10):
        actions = s.request(request(rid, CPU=0.1))
        actions += register_all(s, actions)
        for g in [a for a in actions if isinstance(a, Grant)]:
            s.return_lease(g.lease_id, False, 0.0)
    assert s.available == s.total
    s.validate()


def test_infeasible_requests_wait():
    s = make(cpus=2)
    actions = s.request(request(1, CPU=4))
    assert actions == []
    assert [r.request_id for r in s.infeasible_requests()] == [1]


def test_blocked_worker_lends_its_cpu():
    s = make(cpus=1)
    grant = next(a for a in register_all(s, s.request(request(1))) if isinstance(a, Grant))
    actions = s.request(request(2))
    assert actions == []  # no CPU left
    actions = s.set_blocked(grant.worker.worker_id, True)
    assert [type(a) for a in actions] == [StartWorker]
    second = register_all(s, actions)
    assert [a.request_id for a in second if isinstance(a, Grant)] == [2]
    s.set_blocked(grant.worker.worker_id, False)
    assert s.available["CPU"] < 0  # oversubscribed until someone returns
    s.validate()


def test_worker_death_releases_its_lease():
    s = make(cpus=1)
    grant = next(a for a in register_all(s, s.request(request(1))) if isinstance(a, Grant))
    s.worker_died(grant.worker.worker_id)
    assert s.available == s.total and not s.leases
    s.validate()


def test_disconnect_kills_the_worker():
    s = make(cpus=1)
    grant = next(a for a in register_all(s, s.request(request(1))) if isinstance(a, Grant))
    actions = s.return_lease(grant.lease_id, True, 0.0)
    assert KillWorker(grant.worker.worker_id) in actions
    assert s.workers[grant.worker.worker_id].state is WorkerState.DEAD


def test_an_exiting_worker_is_neither_leased_again_nor_killed():
    """Returned as exiting (it ran a function's max_calls): it lets go of what
    it owns and exits by itself; the next request starts a fresh worker."""
    s = make(cpus=1)
    grant = next(a for a in register_all(s, s.request(request(1))) if isinstance(a, Grant))
    actions = s.return_lease(grant.lease_id, False, 0.0, exiting=True)
    assert not any(isinstance(a, KillWorker) for a in actions)
    assert s.workers[grant.worker.worker_id].state is WorkerState.RETIRING
    assert [type(a) for a in s.request(request(2))] == [StartWorker]
    s.worker_died(grant.worker.worker_id)
    s.validate()


def test_job_finished_cancels_and_kills():
    s = make(cpus=1)
    register_all(s, s.request(request(1, job=7)))
    s.request(request(2, job=7))
    actions = s.job_finished(7)
    assert Cancel(2) in actions
    assert any(isinstance(a, KillWorker) for a in actions)
    assert s.request(request(3, job=7)) == [Cancel(3)]


def test_a_detached_actors_request_outlives_its_job():
    # A driver that creates a detached actor and exits at once: the actor's
    # lease may still be queued, or not yet asked for, when its job finishes.
    s = make(cpus=1)
    register_all(s, s.request(request(1, job=7)))
    queued = request(2, job=7)
    queued.detached = True
    s.request(queued)
    actions = s.job_finished(7)
    assert Cancel(2) not in actions and queued in s.queue
    late = request(3, job=7)
    late.detached = True
    assert Cancel(3) not in s.request(late)
    s.validate()


def test_idle_workers_beyond_the_soft_limit_are_reaped():
    s = make(cpus=1)
    for w in [a for a in s.prestart(1, 3) if isinstance(a, StartWorker)]:
        s.worker_registered(w.worker_id, 1, 1, 0.0)
    assert s.reap_idle(0.5) == []
    asks = s.reap_idle(5.0)
    assert [type(a) for a in asks] == [AskExit, AskExit]
    assert s.reap_idle(6.0) == []  # asked already
    kept, gone = asks
    assert s.exit_answered(gone.worker_id, True, 6.0) == [KillWorker(gone.worker_id)]
    # A worker that still owns objects in use stays, idle again.
    assert s.exit_answered(kept.worker_id, False, 6.0) == []
    assert s.workers[kept.worker_id].state is WorkerState.IDLE
    # Its idle time starts over: the next ask goes to the other idle worker.
    assert kept.worker_id not in [a.worker_id for a in s.reap_idle(6.5)]


def test_workers_are_per_job():
    s = make(cpus=2)
    register_all(s, s.prestart(1, 1))
    actions = s.request(request(1, job=2))
    assert [type(a) for a in actions] == [StartWorker]
    assert s.workers[actions[0].worker_id].job_id == 2


def test_cancelled_request_leaves_the_queue():
    s = make(cpus=1)
    register_all(s, s.request(request(1)))
    s.request(request(2))
    assert s.cancel(2) and not s.cancel(2)
    assert not s.queue


def test_leases_of_a_dead_owner_end():
    s = make(cpus=2)
    req = LeaseRequest(1, 1, to_fixed({"CPU": 1}), owner=b"owner")
    grant = next(a for a in register_all(s, s.request(req)) if isinstance(a, Grant))
    s.request(LeaseRequest(2, 1, to_fixed({"CPU": 4}), owner=b"owner"))  # waits (infeasible)
    actions = s.owner_died(b"owner", 1.0)
    assert KillWorker(grant.worker.worker_id) in actions
    assert s.available == s.total and not s.queue
    s.validate()


def grant_of(s: LeaseScheduler, rid: int, **resources: float) -> Grant:
    actions = s.request(request(rid, **resources))
    actions += register_all(s, actions)
    grants = [a for a in actions if isinstance(a, Grant) and a.request_id == rid]
    assert grants, actions
    return grants[0]


def test_gpu_ids_are_whole_or_shared_and_come_back():
    s = make(cpus=8, GPU=3)
    whole = grant_of(s, 1, CPU=1, GPU=2)
    assert whole.gpu_ids == (0, 1)
    # Fractions share one id, packed onto the fullest id with room.
    half = grant_of(s, 2, CPU=1, GPU=0.5)
    quarter = grant_of(s, 3, CPU=1, GPU=0.25)
    assert half.gpu_ids == quarter.gpu_ids == (2,)
    # No whole id is left: a whole request waits, even with 0.25 free overall.
    assert not [a for a in s.request(request(4, CPU=1, GPU=1)) if isinstance(a, Grant)]
    s.validate()
    returned = s.return_lease(whole.lease_id, False, 1.0)
    returned += register_all(s, returned)
    regrant = [a for a in returned if isinstance(a, Grant)]
    assert [g.request_id for g in regrant] == [4] and regrant[0].gpu_ids == (0,)
    s.validate()


def test_a_worker_keeps_its_gpu_ids():
    s = make(cpus=4, GPU=2)
    first = grant_of(s, 1, CPU=1, GPU=1)
    s.return_lease(first.lease_id, False, 1.0)
    assert first.worker.devices == (0,)
    # A CPU task does not get the idle worker that saw GPU 0: a fresh one starts.
    cpu = grant_of(s, 2, CPU=1)
    assert cpu.worker is not first.worker and cpu.worker.devices == ()
    # The same GPU id reuses the worker that saw it.
    again = grant_of(s, 3, CPU=1, GPU=1)
    assert again.worker is first.worker and again.gpu_ids == (0,)
    s.validate()
