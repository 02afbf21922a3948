"""``ActorPool``: spread work over a fixed set of actors (Ray's ``ray.util.ActorPool``).

Each submitted call goes to an idle actor, or waits until one is free.
Results come back in submission order (``get_next``) or as they finish
(``get_next_unordered``); taking a result frees its actor for the next
waiting call. The ``*_async`` forms do the same with ``await`` on the
caller's event loop.

Invariants: an actor is either idle (``_idle``) or running exactly one call
(``_running``); a submitted call is pending (``_pending``) only while no
actor is idle; ``_by_index`` holds the calls not yet returned, by their
submission index.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from .. import api
from ..exceptions import GetTimeoutError

#: ``fn(actor, value)`` submits one call and returns its ref (or a list of refs).
Submit = Callable[[Any, Any], Any]


def _key(ref: Any) -> Any:
    return tuple(ref) if isinstance(ref, list) else ref


class ActorPool:
    def __init__(self, actors: Iterable[Any]) -> None:
        self._idle: list[Any] = list(actors)
        # ref key -> (submission index, the actor running it)
        self._running: dict[Any, tuple[int, Any]] = {}
        self._by_index: dict[int, Any] = {}
        self._next_index = 0  # of the next submission
        self._next_return = 0  # of the next result get_next returns
        self._pending: deque[tuple[Submit, Any]] = deque()

    # -- submitting ---------------------------------------------------------------
    def submit(self, fn: Submit, value: Any) -> None:
        """Runs ``fn(actor, value)`` on an idle actor, or once one is free."""
        if not self._idle:
            self._pending.append((fn, value))
            return
        actor = self._idle.pop()
        ref = fn(actor, value)
        self._running[_key(ref)] = (self._next_index, actor)
        self._by_index[self._next_index] = ref
        self._next_index += 1

    def map(self, fn: Submit, values: Iterable[Any]) -> Iterator[Any]:
        """Results of ``fn`` over ``values``, in order (results not taken from
        earlier submissions are dropped first, as in Ray)."""
        self._submit_all(fn, values)
        return self._results(self.get_next)

    def map_unordered(self, fn: Submit, values: Iterable[Any]) -> Iterator[Any]:
        """Results of ``fn`` over ``values``, as they finish."""
        self._submit_all(fn, values)
        return self._results(self.get_next_unordered)

    def _results(self, take: Callable[[], Any]) -> Iterator[Any]:
        while self.has_next():
            yield take()

    def _submit_all(self, fn: Submit, values: Iterable[Any]) -> None:
        self._drop_results()
        for value in values:
            self.submit(fn, value)

    def _drop_results(self) -> None:
        while self.has_next():
            try:
                self.get_next(timeout=0, ignore_if_timedout=True)
            except TimeoutError:
                pass

    # -- taking results -------------------------------------------------------------
    def has_next(self) -> bool:
        """Whether any submitted call's result is still to be taken."""
        return bool(self._running)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The next result in submission order; TimeoutError if it is not ready in
        ``timeout`` seconds (with ``ignore_if_timedout``, the call is dropped)."""
        ref = self._ordered_next()
        if timeout is not None:
            ready, _ = api.wait(_as_list(ref), num_returns=len(_as_list(ref)), timeout=timeout)
            if len(ready) < len(_as_list(ref)):
                if ignore_if_timedout:
                    self._taken(self._next_return, ref)
                    raise TimeoutError(f"timed out waiting for a result; {ref} is dropped")
                raise TimeoutError("timed out waiting for a result")
        self._taken(self._next_return, ref)
        return api.get(ref)

    def get_next_unordered(
        self, timeout: float | None = None, ignore_if_timedout: bool = False
    ) -> Any:
        """The result that finishes next, whatever its order."""
        if not self.has_next():
            raise StopIteration("no more results to get")
        ready, _ = api.wait(_flat(self._running), num_returns=1, timeout=timeout)
        return api.get(self._take_first(ready))

    async def get_next_async(self, timeout: float | None = None) -> Any:
        """``get_next`` for an event loop: the next result in submission order."""
        ref = self._ordered_next()
        try:
            value = await api.get_async(ref, timeout=timeout)
        except GetTimeoutError as e:
            raise TimeoutError("timed out waiting for a result") from e
        except BaseException:
            self._taken(self._next_return, ref)
            raise
        self._taken(self._next_return, ref)
        return value

    async def get_next_unordered_async(self, timeout: float | None = None) -> Any:
        """``get_next_unordered`` for an event loop."""
        if not self.has_next():
            raise StopIteration("no more results to get")
        ready, _ = await api.wait_async(_flat(self._running), num_returns=1, timeout=timeout)
        return await api.get_async(self._take_first(ready))

    async def map_async(self, fn: Submit, values: Iterable[Any]) -> AsyncIterator[Any]:
        """``async for`` over ``fn``'s results in order."""
        self._submit_all(fn, values)
        while self.has_next():
            yield await self.get_next_async()

    async def map_unordered_async(self, fn: Submit, values: Iterable[Any]) -> AsyncIterator[Any]:
        """``async for`` over ``fn``'s results as they finish."""
        self._submit_all(fn, values)
        while self.has_next():
            yield await self.get_next_unordered_async()

    def _ordered_next(self) -> Any:
        if not self.has_next():
            raise StopIteration("no more results to get")
        if self._next_return not in self._by_index:
            raise ValueError("get_next() cannot be called after get_next_unordered()")
        return self._by_index[self._next_return]

    def _take_first(self, ready: list[Any]) -> Any:
        """The call whose ref finished first (ready[0]) is taken; its ref(s)."""
        if not ready:
            raise TimeoutError("timed out waiting for a result")
        index, _ = self._running[self._key_holding(ready[0])]
        ref = self._by_index[index]
        self._taken(index, ref)
        return ref

    def _key_holding(self, ref: Any) -> Any:
        for key in self._running:
            if key == ref or (isinstance(key, tuple) and ref in key):
                return key
        raise KeyError(ref)

    def _taken(self, index: int, ref: Any) -> None:
        """A call's result is taken (or dropped): its actor takes the next call."""
        del self._by_index[index]
        _, actor = self._running.pop(_key(ref))
        self._next_return = max(self._next_return, index + 1)
        self._return(actor)

    def _return(self, actor: Any) -> None:
        self._idle.append(actor)
        if self._pending:
            self.submit(*self._pending.popleft())

    # -- the actors -------------------------------------------------------------------
    def has_free(self) -> bool:
        """Whether an actor is idle and no submission waits for one."""
        return bool(self._idle) and not self._pending

    def pop_idle(self) -> Any | None:
        """Takes an idle actor out of the pool (None if none is free)."""
        return self._idle.pop() if self.has_free() else None

    def push(self, actor: Any) -> None:
        """Adds an actor to the pool (it takes a waiting submission at once)."""
        busy = [a for _, a in self._running.values()]
        if actor in self._idle or actor in busy:
            raise ValueError("the actor already belongs to this ActorPool")
        self._return(actor)


def _as_list(ref: Any) -> list[Any]:
    return list(ref) if isinstance(ref, list) else [ref]


def _flat(running: dict[Any, Any]) -> list[Any]:
    out: list[Any] = []
    for key in running:
        out.extend(key if isinstance(key, tuple) else [key])
    return out
