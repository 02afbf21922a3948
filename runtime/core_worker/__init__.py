"""The core worker: ownership, reference counting, submission and execution."""

from ._core_worker import CoreWorker, WorkerMode

__all__ = ["CoreWorker", "WorkerMode"]
