"""runtime.util.progress: a tqdm bar that advances as refs complete."""

from __future__ import annotations

import io
import os
from typing import Any

import pytest

import runtime
from runtime.util.progress import track, track_async

pytestmark = pytest.mark.timeout(60)


@runtime.remote
def slow(i: int, path: str) -> int:
    import time

    if i == 0:  # the first one waits for the others: completion order, not submission
        while not os.path.exists(path):
            time.sleep(0.01)
    return i


@runtime.remote(max_retries=0)
def broken() -> None:
    raise ValueError("no")


def test_track_yields_in_completion_order(cluster: Any, tmp_path: Any) -> None:
    gate = tmp_path / "gate"
    refs = [slow.remote(i, str(gate)) for i in range(6)]
    out = io.StringIO()
    seen = []
    for ref in track(refs, desc="squares", file=out, mininterval=0):
        seen.append(runtime.get(ref))
        if len(seen) == 5:
            gate.touch()  # only now can the first one finish
    assert sorted(seen) == list(range(6)) and seen[-1] == 0
    text = out.getvalue()
    assert "squares" in text and "6/6" in text
    with pytest.raises(TypeError, match="ObjectRefs"):
        list(track([1, 2], file=out))  # type: ignore[list-item]


async def test_track_async_on_the_runtimes_loop() -> None:
    await runtime.init_async(num_cpus=2)
    try:
        refs = [broken.remote(), *[slow.remote(i, "/") for i in range(1, 4)]]
        out = io.StringIO()
        got = [ref async for ref in track_async(refs, file=out, mininterval=0)]
        assert set(got) == set(refs) and "4/4" in out.getvalue()
        with pytest.raises(ValueError):
            await refs[0]
        with pytest.raises(runtime.exceptions.BlockingCallOnLoopError, match="track_async"):
            next(track(refs, file=out))
    finally:
        await runtime.shutdown_async()
