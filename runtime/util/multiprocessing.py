"""``Pool``: the standard library's ``multiprocessing.Pool`` over actors, so
code written for it scales out by changing one import (as Ray's
``ray.util.multiprocessing``).

Each of the pool's processes is an actor (one CPU each unless told), started
with the pool and running ``initializer(*initargs)`` first. Work is cut into
chunks (the standard library's default size) and dealt round-robin; each
actor runs its chunks in order. Results and errors come back as the
standard library's: ``map`` returns a list, ``imap`` an iterator,
``apply_async`` an :class:`AsyncResult`, a ``get`` past its ``timeout``
raises ``multiprocessing.TimeoutError``, and a function's exception is
raised from ``get`` (an instance of the function's exception class).
"""

from __future__ import annotations

import enum
import itertools
import multiprocessing
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .. import api
from ..exceptions import GetTimeoutError

# Ray's module names these too, so that its users import them from here.
TimeoutError = multiprocessing.TimeoutError
JoinableQueue = multiprocessing.JoinableQueue

__all__ = ["AsyncResult", "JoinableQueue", "Pool", "TimeoutError"]


class _Process:
    def __init__(self, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]) -> None:
        if initializer is not None:
            initializer(*initargs)

    def run(self, func: Callable[..., Any], chunk: list[Any], star: bool) -> list[Any]:
        return [func(*args) if star else func(args) for args in chunk]


_PoolProcess: Any = api.remote(_Process)

#: Submitted chunks remembered (for join) before the finished ones are dropped.
_PRUNE_AT = 1024


class _State(enum.Enum):
    RUNNING = "RUNNING"
    CLOSED = "CLOSED"  # no new work; what was submitted finishes
    TERMINATED = "TERMINATED"  # the actors are gone


