"""What a job shares through the gcs's key-value store.

- Definitions: a remote function's or actor class's pickled definition is put
  once per process under its id (namespace ``fn``); workers fetch it by id.
- The job record (namespace ``job``): the driver's import path and namespace,
  which its workers adopt, so they import what the driver can.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from .. import exceptions
from .._private import job_logging
from ..protocol.rt import KvGetRequest, KvPutRequest
from ._running import logging_context

if TYPE_CHECKING:
    from ._core_worker import CoreWorker

FUNCTION_NAMESPACE = "fn"
JOB_NAMESPACE = "job"


class Exports:
    def __init__(self, worker: CoreWorker) -> None:
        self._worker = worker
        # One export per definition id, started on first use (invariant: never removed).
        self._exports: dict[bytes, asyncio.Future[None]] = {}

    def ensure(self, function_id: bytes, data: bytes) -> None:
        """On the loop: starts the definition's export, unless it was started."""
        if function_id not in self._exports:
            self._exports[function_id] = self._worker.background.spawn(
                self._export(function_id, data)
            )

    def done(self, function_id: bytes) -> bool:
        """Whether the definition is exported (and the export did not fail)."""
        export = self._exports.get(function_id)
        return export is not None and export.done() and export.exception() is None

    async def wait(self, function_id: bytes) -> None:
        """Waits for an export started by :meth:`ensure`; raises its error."""
        await asyncio.shield(self._exports[function_id])

    async def _export(self, function_id: bytes, data: bytes) -> None:
        await self._worker.wait_started()
        await self._worker.gcs.kv_put(
            KvPutRequest(namespace=FUNCTION_NAMESPACE, key=function_id, value=data, overwrite=False)
        )

    async def fetch(self, function_id: bytes) -> bytes:
        """A definition by id (in a worker, to run it)."""
        reply = await self._worker.gcs.kv_get(
            KvGetRequest(namespace=FUNCTION_NAMESPACE, key=function_id)
        )
        if not reply.found:
            raise exceptions.RaySystemError(f"function {function_id.hex()} is not registered")
        return reply.value

    # -- the job record ------------------------------------------------------------
    async def publish_job(self, job_id: int, namespace: str) -> None:
        """The driver's: its import path, namespace and actors' default lifetime,
        for its workers."""
        record = {
            "sys_path": _importable_paths(),
            "namespace": namespace,
            "default_actor_lifetime": self._worker.default_actor_lifetime,
            "logging_config": self._worker.job_logging,
        }
        await self._worker.gcs.kv_put(
            KvPutRequest(
                namespace=JOB_NAMESPACE,
                key=str(job_id).encode(),
                value=json.dumps(record).encode(),
                overwrite=True,
            )
        )

    async def adopt_job(self, job_id: int) -> str:
        """A worker's: imports what the job's driver can, takes its actors'
        default lifetime; returns the job's namespace."""
        reply = await self._worker.gcs.kv_get(
            KvGetRequest(namespace=JOB_NAMESPACE, key=str(job_id).encode())
        )
        if not reply.found:
            return ""
        job = json.loads(reply.value)
        paths = job.get("sys_path", [])
        sys.path[:0] = [p for p in paths if p not in sys.path]
        # Its runtime environment's folders stay first (working_dir, py_modules).
        own = [p for p in os.environ.get("RUNTIME_WORKER_PATHS", "").split(os.pathsep) if p]
        sys.path[:] = own + [p for p in sys.path if p not in own]
        if isinstance(job.get("logging_config"), dict):
            self._apply_logging(job["logging_config"])
        if job.get("default_actor_lifetime") == "detached":
            self._worker.default_actor_lifetime = "detached"
        namespace: str = job.get("namespace", "")
        return namespace

    def _apply_logging(self, sent: dict[str, Any]) -> None:
        """The job's LoggingConfig, set up in this worker (before its first task)."""
        try:
            config = job_logging.check(
                sent.get("encoding"),
                sent.get("log_level"),
                sent.get("additional_log_standard_attrs", []),
            )
        except (TypeError, ValueError) as e:  # (the driver checked it: not expected)
            logging.getLogger(__name__).warning("the job's logging_config is ignored: %s", e)
            return
        self._worker.job_logging = config
        job_logging.drop_default_handlers()
        job_logging.configure(config, lambda: logging_context(self._worker))


def _importable_paths() -> list[str]:
    """The driver's import path, so its workers find the same modules."""
    paths = [os.getcwd() if p == "" else p for p in sys.path]
    return [p for p in paths if os.path.isdir(p)]
