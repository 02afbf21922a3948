"""``get_runtime_context()``: what a driver or task can learn about where it runs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, NoReturn

from .._private import runtime_env as renv
from .._private.ids import job_bytes, job_hex
from ..core_worker import ActorExitRequest, current_task, current_task_id
from ..exceptions import RuntimeNotInitializedError
from . import _cluster_info, _context
from ._actor_handle import handle_from_state
from ._ids import ActorID, JobID, NodeID, PlacementGroupID, TaskID


@dataclass(frozen=True)
class RuntimeContext:
    """What a driver or task can learn about where it runs.

    Ray's ``get_*`` methods give ids as hex strings; its older properties
    (``job_id``, ``node_id``, ``task_id``, ``actor_id``) and ``get()`` give
    id objects."""

    job: int
    node: str
    worker_id: str
    namespace: str
    gcs_address: str
    session_dir: str | None
    mode: str

    def get_job_id(self) -> str:
        return job_hex(self.job)

    def get_node_id(self) -> str:
        return self.node

    @property
    def job_id(self) -> JobID:
        return JobID(job_bytes(self.job))

    @property
    def node_id(self) -> NodeID:
        return NodeID(bytes.fromhex(self.node))

    @property
    def task_id(self) -> TaskID | None:
        task_id = current_task_id.get()
        return None if task_id is None else TaskID(task_id)

    @property
    def actor_id(self) -> ActorID | None:
        hosted = _hosted()
        return None if hosted is None else ActorID(hosted["actor_id"])

    def get(self) -> dict[str, Any]:
        """Ray's older summary: the job's and node's ids and the namespace, and
        in a task or actor its task's and actor's ids."""
        summary: dict[str, Any] = {
            "job_id": self.job_id,
            "node_id": self.node_id,
            "namespace": self.namespace,
        }
        if self.mode == "worker":
            summary["task_id"] = self.task_id
            summary["actor_id"] = self.actor_id
        return summary

    def get_node_labels(self) -> dict[str, str]:
        """This node's labels (``ray.io/node-id``, and those it was started with)."""
        worker = _context.current()
        if worker.node_labels:
            return dict(worker.node_labels)
        known = worker.cluster.nodes.get(worker.node_id)
        if known is not None:
            return dict(known.labels)
        here = [n for n in _cluster_info.nodes() if n["NodeID"] == self.node]
        return dict(here[0]["Labels"]) if here else {}

    def get_worker_id(self) -> str:
        return self.worker_id

    def get_task_id(self) -> str | None:
        task_id = current_task_id.get()
        return task_id.hex() if task_id is not None else None

    def get_actor_id(self) -> str | None:
        """The id of the actor this runs in (None outside an actor)."""
        hosted = _hosted()
        return None if hosted is None else hosted["actor_id"].hex()

    def get_actor_name(self) -> str | None:
        """The name of the actor this runs in ("" if unnamed; None outside an actor)."""
        hosted = _hosted()
        return None if hosted is None else hosted.get("name", "")

    def get_task_name(self) -> str | None:
        """The running task's name: its ``name`` option, else ``function`` or
        ``Class.method`` (None in a driver)."""
        task = current_task.get()
        return None if task is None else task[2]

    def get_task_function_name(self) -> str | None:
        """The running task's function: ``module.function`` or
        ``module.Class.method`` (None in a driver)."""
        task = current_task.get()
        worker = _context.current_or_none()
        if task is None or worker is None or worker.executor is None:
            return None
        return worker.executor.function_name(task)

    def get_placement_group_id(self) -> str | None:
        """The id of the placement group the calling task or actor runs in
        (None in a driver, or outside a group)."""
        placement = _context.placement_here()
        return placement[0] if placement is not None else None

    @property
    def current_placement_group_id(self) -> PlacementGroupID | None:
        """Ray's older form of :meth:`get_placement_group_id` (an id object)."""
        group = self.get_placement_group_id()
        return None if group is None else PlacementGroupID.from_hex(group)

    def get_session_name(self) -> str:
        """The cluster's session (``session_<time>_<pid>``): the same in every
        process of the cluster."""
        return os.path.basename(self._session_path())

    def get_temp_dir(self) -> str:
        """The folder this node's sessions live in (``_temp_dir``)."""
        return os.path.dirname(self._session_path())

    def _session_path(self) -> str:
        if not self.session_dir:
            raise RuntimeError("this process's cluster has no session folder here")
        return os.path.normpath(self.session_dir)

    def get_resource_ids(self) -> dict[str, list[str]]:
        """Ray's older name of :meth:`get_accelerator_ids`."""
        return self.get_accelerator_ids()

    def should_capture_child_tasks_in_placement_group(self) -> bool:
        """Whether tasks and actors this one submits join its placement group."""
        placement = _context.placement_here()
        return placement is not None and placement[2]

    @property
    def current_actor(self) -> Any:
        """A handle to the actor this runs in (it does not keep the actor alive)."""
        hosted = _hosted()
        if hosted is None:
            raise RuntimeError("current_actor can only be read inside an actor")
        return handle_from_state(hosted["actor_id"], hosted["handle_state"])

    @property
    def was_current_actor_reconstructed(self) -> bool:
        """Whether this actor was restarted after a failure (its process died)."""
        hosted = _hosted()
        return hosted is not None and hosted.get("num_restarts", 0) > 0

    @property
    def runtime_env(self) -> dict[str, Any]:
        """The runtime environment this driver's job, or this task or actor, runs in."""
        return renv.from_wire(_context.current().runtime_env)

    def get_runtime_env_string(self) -> str:
        """The runtime environment as JSON (Ray's name)."""
        return _context.current().runtime_env or "{}"

    def get_assigned_resources(self) -> dict[str, float]:
        """The resources of the task or actor calling this ({} in a driver)."""
        executor = _context.current().executor
        if executor is None or current_task_id.get() is None:
            return {}
        return dict(executor.assigned)

    def get_accelerator_ids(self) -> dict[str, list[str]]:
        """Accelerator ids assigned to this task or actor, by kind, as strings
        (Ray's form); none in a driver."""
        return {"GPU": [str(i) for i in get_gpu_ids()]}

    def is_canceled(self) -> bool:
        """Whether the task (or actor call) calling this was cancelled: a task
        that catches the cancellation can look here and wind down."""
        task_id = current_task_id.get()
        if task_id is None:
            raise RuntimeError("is_canceled() can only be called from inside a task")
        executor = _context.current().executor
        return executor is not None and executor.is_canceled(task_id)