class AsyncResult:
    """The result of ``apply_async`` / ``map_async``, as ``multiprocessing``'s."""

    def __init__(
        self,
        refs: list[Any],
        assemble: Callable[[list[Any]], Any],
        callback: Callable[[Any], None] | None = None,
        error_callback: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._refs = refs
        self._assemble = assemble
        self._callbacks: threading.Thread | None = None
        if callback is not None or error_callback is not None:
            # As the standard library: callbacks run on a thread of the pool's,
            # and before get() or wait() return.
            self._callbacks = threading.Thread(
                target=self._call_back, args=(callback, error_callback), daemon=True
            )
            self._callbacks.start()

    def get(self, timeout: float | None = None) -> Any:
        try:
            value = self._assemble(api.get(self._refs, timeout=timeout))
        except GetTimeoutError as e:
            raise multiprocessing.TimeoutError(str(e)) from e
        finally:
            self._after_callbacks()
        return value

    def wait(self, timeout: float | None = None) -> None:
        api.wait(self._refs, num_returns=len(self._refs), timeout=timeout)
        self._after_callbacks()

    def _after_callbacks(self) -> None:
        thread = self._callbacks
        if thread is not None and thread is not threading.current_thread() and self.ready():
            thread.join()

    def ready(self) -> bool:
        ready, _ = api.wait(self._refs, num_returns=len(self._refs), timeout=0)
        return len(ready) == len(self._refs)

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError("the result is not ready")
        try:
            self.get()
        except Exception:
            return False
        return True

    def _call_back(
        self,
        callback: Callable[[Any], None] | None,
        error_callback: Callable[[BaseException], None] | None,
    ) -> None:
        try:
            value = self.get()
        except Exception as e:
            if error_callback is not None:
                error_callback(e)
            return
        if callback is not None:
            callback(value)


class Pool:
    """``multiprocessing.Pool(processes, initializer, initargs)`` over actors.

    ``processes`` defaults to the cluster's CPUs; ``remote_args`` are the
    options of each process's actor (``{"num_cpus": 2}``, a strategy, ...).
    ``maxtasksperchild`` and ``context`` are accepted for compatibility and
    have no effect (an actor keeps its process).
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        remote_args: dict[str, Any] | None = None,
    ) -> None:
        if processes is None:
            processes = max(1, int(api.cluster_resources().get("CPU", 1)))
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ValueError(f"Pool(processes=...) must be an int >= 1, got {processes!r}")
        if initializer is not None and not callable(initializer):
            raise TypeError("Pool(initializer=...) must be callable")
        options = {"num_cpus": 1, **(remote_args or {})}
        self._actors = [
            _PoolProcess.options(**options).remote(initializer, tuple(initargs))
            for _ in range(processes)
        ]
        self._next = itertools.cycle(range(processes))
        self._state = _State.RUNNING
        self._outstanding: list[Any] = []

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    # -- one call ----------------------------------------------------------------------
    def apply(self, func: Callable[..., Any], args: Iterable[Any] = (), kwds: Any = None) -> Any:
        return self.apply_async(func, args, kwds).get()

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: dict[str, Any] | None = None,
        callback: Callable[[Any], None] | None = None,
        error_callback: Callable[[BaseException], None] | None = None,
    ) -> AsyncResult:
        self._check_running()
        call = _Call(func, tuple(args), dict(kwds or {}))
        refs = [self._submit(call, [()], star=True)]
        return AsyncResult(refs, lambda chunks: chunks[0][0], callback, error_callback)

    # -- many calls ---------------------------------------------------------------------
    def map(
        self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int | None = None
    ) -> list[Any]:
        return self.map_async(func, iterable, chunksize).get()

    def map_async(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callable[[Any], None] | None = None,
        error_callback: Callable[[BaseException], None] | None = None,
    ) -> AsyncResult:
        refs = self._submit_chunks(func, iterable, chunksize, star=False)
        return AsyncResult(refs, _concat, callback, error_callback)

    def starmap(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
    ) -> list[Any]:
        return self.starmap_async(func, iterable, chunksize).get()

    def starmap_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[Any], None] | None = None,
        error_callback: Callable[[BaseException], None] | None = None,
    ) -> AsyncResult:
        items = [tuple(args) for args in iterable]
        refs = self._submit_chunks(func, items, chunksize, star=True)
        return AsyncResult(refs, _concat, callback, error_callback)

    def imap(
        self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int = 1
    ) -> Iterator[Any]:
        """Results in order, each as soon as it and those before it are done."""
        refs = self._submit_chunks(func, iterable, chunksize, star=False)
        return (value for ref in refs for value in api.get(ref))

    def imap_unordered(
        self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int = 1
    ) -> Iterator[Any]:
        """Results as their chunks finish, in no set order."""
        refs = self._submit_chunks(func, iterable, chunksize, star=False)

        def results() -> Iterator[Any]:
            pending = list(refs)
            while pending:
                ready, pending = api.wait(pending, num_returns=1)
                yield from api.get(ready[0])

        return results()

    # -- the pool's life ------------------------------------------------------------------
    def close(self) -> None:
        """No more work is accepted; what was submitted finishes."""
        if self._state is _State.RUNNING:
            self._state = _State.CLOSED

    def terminate(self) -> None:
        """Stops the processes at once; unfinished work is lost."""
        if self._state is _State.TERMINATED:
            return
        self._state = _State.TERMINATED
        for actor in self._actors:
            api.kill(actor)
        self._outstanding = []

    def join(self) -> None:
        """Waits for the submitted work (after ``close`` or ``terminate``)."""
        if self._state is _State.RUNNING:
            raise ValueError("the pool is still running: close() or terminate() it first")
        if self._state is _State.CLOSED and self._outstanding:
            api.wait(self._outstanding, num_returns=len(self._outstanding))

    # -- internals --------------------------------------------------------------------------
    def _check_running(self) -> None:
        if self._state is not _State.RUNNING:
            raise ValueError(f"the pool is not running ({self._state.value.lower()})")

    def _submit(self, func: Callable[..., Any], chunk: list[Any], star: bool) -> Any:
        ref = self._actors[next(self._next)].run.remote(func, chunk, star)
        self._outstanding.append(ref)
        if len(self._outstanding) >= _PRUNE_AT:  # forget the finished ones, in one wait
            outstanding = self._outstanding
            _, self._outstanding = api.wait(outstanding, num_returns=len(outstanding), timeout=0)
        return ref

    def _submit_chunks(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None,
        star: bool,
    ) -> list[Any]:
        self._check_running()
        if not callable(func):
            raise TypeError(f"the pool's function must be callable, got {type(func).__name__}")
        items = list(iterable)
        if chunksize is None:
            # The standard library's default: about four chunks per process.
            chunksize, extra = divmod(len(items), len(self._actors) * 4)
            chunksize += 1 if extra else 0
        if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
            if items:
                raise ValueError(f"chunksize must be an int >= 1, got {chunksize!r}")
            chunksize = 1
        return [
            self._submit(func, items[i : i + chunksize], star)
            for i in range(0, len(items), chunksize)
        ]


class _Call:
    """``func(*args, **kwds)`` as a one-argument call (what ``apply`` runs)."""

    def __init__(self, func: Callable[..., Any], args: tuple[Any, ...], kwds: dict[str, Any]):
        self.func, self.args, self.kwds = func, args, kwds

    def __call__(self) -> Any:
        return self.func(*self.args, **self.kwds)


def _concat(chunks: list[list[Any]]) -> list[Any]:
    return [value for chunk in chunks for value in chunk]
