"""Results as they finish: Ray's ``ray.util.as_completed`` and ``map_unordered``.

``as_completed`` waits for ``chunk_size`` of the refs at a time and yields
their values (or the refs themselves, ``yield_obj_refs=True``) before the
rest are done: not the order of the list, nor exactly the order they
finished (a chunk comes in the list's order). ``map_unordered`` submits
``fn.remote(item)`` per item, keeping at most ``backpressure_size`` in
flight. Other keyword arguments go to ``wait`` (``timeout``, ``fetch_local``).
The ``*_async`` forms do the same with ``await`` on the caller's loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any

from .. import api

DEFAULT_CHUNK_SIZE = 10
DEFAULT_BACKPRESSURE_SIZE = 100


def as_completed(
    refs: Sequence[api.ObjectRef],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    yield_obj_refs: bool = False,
    **wait_options: Any,
) -> Iterator[Any]:
    """Yields the refs' values (or refs) a chunk at a time, as chunks are ready."""
    _check_chunk(chunk_size, wait_options)
    return _as_completed(list(refs), chunk_size, yield_obj_refs, wait_options)


def _chunk(
    refs: list[api.ObjectRef], chunk: int, yield_refs: bool, wait_options: dict[str, Any]
) -> tuple[list[Any], list[api.ObjectRef]]:
    """The next chunk's values (or refs), and the refs not ready yet."""
    ready, rest = api.wait(refs, num_returns=min(chunk, len(refs)), **wait_options)
    return (ready if yield_refs else api.get(ready)), rest


async def _chunk_async(
    refs: list[api.ObjectRef], chunk: int, yield_refs: bool, wait_options: dict[str, Any]
) -> tuple[list[Any], list[api.ObjectRef]]:
    ready, rest = await api.wait_async(refs, num_returns=min(chunk, len(refs)), **wait_options)
    return (ready if yield_refs else await api.get_async(ready)), rest


def _as_completed(
    refs: list[api.ObjectRef], chunk: int, yield_refs: bool, wait_options: dict[str, Any]
) -> Iterator[Any]:
    while refs:
        values, refs = _chunk(refs, chunk, yield_refs, wait_options)
        yield from values


def map_unordered(
    fn: Any,
    items: Iterable[Any],
    *,
    backpressure_size: int | None = DEFAULT_BACKPRESSURE_SIZE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    yield_obj_refs: bool = False,
    **wait_options: Any,
) -> Iterator[Any]:
    """``fn.remote(item)`` for each item, its results as they finish; at most
    ``backpressure_size`` tasks in flight (None: no limit)."""
    _check_map(fn, backpressure_size, chunk_size, wait_options)
    return _map_unordered(fn, items, backpressure_size, chunk_size, yield_obj_refs, wait_options)


def _map_unordered(
    fn: Any,
    items: Iterable[Any],
    limit: int | None,
    chunk: int,
    yield_refs: bool,
    wait_options: dict[str, Any],
) -> Iterator[Any]:
    refs: list[api.ObjectRef] = []
    for item in items:
        refs.append(fn.remote(item))
        if limit is not None and len(refs) >= limit:
            values, refs = _chunk(refs, chunk, yield_refs, wait_options)
            yield from values
    yield from _as_completed(refs, chunk, yield_refs, wait_options)


def as_completed_async(
    refs: Sequence[api.ObjectRef],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    yield_obj_refs: bool = False,
    **wait_options: Any,
) -> AsyncIterator[Any]:
    """:func:`as_completed` with ``async for``."""
    _check_chunk(chunk_size, wait_options)
    return _as_completed_async(list(refs), chunk_size, yield_obj_refs, wait_options)


async def _as_completed_async(
    refs: list[api.ObjectRef], chunk: int, yield_refs: bool, wait_options: dict[str, Any]
) -> AsyncIterator[Any]:
    while refs:
        values, refs = await _chunk_async(refs, chunk, yield_refs, wait_options)
        for value in values:
            yield value


def map_unordered_async(
    fn: Any,
    items: Iterable[Any],
    *,
    backpressure_size: int | None = DEFAULT_BACKPRESSURE_SIZE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    yield_obj_refs: bool = False,
    **wait_options: Any,
) -> AsyncIterator[Any]:
    """:func:`map_unordered` with ``async for``."""
    _check_map(fn, backpressure_size, chunk_size, wait_options)
    return _map_unordered_async(
        fn, items, backpressure_size, chunk_size, yield_obj_refs, wait_options
    )


async def _map_unordered_async(
    fn: Any,
    items: Iterable[Any],
    limit: int | None,
    chunk: int,
    yield_refs: bool,
    wait_options: dict[str, Any],
) -> AsyncIterator[Any]:
    refs: list[api.ObjectRef] = []
    for item in items:
        refs.append(fn.remote(item))
        if limit is not None and len(refs) >= limit:
            values, refs = await _chunk_async(refs, chunk, yield_refs, wait_options)
            for value in values:
                yield value
    async for value in _as_completed_async(refs, chunk, yield_refs, wait_options):
        yield value


#: What ``wait`` takes besides the refs and ``num_returns``.
_WAIT_OPTIONS = ("timeout", "fetch_local")


def _check_chunk(chunk_size: Any, wait_options: dict[str, Any]) -> None:
    unknown = sorted(set(wait_options) - set(_WAIT_OPTIONS))
    if unknown:
        raise TypeError(
            f"unexpected keyword argument(s) {', '.join(unknown)}: the options passed on "
            f"to wait() are {', '.join(_WAIT_OPTIONS)}"
        )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f"chunk_size must be an int, got {type(chunk_size).__name__}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def _check_map(
    fn: Any, backpressure_size: Any, chunk_size: Any, wait_options: dict[str, Any]
) -> None:
    if not callable(getattr(fn, "remote", None)):
        raise TypeError(f"map_unordered needs a remote function, got {fn!r}")
    _check_chunk(chunk_size, wait_options)
    if backpressure_size is not None and (
        isinstance(backpressure_size, bool)
        or not isinstance(backpressure_size, int)
        or backpressure_size < 1
    ):
        raise ValueError(
            f"backpressure_size must be None or an int >= 1, got {backpressure_size!r}"
        )