def _hosted() -> dict[str, Any] | None:
    worker = _context.current_or_none()
    return None if worker is None else worker.actor_client.hosted


def exit_actor() -> NoReturn:
    """Ends the actor this runs in, after the current call (as Ray's
    ``ray.actor.exit_actor``): it is not restarted, its atexit handlers run,
    and its pending and later calls fail with ActorDiedError saying so."""
    worker = _context.current_or_none()
    if worker is None or worker.actor_client.hosted is None or current_task_id.get() is None:
        raise TypeError("exit_actor() can only be called in a method of an actor")
    raise ActorExitRequest


def get_gpu_ids() -> list[int] | list[str]:
    """The GPUs this task or actor may use (as ``CUDA_VISIBLE_DEVICES`` names
    them); [] in a driver or a task without GPUs."""
    executor = _context.current().executor
    if executor is None:
        return []
    return executor.devices.gpu_ids()


def get_runtime_context() -> RuntimeContext:
    worker = _context.current_or_none()
    if worker is None:
        raise RuntimeNotInitializedError(
            "the runtime is not initialized: call runtime.init() first"
        )
    return RuntimeContext(
        job=worker.job_id,
        node=worker.node_id.hex(),
        worker_id=worker.worker_id.hex(),
        namespace=worker.namespace,
        gcs_address=f"{worker.gcs_address[0]}:{worker.gcs_address[1]}",
        session_dir=_context.session_dir(),
        mode=worker.mode.value,
    )
