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


TQDM_RAY_DRIVER = """
import runtime
from runtime.experimental.tqdm_ray import tqdm

runtime.init(num_cpus=2)

@runtime.remote
def count(n):
    for _ in tqdm(range(n), desc="counting", flush_interval_s=0):
        pass
    print("a line among the bars")
    return n

@runtime.remote
class Worker:
    def run(self):
        with tqdm(total=3, desc="by hand") as bar:
            bar.update(2)
            bar.update(1)
        return bar.n

print(runtime.get(count.remote(5)), runtime.get(Worker.remote().run.remote()))
for _ in tqdm(range(2), desc="in the driver"):  # a plain bar here
    pass
runtime.shutdown()
"""


def test_tqdm_ray_bars_of_tasks_are_drawn_by_the_driver() -> None:
    from conftest import run_driver

    from runtime._private.progress_lines import MAGIC

    done = run_driver(TQDM_RAY_DRIVER)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "5 3" in done.stdout
    assert "a line among the bars" in done.stdout + done.stderr
    # The workers' state lines became bars: none is printed as a line.
    assert MAGIC not in done.stdout and MAGIC not in done.stderr
    assert "counting (count pid=" in done.stderr and "5/5" in done.stderr
    assert "by hand (Worker" in done.stderr and "3/3" in done.stderr
    assert "in the driver" in done.stderr and "2/2" in done.stderr
