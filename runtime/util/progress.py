"""A progress bar over many refs: ``for ref in track(refs): ...``.

The bar (tqdm's; in a notebook, its widget when ipywidgets is there) advances
as each ref's task finishes, and each ref is yielded as it does, in the order
they finish: ``runtime.get(ref)`` on it then returns at once (or raises the
task's error). ``track_async`` is the same for ``async for`` on an event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

from .. import api
from ..core_worker import check_blocking_allowed


def _refs(refs: Iterable[api.ObjectRef[Any]], call: str) -> list[api.ObjectRef[Any]]:
    listed = list(refs)
    for ref in listed:
        if not isinstance(ref, api.ObjectRef):
            raise TypeError(f"{call} takes ObjectRefs, got {type(ref).__name__}")
    return listed


def track(
    refs: Iterable[api.ObjectRef[Any]], desc: str | None = None, **tqdm_options: Any
) -> Iterator[api.ObjectRef[Any]]:
    """Yields each ref as its object is ready, advancing a progress bar."""
    listed = _refs(refs, "track()")
    check_blocking_allowed(
        "util.progress.track", "async for ... in track_async(refs)", api.runtime_loop()
    )
    futures = {ref.future(): ref for ref in listed}
    with tqdm(total=len(listed), desc=desc, **tqdm_options) as bar:
        for done in concurrent.futures.as_completed(futures):
            bar.update(1)
            yield futures[done]


async def track_async(
    refs: Iterable[api.ObjectRef[Any]], desc: str | None = None, **tqdm_options: Any
) -> AsyncIterator[api.ObjectRef[Any]]:
    """``track`` for ``async for``: the bar advances as refs finish, on this loop."""
    listed = _refs(refs, "track_async()")

    async def ready(ref: api.ObjectRef[Any]) -> api.ObjectRef[Any]:
        try:
            await ref
        except Exception:
            pass  # the task's error is the caller's to read, from the ref
        return ref

    with tqdm(total=len(listed), desc=desc, **tqdm_options) as bar:
        for next_done in asyncio.as_completed([ready(ref) for ref in listed]):
            ref = await next_done
            bar.update(1)
            yield ref
