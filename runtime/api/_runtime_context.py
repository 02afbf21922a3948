"""``get_runtime_context()``: what a driver or task can learn about where it runs."""

from __future__ import annotations

from dataclasses import dataclass

from ..core_worker import current_task_id
from ..exceptions import RuntimeNotInitializedError
from . import _context


@dataclass(frozen=True)
class RuntimeContext:
    """What a driver or task can learn about where it runs."""

    job_id: int
    node_id: str
    worker_id: str
    namespace: str
    gcs_address: str
    session_dir: str | None
    mode: str

    def get_job_id(self) -> str:
        return f"{self.job_id:08x}"

    def get_node_id(self) -> str:
        return self.node_id

    def get_worker_id(self) -> str:
        return self.worker_id

    def get_task_id(self) -> str | None:
        task_id = current_task_id.get()
        return task_id.hex() if task_id is not None else None

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
        job_id=worker.job_id,
        node_id=worker.node_id.hex(),
        worker_id=worker.worker_id.hex(),
        namespace=worker.namespace,
        gcs_address=f"{worker.gcs_address[0]}:{worker.gcs_address[1]}",
        session_dir=_context.session_dir(),
        mode=worker.mode.value,
    )
