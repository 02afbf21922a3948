"""``@runtime.remote`` and ``@runtime.method``."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from . import _options
from ._actor import ActorClass
from ._generator import ObjectRefGenerator
from ._object_ref import ObjectRef
from ._remote_function import RemoteFunction


def _make_remote(target: Any, options: dict[str, Any]) -> Any:
    if inspect.isclass(target):
        return ActorClass(target, options)
    if not callable(target):
        raise TypeError(f"@runtime.remote applies to functions, not {type(target).__name__}")
    return RemoteFunction(target, options)


C = TypeVar("C")
P = ParamSpec("P")
R = TypeVar("R")
Y = TypeVar("Y")


class _Decorator(Protocol):
    """What ``@remote(**options)`` returns, typed as ``remote`` itself is."""

    @overload
    def __call__(self, target: type[C], /) -> ActorClass[C]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, target: Callable[P, Iterator[Y] | AsyncIterator[Y]], /
    ) -> RemoteFunction[P, ObjectRefGenerator[Y]]: ...
    @overload
    def __call__(
        self, target: Callable[P, Coroutine[Any, Any, R]], /
    ) -> RemoteFunction[P, ObjectRef[R]]: ...
    @overload
    def __call__(self, target: Callable[P, R], /) -> RemoteFunction[P, ObjectRef[R]]: ...


@overload
def remote(target: type[C], /) -> ActorClass[C]: ...  # type: ignore[overload-overlap]
@overload
def remote(  # type: ignore[overload-overlap]
    target: Callable[P, Iterator[Y] | AsyncIterator[Y]], /
) -> RemoteFunction[P, ObjectRefGenerator[Y]]: ...
@overload
def remote(target: Callable[P, Coroutine[Any, Any, R]], /) -> RemoteFunction[P, ObjectRef[R]]: ...
@overload
def remote(target: Callable[P, R], /) -> RemoteFunction[P, ObjectRef[R]]: ...
@overload
def remote(**options: Any) -> _Decorator: ...
def remote(*args: Any, **options: Any) -> Any:
    """Makes a function a remote function: ``@remote`` or ``@remote(num_cpus=2, ...)``.

    Typed: ``f.remote(...)`` takes ``f``'s arguments and returns
    ``ObjectRef[R]`` (R awaited for an ``async def``); a class becomes an
    ``ActorClass[C]``, whose ``.remote(...)`` is an ``ActorHandle[C]``.
    """
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError(
            "@runtime.remote takes either no arguments (@runtime.remote) or only keyword "
            "options (@runtime.remote(num_cpus=2))"
        )

    # Checked now, so a bad option fails at the decorator; whether it suits a
    # function or a class is checked when the decorator is applied.
    _options.validate(options, _options.ANY_OPTIONS, "@runtime.remote")

    def decorator(target: Any) -> Any:
        return _make_remote(target, options)

    return decorator


def method(**options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Options for one actor method, such as ``@runtime.method(num_returns=2)``."""
    _options.validate(options, _options.METHOD_OPTIONS, "@runtime.method")

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__runtime_method_options__ = options  # type: ignore[attr-defined]
        return fn

    return decorator
