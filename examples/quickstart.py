"""The quickstart: remote functions, objects, and the same from asyncio.

Run it with ``make demo``: it starts a local cluster with runtime.init(),
runs tasks on it, and stops it.
"""

import asyncio
import time

import runtime


@runtime.remote
def square(x: int) -> int:
    return x * x


@runtime.remote
def add(a: int, b: int) -> int:
    return a + b


@runtime.remote
async def fetch(i: int) -> str:
    await asyncio.sleep(0.1)  # runs on the worker's event loop
    return f"page {i}"


@runtime.remote
def fib(n: int) -> int:
    # Tasks may submit tasks and wait for them.
    if n < 2:
        return n
    return sum(runtime.get([fib.remote(n - 1), fib.remote(n - 2)]))


def sync_part() -> None:
    start = time.perf_counter()
    refs = [square.remote(i) for i in range(100)]
    print("sum of squares:", sum(runtime.get(refs)))
    print(f"100 tasks in {time.perf_counter() - start:.3f}s")

    big = runtime.put(list(range(1000)))
    print("len via a task:", runtime.get(add.remote(runtime.get(big)[-1], 1)))

    ready, not_ready = runtime.wait([square.remote(i) for i in range(10)], num_returns=5)
    print(f"wait: {len(ready)} ready, {len(not_ready)} not yet")
    print("fib(6) by nested tasks:", runtime.get(fib.remote(6)))

    try:
        runtime.get(add.remote(1, "two"))  # type: ignore[arg-type]  # wrong on purpose
    except TypeError as e:  # the remote TypeError, with its traceback
        print("a task failed as expected:", str(e).splitlines()[0])


async def async_part() -> None:
    # Refs are awaitable and work with asyncio's own helpers.
    refs = [fetch.remote(i) for i in range(20)]
    start = time.perf_counter()
    pages = await asyncio.gather(*refs)
    print(f"asyncio.gather of {len(pages)} async tasks in {time.perf_counter() - start:.2f}s")
    # Refs are asyncio futures at run time; typeshed's wait() names Future itself.
    done, _ = await asyncio.wait([square.remote(i) for i in range(10)])  # type: ignore[type-var]
    print("asyncio.wait:", sorted([ref.result() for ref in done]))


def main() -> None:
    runtime.init()
    print("cluster resources:", runtime.cluster_resources())
    sync_part()
    runtime.shutdown()

    async def run_async() -> None:
        await runtime.init_async()  # attaches to this loop: no extra thread
        try:
            await async_part()
        finally:
            await runtime.shutdown_async()

    asyncio.run(run_async())
    print("done")


if __name__ == "__main__":
    main()
