"""What type checkers see of the API (checked by test_typing.py under mypy --strict)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import assert_type

import runtime
from runtime import ActorClass, ActorHandle, ObjectRef, ObjectRefGenerator


@runtime.remote
def add(a: int, b: int) -> int:
    return a + b


@runtime.remote(num_cpus=2)
async def fetch(url: str) -> bytes:
    return url.encode()


@runtime.remote
def numbers(n: int) -> Iterator[int]:
    yield from range(n)


@runtime.remote
async def words(n: int) -> AsyncIterator[str]:
    for i in range(n):
        yield str(i)


class Counter:
    def __init__(self, start: int) -> None:
        self.n = start

    def incr(self) -> int:
        self.n += 1
        return self.n


# Wrapped, not decorated: type checkers do not apply class decorators.
CounterActor = runtime.remote(Counter)


def calls() -> None:
    ref = add.remote(1, 2)
    assert_type(ref, ObjectRef[int])
    assert_type(runtime.get(ref), int)
    assert_type(runtime.get([ref, add.remote(3, 4)]), list[int])
    assert_type(add.options(num_cpus=1).remote(1, 2), ObjectRef[int])
    assert_type(fetch.remote("x"), ObjectRef[bytes])
    assert_type(runtime.put("text"), ObjectRef[str])
    assert_type(numbers.remote(3), ObjectRefGenerator[int])
    assert_type(words.remote(3), ObjectRefGenerator[str])
    for item in numbers.remote(2):
        assert_type(item, ObjectRef[int])
    assert_type(CounterActor, ActorClass[Counter])
    counter = CounterActor.remote(0)
    assert_type(counter, ActorHandle[Counter])
    # Actor methods go through __getattr__: annotate the ref kept.
    total: ObjectRef[int] = counter.incr.remote()
    assert_type(runtime.get(total), int)


async def awaits() -> None:
    assert_type(await add.remote(1, 2), int)
    assert_type(await runtime.get_async(fetch.remote("x")), bytes)
    async for item in words.remote(2):
        assert_type(await item, str)


def wrong_arguments() -> None:
    add.remote("1", 2)  # type: ignore[arg-type]
    add.remote(1)  # type: ignore[call-arg]
