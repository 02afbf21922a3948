"""A joblib backend that runs ``Parallel`` batches as tasks (Ray's
``ray.util.joblib``), so scikit-learn and other joblib code spreads over the
cluster by naming a backend::

    from runtime.util.joblib import register_ray
    register_ray()
    with joblib.parallel_backend("ray"):        # or "runtime"
        search.fit(X, y)

Each batch joblib dispatches is one task (one CPU unless ``ray_remote_args``
say otherwise); joblib's own auto-batching sizes the batches. A batch's
exception is raised by ``Parallel`` as the function's own (an instance of
its class). ``n_jobs=-1`` is the cluster's CPU count; the runtime starts as
``init()`` would when it is not running yet. joblib itself is not a
dependency of the runtime: importing this module needs it installed.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

from joblib import register_parallel_backend
from joblib.parallel import AutoBatchingMixin, ParallelBackendBase

from .. import api


def joblib_batch(batch: Callable[[], Any]) -> Any:
    return batch()


_RunBatch: Any = api.remote(joblib_batch)


class RuntimeBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib's backend protocol over tasks (futures from ``ObjectRef.future()``)."""

    supports_retrieve_callback = True
    supports_inner_max_num_threads = False
    uses_threads = False
    supports_sharedmem = False

    def __init__(
        self,
        nesting_level: int | None = None,
        inner_max_num_threads: int | None = None,
        ray_remote_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads, **kwargs
        )
        self._remote_args = dict(ray_remote_args or {})
        self._pending: set[Any] = set()
        self._lock = threading.Lock()  # (joblib calls back from the futures' thread)

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            cpus = int(api.cluster_resources().get("CPU", 1)) if api.is_initialized() else 1
            return max(cpus + 1 + n_jobs, 1)
        return int(n_jobs)

    def configure(
        self,
        n_jobs: int = 1,
        parallel: Any = None,
        prefer: str | None = None,
        require: str | None = None,
        ray_remote_args: dict[str, Any] | None = None,
        **backend_kwargs: Any,
    ) -> int:
        if not api.is_initialized():
            api.init()
        if ray_remote_args is not None:
            self._remote_args = dict(ray_remote_args)
        self._run = _RunBatch.options(**self._remote_args) if self._remote_args else _RunBatch
        self.parallel = parallel
        return self.effective_n_jobs(n_jobs)

    def submit(
        self, func: Callable[[], Any], callback: Callable[[Any], None] | None = None
    ) -> concurrent.futures.Future[Any]:
        ref = self._run.remote(func)
        future = ref.future()
        with self._lock:
            self._pending.add(ref)
        future.add_done_callback(lambda _: self._finished(ref))
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def _finished(self, ref: Any) -> None:
        with self._lock:
            self._pending.discard(ref)

    def retrieve_result_callback(self, future: concurrent.futures.Future[Any]) -> Any:
        return future.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A batch failed: the batches still running are cancelled."""
        with self._lock:
            pending, self._pending = list(self._pending), set()
        for ref in pending:
            api.cancel(ref)


def register_ray() -> None:
    """Registers the backend as ``"ray"`` (Ray's name) and ``"runtime"``."""
    register_parallel_backend("ray", RuntimeBackend)
    register_parallel_backend("runtime", RuntimeBackend)


register_runtime = register_ray

__all__ = ["RuntimeBackend", "register_ray", "register_runtime"]
