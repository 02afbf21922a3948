"""What a core worker follows of the cluster: its nodes, and its workers' output.

A driver subscribes to the gcs's JOBS, NODES, ERRORS, GROUP_STATES and (unless
told not to) LOGS channels: its job lives while that stream does, worker
output is printed with its ``(pid=N)`` prefix, node deaths reach the
submitters, and its placement groups' states are kept (a wait for a group
heard placed answers without a call). A worker
subscribes to NODES only. The nodes table also answers where a node's
raylet is (for leases and locality); a miss looks the nodes up for next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import sys
import time
from typing import TYPE_CHECKING

from .._private import placement, progress_lines, rpc
from .._private import task_events as te
from .._private.log_dedup import LogDedup
from ..protocol.rt import (
    Channel,
    Empty,
    ErrorEvent,
    FlushLogsRequest,
    GetAllNodesReply,
    LogBatch,
    NodeInfo,
    PlacementGroupInfo,
    PlacementGroupRequest,
    PlacementGroupState,
    RayletStub,
    SubscribeRequest,
)
from ._states import State, WorkerMode

if TYPE_CHECKING:
    from ._core_worker import CoreWorker

logger = logging.getLogger("runtime")

_GROUP_STATES_KEPT = 100_000
_GROUPS_REMOVED_KEPT = 10_000


class ClusterWatch:
    def __init__(self, worker: CoreWorker) -> None:
        self._worker = worker
        # The cluster's nodes as last heard (NODES channel; looked up on a miss).
        self.nodes: dict[bytes, NodeInfo] = {}
        # Invariant: True while one lookup of every node is under way.
        self._refreshing = False
        # The error channel's messages printed already (each is printed once).
        self._errors_seen: set[tuple[str, str]] = set()
        # A driver's placement groups' states as the gcs last announced them
        # (read by waits, from user threads: a dict read; a removal marks its
        # group from the user's thread: one dict store). Invariants: a group
        # removed here is REMOVED from the call on, whatever older announcement
        # arrives, until the gcs's REMOVED (the last it sends of a group) drops
        # it; a group heard REMOVED is absent (its waits ask the gcs); emptied
        # when announcements may have been missed (a resubscription, a drop).
        self.group_states: dict[bytes, PlacementGroupState] = {}
        # A driver's groups known removed (by it, or heard REMOVED), the latest
        # _GROUPS_REMOVED_KEPT, in order: a removal is for good, so a task whose
        # worker died under one failed for that (see TaskManager).
        self.removed_groups: dict[bytes, None] = {}
        # A stopping driver's log flushes, by id, until their marker comes back.
        self._flushes: dict[int, asyncio.Future[None]] = {}
        self._flush_ids = itertools.count(1)
        self._batches_printed = 0  # (a drain's sign of progress)
        self._bars = progress_lines.BarManager()  # tasks' progress bars (tqdm_ray)
        # Workers' lines deduplicated across processes, stdout's and stderr's
        # apart (None: printed as they come); a timer prints held-back summaries.
        config = worker.config
        self._dedup: dict[bool, LogDedup] | None = None
        if config.dedup_logs:
            made = functools.partial(
                LogDedup,
                config.dedup_logs_agg_window_s,
                config.dedup_logs_allow_regex,
                config.dedup_logs_skip_regex,
            )
            self._dedup = {False: made(), True: made()}
        self._dedup_timer: asyncio.TimerHandle | None = None

    def start(self, driver: bool) -> None:
        """Starts following the gcs (on the loop, once the worker is connected)."""
        worker = self._worker
        if driver:
            channels = [Channel.JOBS, Channel.NODES, Channel.ERRORS, Channel.GROUP_STATES]
            if worker.log_to_driver:
                channels.append(Channel.LOGS)
            job = worker.job_id
            request = SubscribeRequest(channels=channels, job_id=job, owns_job=job)
            worker.background.spawn(self._subscribe(request))
            self._refresh()
        else:
            worker.background.spawn(self._subscribe(SubscribeRequest(channels=[Channel.NODES])))

    async def _subscribe(self, request: SubscribeRequest) -> None:
        """Follows the gcs; through a restart of it (resubscribing: a driver's job
        lives on) when its storage outlives it, else until it goes."""
        worker = self._worker
        while True:
            try:
                async for message in worker.gcs.subscribe(request):
                    if message.dropped:
                        self.group_states.clear()
                        self._end_flushes()  # their markers may be what was dropped
                    if message.channel is Channel.GROUP_STATES:
                        self._on_group(message.placement_group)
                    elif message.channel is Channel.LOGS and message.logs is not None:
                        self._print_logs(message.logs)
                    elif message.channel is Channel.NODES and message.node is not None:
                        self.on_node(message.node)
                    elif message.channel is Channel.ERRORS and message.error is not None:
                        self._print_error(message.error)
                cause: BaseException = ConnectionError("the gcs ended the subscription")
            except rpc.CONNECTION_ERRORS as e:
                cause = e
            self.group_states.clear()  # changes may be missed until resubscribed
            if worker.state is not State.RUNNING:
                return
            if worker.gcs.reconnect_s > 0:
                # Told once, by the driver; its workers keep quiet about it.
                say = logger.warning if worker.mode is WorkerMode.DRIVER else logger.info
                say("lost the gcs (%s); waiting for it to come back", cause)
                if await worker.gcs.wait_reachable():
                    logger.info("the gcs is back")
                    self._refresh()
                    continue
            logger.error("lost the connection to the gcs: %s", cause)
            worker.on_gcs_lost(cause)
            return

    def on_node(self, node: NodeInfo) -> None:
        """A node joined, changed or died: a dead node's tasks and actor calls fail over."""
        self.nodes[node.node_id] = node
        if not node.alive:
            if node.node_id == self._worker.node_id:
                self._worker.on_raylet_lost(ConnectionError("the gcs marked this node dead"))
            self._worker.submitter.node_died(node.node_id)
            self._worker.actor_client.actors.node_died(node.node_id)

    def _on_group(self, group: PlacementGroupInfo | None) -> None:
        if group is None:
            return
        pg_id = group.placement_group_id
        if group.state is PlacementGroupState.REMOVED:
            self.group_states.pop(pg_id, None)
            self._removed(pg_id)
        elif self.group_states.get(pg_id) is not PlacementGroupState.REMOVED:
            self.group_states[pg_id] = group.state

    def removing(self, pg_id: bytes) -> None:
        """This driver removes the group: no announcement older than its
        removal's makes it placed again here."""
        if self._worker.mode is not WorkerMode.DRIVER:
            return  # (a worker hears no announcements)
        if len(self.group_states) >= _GROUP_STATES_KEPT:
            # Groups removed twice, or never created, are announced no
            # removal: their marks go here (an announcement in flight for
            # another may make it look placed until its removal's arrives).
            self.group_states.clear()
        self.group_states[pg_id] = PlacementGroupState.REMOVED
        self._removed(pg_id)

    async def any_removed(self, pg_ids: list[bytes]) -> bool:
        """Whether the gcs says one of these groups is removed (and notes it):
        for owners that hear no announcements, and for one that may not have
        arrived yet. A gcs that does not answer in 2 s answers no."""
        for pg_id in pg_ids:
            request = PlacementGroupRequest(placement_group_id=pg_id)
            try:
                # Bounded: a gcs that restarts would hold the task's retry.
                reply = await asyncio.wait_for(self._worker.gcs.get_placement_group(request), 2.0)
            except TimeoutError:
                return False
            except rpc.CONNECTION_ERRORS:
                return False
            if reply.found and reply.state is PlacementGroupState.REMOVED:
                self._removed(pg_id)
                return True
        return False

    def _removed(self, pg_id: bytes) -> None:
        self.removed_groups[pg_id] = None
        if len(self.removed_groups) > _GROUPS_REMOVED_KEPT:
            del self.removed_groups[next(iter(self.removed_groups))]

    def report_error(self, kind: str, message: str) -> None:
        """Tells this job's driver, through the gcs (Ray's error channel), which
        keeps it among the cluster's events."""
        # (As the gcs keeps it: the copy it sends back is then the same message.)
        message = message[: te.MAX_MESSAGE]
        event = ErrorEvent(job_id=self._worker.job_id, type=kind, message=message)
        if self._worker.mode is WorkerMode.DRIVER:
            self._print_error(event)  # at once (the gcs's copy is printed once only)
        self._worker.background.spawn(self._publish(event))

    def report_worker_death(self, message: str) -> None:
        """``report_error`` for a worker that died under a task, once this node's
        raylet has answered: when it is the raylet that died (taking its workers),
        that loss is what callers are told, not each worker's death."""
        self._worker.background.spawn(self._report_if_raylet_lives(message))

    async def _report_if_raylet_lives(self, message: str) -> None:
        try:
            await asyncio.wait_for(self._worker.raylet.health_check(Empty()), 5.0)
        except rpc.CONNECTION_ERRORS:  # TimeoutError is an OSError, one of them
            return
        if self._worker.lost is None:
            self.report_error("WORKER_DIED", message)

    async def _publish(self, event: ErrorEvent) -> None:
        with contextlib.suppress(*rpc.CONNECTION_ERRORS):
            await self._worker.gcs.publish_error(event)

    def _print_error(self, event: ErrorEvent) -> None:
        """Ray's error channel: each distinct message once."""
        key = (event.type, event.message)
        if key not in self._errors_seen:
            self._errors_seen.add(key)
            log = logger.warning if event.type == "INFEASIBLE" else logger.error
            log("%s: %s", event.type, event.message)

    async def drain_logs(self, idle_s: float = 2.0, most_s: float = 5.0) -> None:
        """A driver about to stop: returns once every line its job's workers
        printed so far has been printed here, or once nothing of it has come
        for ``idle_s`` (a lost node or gcs), or after ``most_s`` in all (a
        flood: the rest of the stop has to fit in the caller's bound too)."""
        if not self._worker.log_to_driver:
            return
        loop = asyncio.get_running_loop()
        end = loop.time() + most_s
        flush = asyncio.ensure_future(self._flush_logs())
        try:
            while True:
                printed = self._batches_printed
                wait_s = min(idle_s, end - loop.time())
                done, _ = await asyncio.wait({flush}, timeout=max(wait_s, 0.0))
                if done:
                    return flush.result()
                if self._batches_printed == printed or loop.time() >= end:
                    logger.debug("stopping without the workers' last output")
                    return
        finally:
            flush.cancel()

    async def _flush_logs(self) -> None:
        """Each live node's raylet reads and publishes what this job's workers
        wrote; then a marker this driver sends through the gcs comes back on
        the subscription after those lines."""
        worker = self._worker
        # The gcs's list, not only this driver's view: a node missing from the
        # view (a failed first look-up) would have its last lines cut off.
        try:
            nodes = (await worker.gcs.get_all_nodes(Empty())).nodes
        except rpc.CONNECTION_ERRORS as e:
            logger.debug("flushing logs with this driver's view of the nodes: %s", e)
            nodes = list(self.nodes.values())
        raylets = list(
            {worker.raylet_address} | {(n.host, n.raylet_port) for n in nodes if n.alive}
        )
        request = FlushLogsRequest(job_id=worker.job_id)
        answers = await asyncio.gather(
            *(RayletStub(worker.channels.get(*at)).flush_logs(request) for at in raylets),
            return_exceptions=True,  # a node that can not answer holds nothing back
        )
        for at, answer in zip(raylets, answers, strict=True):
            if isinstance(answer, BaseException):
                logger.debug("the raylet at %s:%d did not flush its logs: %r", *at, answer)
        flush_id = next(self._flush_ids)
        came_back = self._flushes[flush_id] = asyncio.get_running_loop().create_future()
        try:
            await worker.gcs.publish_logs(LogBatch(job_id=worker.job_id, flush_id=flush_id))
            await came_back
        finally:
            del self._flushes[flush_id]

    def _end_flushes(self) -> None:
        for came_back in self._flushes.values():
            if not came_back.done():
                came_back.set_result(None)

    def _print_logs(self, batch: LogBatch) -> None:
        if batch.flush_id:  # a flush's marker: nothing to print
            came_back = self._flushes.get(batch.flush_id)
            if came_back is not None and not came_back.done():
                came_back.set_result(None)
            return
        self._batches_printed += 1
        prefix = batch.prefix or f"pid={batch.pid}"
        if batch.host and batch.host != self._worker.host:
            prefix += f", ip={batch.host}"
        lines = []
        for line in batch.lines:
            bar = progress_lines.parse(line)
            if bar is None:
                lines.append(line)
            else:
                self._bars.update(f"{batch.host}:{batch.pid}", prefix, bar)
        if self._dedup is None:
            self._write([(prefix, line) for line in lines], batch.is_err)
            return
        self._write(
            self._dedup[batch.is_err].feed((batch.host, batch.pid), prefix, lines), batch.is_err
        )
        self._time_dedup()

    def _write(self, lines: list[tuple[str, str]], is_err: bool) -> None:
        if not lines:
            return
        try:
            text = "".join(f"({label}) {line}\n" for label, line in lines)
            self._bars.write(text, sys.stderr if is_err else sys.stdout)
        except (OSError, ValueError):
            pass

    def _time_dedup(self) -> None:
        """Prints the held-back summaries as their windows end (not only when
        the next line comes: a notebook's cell may print nothing after)."""
        if self._dedup is None or self._dedup_timer is not None:
            return
        due = [d for d in (dedup.next_due() for dedup in self._dedup.values()) if d is not None]
        if due:
            delay = max(0.0, min(due) - time.monotonic())
            self._dedup_timer = asyncio.get_running_loop().call_later(delay, self._print_due)

    def _print_due(self) -> None:
        self._dedup_timer = None
        assert self._dedup is not None
        for is_err, dedup in self._dedup.items():
            self._write(dedup.due(), is_err)
        self._time_dedup()

    def flush_dedup(self) -> None:
        """The driver stops: every summary still held back is printed."""
        if self._dedup_timer is not None:
            self._dedup_timer.cancel()
            self._dedup_timer = None
        for is_err, dedup in (self._dedup or {}).items():
            self._write(dedup.flush(), is_err)

    # -- the nodes -------------------------------------------------------------------
    def node_address(self, node_id: bytes) -> tuple[str, int] | None:
        """A live node's raylet address, if known here; a miss looks the nodes up
        (for next time)."""
        node = self.nodes.get(node_id)
        if node is None:
            self._refresh()
            return None
        return (node.host, node.raylet_port) if node.alive else None

    def _refresh(self) -> None:
        if not self._refreshing:
            self._refreshing = True
            self._worker.background.spawn(self._refresh_nodes())

    async def _refresh_nodes(self) -> None:
        try:
            reply = await self._worker.gcs.get_all_nodes(Empty())
        except rpc.CONNECTION_ERRORS:
            return
        finally:
            self._refreshing = False
        for node in reply.nodes:
            self.nodes.setdefault(node.node_id, node)

    async def warn_if_infeasible(self, what: str, resources: dict[str, float]) -> None:
        """Warns (once per scheduling key or actor) when no live node could ever fit it."""
        if placement.groups_in(resources):
            return  # it waits for its group, which the gcs warns about if it cannot be placed
        try:
            reply: GetAllNodesReply = await self._worker.gcs.get_all_nodes(Empty())
        except rpc.CONNECTION_ERRORS:
            return
        for node in reply.nodes:
            if node.alive and all(
                node.resources_total.get(k, 0.0) >= v for k, v in resources.items()
            ):
                return
        totals = [dict(n.resources_total) for n in reply.nodes if n.alive]
        self.report_error(
            "INFEASIBLE",
            f"{what} needs resources {resources}, which no node in the cluster has "
            f"(nodes: {totals}); it is infeasible and waits until a node that fits joins",
        )
